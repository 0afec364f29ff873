"""The Postfix side: the front-door benchmark's private Postfix instance (``postfix_peer``: STARTTLS and
Dovecot SASL required, nothing of the machine's mail system touched) with the suppressed addresses as a
``check_recipient_access`` table, each ``address REJECT 5.7.1 suppressed``, built with ``postmap`` into
Postfix's default ``hash`` (Berkeley DB) map.

Postfix counts every refused RCPT as a client error: past ``smtpd_soft_error_limit`` (10) it sleeps
``smtpd_error_sleep_time`` (1 s) before each reply and past ``smtpd_hard_error_limit`` (20) it hangs up;
RSET counts towards ``smtpd_junk_command_limit``. Those defend against probing, which the relay does not
do at all, so they are lifted here: the figure is the lookup, not the tarpit. So is ``in_flow_delay``
(1 s): every transaction opens a queue file at its first accepted RCPT and takes an in-flow token, which
only the queue manager gives back for mail that reaches it; the bench's transactions end in RSET, so after
about a hundred of them smtpd waits 1 s for a token at the first accepted RCPT of every transaction
(measured). There is nothing to propagate: every Postfix instance needs the file copied and its own
``postmap``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.frontdoor import postfix_peer, proctree
from bench.frontdoor.certs import CertFiles
from bench.frontdoor.children import Child, free_port, spawn, wait_for_port
from bench.suppressions.relays import status_kib

POSTMAP = "/usr/sbin/postmap"
TABLE = "suppressed"
REJECT = "REJECT 5.7.1 suppressed"
RESTRICTIONS = """\
smtpd_recipient_restrictions = check_recipient_access hash:{table}, permit_sasl_authenticated, reject
smtpd_soft_error_limit = 1000000
smtpd_hard_error_limit = 1000000
smtpd_junk_command_limit = 1000000
smtpd_error_sleep_time = 0
in_flow_delay = 0
"""


@dataclass
class PostfixAccess:
    instance: postfix_peer.PostfixPeer
    children: list[Child]  # Dovecot, master

    @property
    def port(self) -> int:
        return self.instance.port

    @property
    def table(self) -> Path:
        return self.instance.root / "etc" / TABLE

    def master_pid(self) -> int:
        return self.children[-1].peer_pid()

    def processes(self) -> list[int]:
        """Every process of the instance, Dovecot (its SASL server) included."""
        return [pid for child in self.children
                for pid in (child.peer_pid(), *proctree.descendants(child.peer_pid()))]

    def rss_kib(self) -> int:
        return sum(status_kib(pid, "VmRSS") for pid in self.processes())

    def smtpd_rss_kib(self) -> list[int]:
        """RSS of each smtpd process now (one per open session)."""
        found = []
        for pid in proctree.descendants(self.master_pid()):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if name == "smtpd":
                found.append(status_kib(pid, "VmRSS"))
        return found

    def cpu_seconds(self) -> float:
        return sum(child.cpu_seconds() for child in self.children)

    def db_bytes(self) -> int:
        return self.table.with_name(TABLE + ".db").stat().st_size

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def write_table(path: Path, addresses: Iterable[str]) -> None:
    with path.open("w") as out:
        for address in addresses:
            out.write(f"{address} {REJECT}\n")


def postmap(table: Path) -> tuple[float, float]:
    """``postmap hash:<table>``: wall seconds and CPU seconds (user + system) of the run, Postfix's
    "import"."""
    log = table.with_name(TABLE + ".postmap.log")
    started = time.monotonic()
    with log.open("wb") as errors:
        proc = subprocess.Popen([POSTMAP, f"hash:{table}"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=errors)
    _, status, usage = os.wait4(proc.pid, 0)  # its own rusage: the bench's other children do not count
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"postmap failed: {log.read_text()[:300]}")
    log.unlink()
    return wall, usage.ru_utime + usage.ru_stime


def start(workdir: Path, certs: CertFiles, closed_port: int, password: str, *, name: str,
          table_ready: Path) -> PostfixAccess:
    """A private instance refusing what ``table_ready`` (a postmap'ed table, copied in: the only way a
    second instance gets it) lists."""
    instance = postfix_peer.PostfixPeer(workdir / name, free_port(), closed_port, certs, "bench", password)
    instance.root.mkdir()
    instance.prepare()
    table = instance.root / "etc" / TABLE
    for suffix in ("", ".db"):
        (table.parent / (TABLE + suffix)).write_bytes(table_ready.with_name(table_ready.name + suffix)
                                                      .read_bytes())
    main_cf = instance.root / "etc/main.cf"
    lines = [line for line in main_cf.read_text().splitlines() if not line.startswith("smtpd_recipient_")]
    main_cf.write_text("\n".join(lines) + "\n" + RESTRICTIONS.format(table=table))
    dovecot = spawn(f"{name}-dovecot", instance.dovecot_argv(), workdir)
    deadline = time.monotonic() + 20
    while not (instance.root / "queue/private/auth").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for Dovecot's auth socket")
        time.sleep(0.1)
    master = spawn(name, instance.master_argv(), workdir)
    peer = PostfixAccess(instance, [dovecot, master])
    try:
        wait_for_port(master, instance.port)
    except BaseException:
        peer.stop()
        raise
    return peer
