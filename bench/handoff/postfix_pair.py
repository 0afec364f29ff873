"""The Postfix side of the hand-off benchmark: a sending Postfix that holds N deferred messages and a
receiving Postfix that takes them, both private instances under the bench's temp dir (the front-door
bench's ``postfix_peer`` instance, through a small subclass each).

The sender is the front-door peer (SMTP submission, Dovecot SASL) plus Debian's pickup service, with
its relayhost on a closed port, so everything it accepts is deferred. Evacuating it is what a Postfix
operator does to empty an MTA that is going away:
``postconf -e relayhost=[127.0.0.1]:<receiver>``, ``postfix reload`` (for a private instance run with
``master -d``, that is SIGHUP to its master, which is all ``postfix reload`` does after its checks),
then ``postqueue -f``. The receiver is another Postfix that accepts plain SMTP from 127.0.0.0/8 and
whose own relayhost is a closed port too, so it keeps what it gets in its fsync'd queue (deferred), the
way the receiving relay does.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.frontdoor import postfix_peer, proctree
from bench.frontdoor.certs import CertFiles
from bench.frontdoor.children import Child, free_port, spawn, wait_for_port
from bench.frontdoor.peers import POSTFIX, Peer

POSTCONF, POSTQUEUE = "/usr/sbin/postconf", "/usr/sbin/postqueue"
MESSAGE_DIRS = ("incoming", "active", "deferred", "hold", "maildrop")  # where a queued message can be
# The receiver: plain SMTP from loopback (the sender's default smtp_tls_security_level is none), no
# SASL, relaying for $mynetworks, and a host name of its own: a Postfix that greets with the sender's own
# name is refused as a mail loop.
RECEIVER_SETTINGS = (
    "myhostname = receiver.bench.localhost",
    "smtpd_tls_security_level = none",
    "smtpd_tls_auth_only = no",
    "smtpd_sasl_auth_enable = no",
    "smtpd_relay_restrictions = permit_mynetworks, reject",
)
# maillog_file lines: "Nov 27 18:11:07 postfix postfix/smtp[22029]: E979D9862C9: to=<...>, ...,
# status=sent (250 ...)". Whole seconds only: good for counting, not for timing.
_SENT = re.compile(r"/smtp\[\d+\]: [0-9A-F]+: to=<[^>]*>.*\bstatus=sent\b")


# postqueue -f refuses to run ("mail system is down") without a pickup service; the front-door peer runs
# without one (it takes mail only by SMTP), a Postfix an operator evacuates has it (Debian's master.cf).
PICKUP = "pickup/unix=pickup unix n - n 60 1 pickup"


def postconf(root: Path, *settings: str, master_cf: bool = False) -> None:
    """``postconf -c <instance>/etc -e`` (``-M``: master.cf) with ``settings``: the documented way."""
    argv = [POSTCONF, "-c", str(root / "etc"), "-M" if master_cf else "", "-e", *settings]
    subprocess.run([arg for arg in argv if arg], check=True, timeout=30, capture_output=True)


@dataclass(frozen=True)
class SendingPostfix(postfix_peer.PostfixPeer):
    """The front-door peer's instance (SMTP submission with Dovecot SASL) with a pickup service."""

    def prepare(self) -> None:
        super().prepare()
        postconf(self.root, PICKUP, master_cf=True)


@dataclass(frozen=True)
class ReceivingPostfix(postfix_peer.PostfixPeer):
    """The front-door peer's instance with the receiver's settings on top (``RECEIVER_SETTINGS``);
    ``sink_port`` is where it relays to: a closed port, so it holds what it receives."""

    def prepare(self) -> None:
        super().prepare()
        postconf(self.root, *RECEIVER_SETTINGS)


def queued(root: Path, dirs: tuple[str, ...] = MESSAGE_DIRS) -> int:
    """Queue files under ``dirs`` of an instance (hashed subdirectories included)."""
    queue = root / "queue"
    return sum(len(files) for name in dirs for _, _, files in os.walk(queue / name))


def sent(root: Path) -> int:
    """Deliveries with status=sent in the instance's mail log (one per message: one recipient each)."""
    try:
        text = (root / "log/postfix.log").read_text(errors="replace")
    except FileNotFoundError:
        return 0
    return len(_SENT.findall(text))


@dataclass
class PostfixPair:
    sender: Peer  # the front-door peer (SMTP + Dovecot SASL for the fill), relayhost on a closed port
    sender_root: Path
    receiver: Child  # the receiving instance's master
    receiver_root: Path
    receiver_port: int

    @property
    def children(self) -> list[Child]:
        return [*self.sender.children, self.receiver]

    def master_pid(self) -> int:
        return self.sender.children[-1].peer_pid()

    def evacuate(self) -> None:
        """Point the sender at the receiver, reload it, flush its queue: what an operator types."""
        postconf(self.sender_root, f"relayhost = [127.0.0.1]:{self.receiver_port}")
        qmgr_before = self._qmgr()
        os.kill(self.master_pid(), signal.SIGHUP)  # postfix reload
        self._await_new_qmgr(qmgr_before)
        flushed = subprocess.run([POSTQUEUE, "-c", str(self.sender_root / "etc"), "-f"], check=False,
                                 timeout=30, capture_output=True, text=True)
        if flushed.returncode:
            raise RuntimeError(f"postqueue -f failed: {flushed.stderr.strip()}")

    def _qmgr(self) -> set[int]:
        return {pid for pid in proctree.children(self.master_pid()) if _comm(pid) == "qmgr"}

    def _await_new_qmgr(self, before: set[int], timeout: float = 30) -> None:
        """Until the reload has replaced the queue manager (it keeps running for a moment after the
        SIGHUP; a flush request it took would go out with the old relayhost). ``postfix reload`` returns
        without waiting; an operator typing the next command is slower than this."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self._qmgr()
            if now and not now & before:
                return
            time.sleep(0.01)
        raise RuntimeError("the sender's qmgr did not restart after the reload")

    def tree_rss_kib(self) -> int:
        """Resident memory of every process of both instances now (Dovecot included), KiB."""
        total = 0
        for child in self.children:
            root = child.peer_pid()
            total += sum(_rss_kib(pid) for pid in [root, *proctree.descendants(root)])
        return total

    def stop(self) -> None:
        self.receiver.stop()
        self.sender.stop()


def start(workdir: Path, certs: CertFiles, closed_port: int, password: str, name: str) -> PostfixPair:
    """Both instances, each relaying to ``closed_port``; the caller stops the pair (what did start is
    stopped here when a later step fails). The sender starts as ``postfix_peer.start`` starts it."""
    sender_root, receiver_root = workdir / f"{name}-sender", workdir / f"{name}-receiver"
    sending = SendingPostfix(sender_root, free_port(), closed_port, certs, "bench", password)
    receiving = ReceivingPostfix(receiver_root, free_port(), closed_port, certs, "unused", password)
    started: list[Child] = []
    try:
        for instance in (sending, receiving):
            instance.root.mkdir()
            instance.prepare()
        dovecot = spawn(f"{name}-sender-dovecot", sending.dovecot_argv(), workdir)
        started.append(dovecot)
        _wait_for_file(sender_root / "queue/private/auth", dovecot)
        for instance, label in ((sending, "sender"), (receiving, "receiver")):
            started.append(spawn(f"{name}-{label}", instance.master_argv(), workdir))
            wait_for_port(started[-1], instance.port)
        _wait_for_file(sender_root / "queue/public/pickup", started[1])
    except BaseException:
        for child in reversed(started):
            child.stop()
        raise
    sender = Peer(POSTFIX, sending.port, sending.username, password, started[:2])
    return PostfixPair(sender, sender_root, started[2], receiver_root, receiving.port)


def _wait_for_file(path: Path, child: Child, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline or child.proc.poll() is not None:
            raise RuntimeError(f"{path.name} did not appear; see {child.log}")
        time.sleep(0.05)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
