"""The hand-off benchmark's results as markdown (pure): per queue size and peer the median and the
min-max spread over the repeats, then every run, what each side does, and the machine."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.frontdoor.peers import POSTFIX, RELAY

PEER_ORDER = (RELAY, POSTFIX)


@dataclass(frozen=True)
class Result:
    peer: str
    size: int  # N: messages queued on the sender
    repeat: int
    fill_seconds: float  # N messages over SMTP into the sender (not part of the move)
    applied_seconds: float | None  # clock start → the new settings in force (relay: leaving reported;
    # Postfix: postconf, reload, the new qmgr, postqueue -f returned)
    source_empty_seconds: float  # clock start → the sender's queue seen empty
    receiver_all_seconds: float | None  # clock start → the last entry stored on the receiver (relay)
    moved: int  # the sender's count: relay handedOff, Postfix status=sent log lines
    received: int  # what the receiver holds at the end
    left_on_source: int
    failures: int  # hand-off requests without a 200 (relay)
    duplicates: int  # entries the receiver was offered twice (relay) or holds beyond N (Postfix)
    sender_cpu_seconds: float  # user + system of the sending MTA's processes during the move
    receiver_cpu_seconds: float
    rss_kib: dict[str, int]
    rss_kind: str

    @property
    def rate(self) -> float:
        return self.size / self.source_empty_seconds if self.source_empty_seconds > 0 else 0.0

    @property
    def move_rate(self) -> float:
        """N / the time after the settings were applied: the move alone."""
        if self.applied_seconds is None or self.source_empty_seconds <= self.applied_seconds:
            return 0.0
        return self.size / (self.source_empty_seconds - self.applied_seconds)

    @property
    def complete(self) -> bool:
        return self.moved == self.received == self.size and not self.left_on_source


def _spread(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return format(median, fmt)
    return f"{format(median, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def _group(results: list[Result]) -> list[tuple[int, str, list[Result]]]:
    sizes = sorted({r.size for r in results})
    return [(size, peer, runs) for size in sizes for peer in PEER_ORDER
            if (runs := [r for r in results if (r.size, r.peer) == (size, peer)])]


def summary_table(results: list[Result]) -> list[str]:
    lines = ["| N | peer | runs | **msgs/s** | source empty s | receiver holds all s | settings applied s "
             "| msgs/s after applied | CPU ms/msg (sender + receiver) | memory MiB | all moved |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for size, peer, runs in _group(results):
        def values(get: Callable[[Result], float | None], rs: list[Result] = runs) -> list[float]:
            return [v for r in rs if (v := get(r)) is not None]
        rss = statistics.median([sum(r.rss_kib.values()) for r in runs])
        lines.append(
            f"| {size} | {peer} | {len(runs)} | **{_spread(values(lambda r: r.rate), '.0f')}** "
            f"| {_spread(values(lambda r: r.source_empty_seconds), '.2f')} "
            f"| {_spread(values(lambda r: r.receiver_all_seconds), '.2f')} "
            f"| {_spread(values(lambda r: r.applied_seconds), '.2f')} "
            f"| {_spread(values(lambda r: r.move_rate), '.0f')} "
            f"| {_cpu_median(runs)} | {_mib(int(rss))} "
            f"| {'yes' if all(r.complete for r in runs) else 'NO'} |")
    return lines


def _cpu_median(runs: list[Result]) -> str:
    sender = [1000 * r.sender_cpu_seconds / r.size for r in runs]
    receiver = [1000 * r.receiver_cpu_seconds / r.size for r in runs]
    return f"{statistics.median(sender):.2f} + {statistics.median(receiver):.2f}"


def runs_table(results: list[Result]) -> list[str]:
    lines = ["| N | peer | repeat | fill s | settings applied s | source empty s | msgs/s "
             "| receiver holds all s | moved / received | failures | duplicates | CPU s sender + receiver "
             "| RSS MiB |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in sorted(results, key=lambda r: (r.size, r.repeat, PEER_ORDER.index(r.peer))):
        rss = ", ".join(f"{name} {_mib(kib)}" for name, kib in r.rss_kib.items())
        lines.append(
            f"| {r.size} | {r.peer} | {r.repeat} | {r.fill_seconds:.1f} | {_opt(r.applied_seconds)} "
            f"| {r.source_empty_seconds:.3f} | {r.rate:.0f} | {_opt(r.receiver_all_seconds)} "
            f"| {r.moved} / {r.received} | {r.failures} | {r.duplicates} "
            f"| {r.sender_cpu_seconds:.2f} + {r.receiver_cpu_seconds:.2f} | {rss} |")
    return lines


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# (row, relay, Postfix): what each side does, in the order it happens
WHAT: tuple[tuple[str, str, str], ...] = (
    ("start of the clock",
     "`relay.json` rewritten with `handoff.leaving: [A]` (on A and B: the operator's one ConfigMap reaches "
     "both), then SIGHUP",
     "`postconf -e relayhost=[127.0.0.1]:<receiver>` on the sender"),
    ("settings applied",
     "A's `GET /internal/v1/queue` first says `leaving: true`",
     "SIGHUP to the sender's master (what `postfix reload` does), the new qmgr running, `postqueue -f` "
     "returned"),
    ("how the mail moves",
     "A's delivery process sends each entry with `POST /internal/v1/handoff` over HTTPS (certificate "
     "pinned, kept-alive connections), 4 requests in flight",
     "the sender's qmgr and smtp processes deliver each message by SMTP (plain text on loopback: Postfix's "
     "default `smtp_tls_security_level = none`; connections cached on demand), Postfix's default "
     "concurrency (5 at first, up to 20 per destination)"),
    ("durable on the receiver",
     "B writes the entry into a pre-made spool slot (fdatasync) and, as the entry carries a retry state, "
     "appends that to the entry's outcomes file (fsync), then answers 200",
     "the receiver's cleanup fsyncs the new queue file, then smtpd answers 250"),
    ("removal on the sender",
     "after the 200: the slot is truncated (no sync), the outcomes file unlinked, the front door told",
     "after the 250: the queue file is unlinked"),
    ('end of the clock ("source empty")',
     "A's depth in `GET /internal/v1/queue` is 0 (polled every 20 ms on a kept-alive connection): what "
     "the operator waits for",
     "no file left in the sender's incoming, active, deferred, hold or maildrop directories (polled every "
     "20 ms)"),
    ("receiver holds all",
     "B's log line of the last `handoff_received` (ms precision); then B's depth N is checked",
     "the same as source empty (a file leaves the sender only after the receiver's 250); then the "
     "receiver's deferred count N is checked"),
    ("the receiver afterwards",
     "keeps the entries deferred (its smarthost is a closed port; they carry A's retry state, due in an "
     "hour)",
     "keeps the messages deferred (its relayhost is a closed port)"),
)


def what_table() -> list[str]:
    return ["| | mta-relay (A leaves, B stays) | Postfix (sender evacuated to a receiver) |", "|---|---|---|",
            *(f"| {row} | {relay} | {postfix} |" for row, relay, postfix in WHAT)]


CAVEATS = [
    "Not the same operation: the relay hands its spool entries to a peer of its own cluster over an "
    "authenticated HTTPS API that keeps queue id, acceptance time, pending recipients and retry state; "
    "Postfix relays its mail to another MTA by SMTP, a new delivery (new queue id, a Received header, "
    "retry state reset). It is the nearest equivalent a Postfix operator has.",
    "Both receivers make every message durable (fsync) before they answer, and both keep it deferred; "
    "neither delivers onward during the move. The relay's channel is TLS (HTTPS), Postfix's is plain "
    "SMTP (its default): TLS costs the relay CPU that Postfix does not pay here.",
    "The relay's clock includes its settings reload (the config file, SIGHUP, the delivery process "
    "reconfigured); Postfix's includes postconf, the reload and waiting for the new qmgr (a flush "
    "request taken by the old one would go out to the old relayhost).",
    "Each run starts both MTAs afresh in their own directories; the fill and the wait until every message "
    "was tried once and deferred are outside the clock.",
    "Memory is not the same figure on both sides: the relay's is the sum of the four processes' peak "
    "RSS (VmHWM, reset when the clock starts), Postfix's the largest sum of RSS over all processes of "
    "both instances (sampled; shared pages of its many processes count once per process).",
    "CPU is user + system time of each side's processes (the relay: front door + delivery process; "
    "Postfix: master and its children, Dovecot on the sender) from the start of the clock until the "
    "receiver holds all.",
]


def render(results: list[Result], machine: dict[str, str], bounds: str, notes: list[str]) -> str:
    rss_kinds = dict.fromkeys(f"{r.peer}: {r.rss_kind}" for r in results)
    out = ["# Scale-down hand-off benchmark", "",
           "A sending MTA holds N deferred messages (1 KiB, one recipient each) and moves them all to "
           "another MTA: mta-relay by its hand-off (`handoff.leaving`), Postfix by being pointed at the "
           "other MTA and flushed. Both on the same machine in the same run, interleaved "
           "(`python -m bench.handoff`; bench/README.md). Figures: median (min-max) over the repeats; "
           "msgs/s = N / seconds until the sender's queue is empty.", "",
           f"Bounds: {bounds}.", "", "## Results", "", *summary_table(results), "",
           "## What each side does", "", *what_table(), "", *(f"- {c}" for c in CAVEATS), "",
           "Memory: " + "; ".join(rss_kinds) + ".", "",
           "## Every run", "", *runs_table(results), "",
           "## Machine", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in machine.items()), ""]
    if notes:
        out += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(out)
