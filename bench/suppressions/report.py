"""The results page of the suppression benchmark: a summary beside Postfix (median and min-max spread of
the repeats), then every import run, every RCPT round, memory and the in-process lookups."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from bench.suppressions.run import (
    POSTFIX_EMPTY,
    POSTFIX_FULL,
    RELAY_EMPTY,
    RELAY_FULL,
    ImportRun,
    Outcome,
    Plan,
)

MIB = 1024 * 1024


def spread(values: Iterable[float], digits: int = 1) -> str:
    """``median (min-max)``; one value alone."""
    found = list(values)
    if not found:
        return "—"
    text = f"{statistics.median(found):,.{digits}f}"
    if len(found) > 1:
        text += f" ({min(found):,.{digits}f}-{max(found):,.{digits}f})"
    return text


def _imports(outcome: Outcome, peer: str) -> list[ImportRun]:
    return [r for r in outcome.imports if r.peer == peer]


def _rcpt(outcome: Outcome, peer: str, key: str) -> str:
    """The median RCPT round trip of each round (µs), as median (min-max) over the rounds, in ms."""
    return spread((getattr(r, key)["median"] / 1000 for r in outcome.rounds if r.peer == peer), 3)


def _rcpt_p90(outcome: Outcome, peer: str, key: str) -> str:
    return spread((getattr(r, key)["p90"] / 1000 for r in outcome.rounds if r.peer == peer), 3)


def summary_table(outcome: Outcome, entries: int) -> list[str]:
    relay, pf = _imports(outcome, "mta-relay"), _imports(outcome, "Postfix")
    rounds_full = [r for r in outcome.rounds if r.peer == POSTFIX_FULL]
    smtpd_full = [r.rss_in_session_kib / 1024 for r in rounds_full]
    smtpd_empty = [r.rss_in_session_kib / 1024 for r in outcome.rounds if r.peer == POSTFIX_EMPTY]
    relay_in_session = [r.rss_in_session_kib / 1024 for r in outcome.rounds if r.peer == RELAY_FULL]
    relay_empty = [r.rss_in_session_kib / 1024 for r in outcome.rounds if r.peer == RELAY_EMPTY]
    relay_disk = [(r.disk_bytes.get("B db", 0) + r.disk_bytes.get("B -wal", 0)) / MIB for r in relay]
    rows = [
        "| | mta-relay | Postfix |",
        "|---|---|---|",
        f"| **import** {entries:,} entries, s | **{spread(r.seconds for r in relay)}** (admin API into A, "
        f"batches of 10,000) | **{spread(r.seconds for r in pf)}** (`postmap`) |",
        f"| import, entries/s | {spread((r.rate for r in relay), 0)} | {spread((r.rate for r in pf), 0)} |",
        f"| **reaching the other MTA**, s from the first import request | "
        f"**{spread(r.reach_peer_seconds or 0 for r in relay)}** | no propagation: each instance needs the "
        "file copied and its own `postmap` |",
        f"| … after the last import request | "
        f"{spread(r.reach_after_import_seconds or 0 for r in relay)} | — |",
        f"| CPU s, import until the peer holds all | "
        f"A {spread(r.cpu_seconds['A until B holds all'] for r in relay)}, "
        f"B {spread(r.cpu_seconds['B until it holds all'] for r in relay)} | "
        f"`postmap` {spread(r.cpu_seconds['postmap'] for r in pf)} |",
        f"| **memory per MTA**, MiB RSS, before → after the import | "
        f"A {spread(r.rss_before_kib['A'] / 1024 for r in relay)} → "
        f"**{spread(r.rss_after_kib['A'] / 1024 for r in relay)}**, "
        f"B {spread(r.rss_before_kib['B'] / 1024 for r in relay)} → "
        f"**{spread(r.rss_after_kib['B'] / 1024 for r in relay)}** (front door + delivery process) | "
        f"the session's smtpd: **{spread(smtpd_full)}** with the table, {spread(smtpd_empty)} with an empty "
        "one |",
        f"| memory while serving the RCPT rounds, MiB | B {spread(relay_in_session)}, relay with an empty "
        f"list {spread(relay_empty)} | see above |",
        f"| peak RSS during the import, MiB | A {spread(r.peak_kib['A'] / 1024 for r in relay)}, "
        f"B {spread(r.peak_kib['B'] / 1024 for r in relay)} | — |",
        f"| **on disk**, MiB | **{spread(relay_disk)}** (B's `suppressions.db` + `-wal`, running) | "
        f"**{spread(r.disk_bytes['hash .db'] / MIB for r in pf)}** (`.db`; the text source "
        f"{spread(r.disk_bytes['text file'] / MIB for r in pf)}) |",
        f"| **RCPT round trip**, ms, address in the list | **{_rcpt(outcome, RELAY_FULL, 'listed_us')}** "
        f"| **{_rcpt(outcome, POSTFIX_FULL, 'listed_us')}** |",
        f"| … address not in the list | {_rcpt(outcome, RELAY_FULL, 'unlisted_us')} | "
        f"{_rcpt(outcome, POSTFIX_FULL, 'unlisted_us')} |",
        f"| … empty list, any address | {_rcpt(outcome, RELAY_EMPTY, 'unlisted_us')} | "
        f"{_rcpt(outcome, POSTFIX_EMPTY, 'unlisted_us')} |",
    ]
    full = next((t for name, t in outcome.lookups.items() if name.startswith("full")), None)
    empty = outcome.lookups.get("empty")
    if full and empty:
        rows.append(f"| **lookup in process**, µs (`SuppressionStore.lookup`) | "
                    f"hit **{spread(full.hit_us, 2)}**, miss **{spread(full.miss_us, 2)}**; "
                    f"empty store {spread(empty.miss_us, 2)} | — (inside "
                    "smtpd: in the RCPT figure) |")
    return rows


def render(outcome: Outcome, about: dict[str, str], plan: Plan) -> str:
    lines = [f"# Suppression list: {plan.entries:,} entries, mta-relay beside Postfix", "",
             f"`python -m bench.suppressions{'' if plan.entries >= 1_000_000 else ' --quick'}`; "
             f"{plan.bounds()}. Method: bench/README.md (suppression list).", "",
             "| machine | |", "|---|---|", *(f"| {k} | {v} |" for k, v in about.items()), "",
             "The machine's 2 cores are shared with the benchmark's client and with whatever else runs "
             "(a test suite may): figures are median (min-max) over the repeats or rounds, and the load "
             "average is given per run. Compare peers within this run.", "",
             "## Summary", "", *summary_table(outcome, plan.entries), "",
             "RCPT figures: the median of each round's session, then median (min-max) over the rounds. "
             "The relay's figure for a listed address includes what a refusal costs it: a log line and a "
             "Suppressed event in its event store.", ""]
    if outcome.replies:
        lines += ["Replies to a listed address:", "",
                  *(f"- {peer}: `{reply}`" for peer, reply in outcome.replies.items()), ""]
    lines += ["## Import, every run", "",
              "| peer | repeat | import s | entries/s | peer holds all s (after import) | CPU s "
              "| RSS before → after MiB | on disk MiB | load |", "|---|---|---|---|---|---|---|---|---|"]
    for r in outcome.imports:
        reach = (f"{r.reach_peer_seconds:.1f} ({r.reach_after_import_seconds:.1f})"
                 if r.reach_peer_seconds is not None else "—")
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in r.cpu_seconds.items())
        rss = ", ".join(f"{k} {r.rss_before_kib[k] // 1024} → {r.rss_after_kib[k] // 1024}"
                        for k in r.rss_before_kib) or "—"
        disk = ", ".join(f"{k} {v / MIB:.1f}" for k, v in r.disk_bytes.items())
        lines.append(f"| {r.peer} | {r.repeat} | {r.seconds:.1f} | {r.rate:,.0f} | {reach} | {cpu} | {rss} | "
                     f"{disk} | {r.load} |")
    lines += ["", "## RCPT round trips, every round (µs)", "",
              "| round | peer | listed median | p90 | p99 | not listed median | p90 | p99 "
              "| RSS in session MiB | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in outcome.rounds:
        lines.append(f"| {r.round} | {r.peer} | {r.listed_us['median']:.0f} | {r.listed_us['p90']:.0f} | "
                     f"{r.listed_us['p99']:.0f} | {r.unlisted_us['median']:.0f} | "
                     f"{r.unlisted_us['p90']:.0f} | "
                     f"{r.unlisted_us['p99']:.0f} | {r.rss_in_session_kib / 1024:.0f} | {r.load} |")
    lines += ["", "(For the empty list and table, \"listed\" addresses are simply more unlisted ones.)", "",
              "## Memory (RSS, MiB)", "", "| when | " + " | ".join(
                  next(iter(outcome.memory_kib.values()), {})) + " |",
              "|---|" + "---|" * len(next(iter(outcome.memory_kib.values()), {}))]
    for when, kib in outcome.memory_kib.items():
        lines.append(f"| {when} | " + " | ".join(f"{v / 1024:.0f}" for v in kib.values()) + " |")
    lines += ["", "mta-relay: front door + delivery process. Postfix: every process of the instance (master, "
              "qmgr, the session's smtpd, … and Dovecot), shared pages counted once per process. "
              "B's database once the relay stopped: "
              + ", ".join(f"{k} {v / MIB:.1f} MiB" for k, v in outcome.disk_after_stop_bytes.items()) + ".",
              "", "## Lookup in process (µs per call, every pass)", "", "| store | hits | misses |",
              "|---|---|---|"]
    for name, t in outcome.lookups.items():
        lines.append(f"| {name} | {', '.join(f'{v:.2f}' for v in t.hit_us)} | "
                     f"{', '.join(f'{v:.2f}' for v in t.miss_us)} |")
    lines += ["", "(On the empty store the \"hits\" are misses too.)", ""]
    if outcome.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in outcome.notes), ""]
    return "\n".join(lines)
