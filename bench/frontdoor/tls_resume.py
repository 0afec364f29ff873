"""What a full TLS handshake costs the relay against a resumed one: clients that open one connection per
message (EHLO, STARTTLS, EHLO, AUTH PLAIN, one 1 KiB message, QUIT), either with a fresh handshake every
time or offering the session (TLS 1.3 ticket) their previous connection got (``ssl`` ``session=``, as a
client that keeps its ``SSLSession`` does; smtplib cannot pass one to ``starttls``).

The relay is started as the front-door bench starts it (``relay_peer``: bench CA, ECDSA P-256 server
key, like the operator-managed certificate). ``--threads`` blocking clients run at once; the two modes
take turns for ``--rounds`` rounds of ``--connections`` connections each. Per mode: the front door's own
CPU per connection, the client's handshake time (``do_handshake``) and connection time (connect to the
reply to QUIT), p50, and how many connections really resumed (``SSLSocket.session_reused``).

``python -m bench.frontdoor.tls_resume [--connections 300] [--threads 4] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.frontdoor import relay_peer
from bench.frontdoor.certs import SERVER_NAME, write_certs
from bench.frontdoor.children import spawn
from bench.frontdoor.message import make_message
from bench.frontdoor.stats import percentile

_TICK = os.sysconf("SC_CLK_TCK")
MAIL_FROM, RCPT_TO = "bench@example.com", "sink@example.net"


def _own_cpu(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class _Lines:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def reply(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            while end >= 0:
                line, self.buffer = self.buffer[:end + 2], self.buffer[end + 2:]
                if line[3:4] != b"-":
                    return line
                end = self.buffer.find(b"\r\n")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buffer += data

    def command(self, line: bytes, expected: bytes) -> None:
        self.sock.sendall(line)
        reply = self.reply()
        if not reply.startswith(expected):
            raise RuntimeError(f"{line[:10]!r}: {reply[:80]!r}")


@dataclass
class _Stats:
    handshakes: list[float] = field(default_factory=list)
    connections: list[float] = field(default_factory=list)
    resumed: int = 0


def _connection(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None, auth: bytes,
                seq: int, stats: _Stats, lock: threading.Lock) -> ssl.SSLSession | None:
    started = time.perf_counter()
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lines = _Lines(raw)
    lines.reply()
    lines.command(b"EHLO client.localhost\r\n", b"250")
    lines.command(b"STARTTLS\r\n", b"220")
    handshake = time.perf_counter()
    tls = context.wrap_socket(raw, server_hostname=SERVER_NAME, session=session)
    handshake = time.perf_counter() - handshake
    lines = _Lines(tls)
    lines.command(b"EHLO client.localhost\r\n", b"250")
    lines.command(b"AUTH PLAIN " + auth + b"\r\n", b"235")
    lines.command(f"MAIL FROM:<{MAIL_FROM}>\r\n".encode(), b"250")
    lines.command(f"RCPT TO:<{RCPT_TO}>\r\n".encode(), b"250")
    lines.command(b"DATA\r\n", b"354")
    lines.command(make_message(MAIL_FROM, RCPT_TO, seq) + b".\r\n", b"250")
    lines.command(b"QUIT\r\n", b"221")
    reused, got = tls.session_reused, tls.session  # the ticket came with the replies after the handshake
    tls.close()
    with lock:
        stats.handshakes.append(handshake)
        stats.connections.append(time.perf_counter() - started)
        stats.resumed += reused
    return got


def _run(port: int, context: ssl.SSLContext, auth: bytes, resume: bool, connections: int, threads: int,
         pid: int, first_seq: int) -> dict[str, float]:
    stats, lock = _Stats(), threading.Lock()

    def client(index: int) -> None:
        session = None
        for n in range(connections // threads):
            got = _connection(port, context, session if resume else None, auth,
                              first_seq + index * 100_000 + n, stats, lock)
            session = got if resume else None

    before = _own_cpu(pid)
    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    count = len(stats.connections)
    return {"cpu_ms_per_conn": 1000 * (_own_cpu(pid) - before) / count,
            "handshake_p50_ms": 1000 * percentile(sorted(stats.handshakes), 50),
            "connection_p50_ms": 1000 * percentile(sorted(stats.connections), 50),
            "resumed_share": stats.resumed / count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mta-tls-resume-"))
    sink = spawn("sink", [sys.executable, "-m", "bench.frontdoor.sink"], workdir, json_stdout=True)
    relay = None
    try:
        certs = write_certs(workdir / "certs")
        password = relay_peer.generated_password()
        relay = relay_peer.start(workdir, certs, int(sink.read_json_line(20)["port"]), password)
        context = ssl.create_default_context(cafile=str(certs.ca))
        auth = base64.b64encode(f"\0{relay_peer.USERNAME}\0{password}".encode())
        pid = relay.children[0].peer_pid()
        _run(relay.port, context, auth, True, 40, 2, pid, 0)  # warm-up
        modes = {"full": False, "resumed": True}
        results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for round_ in range(args.rounds):
            order = list(modes) if round_ % 2 == 0 else list(reversed(modes))
            for mode in order:
                result = _run(relay.port, context, auth, modes[mode], args.connections, args.threads, pid,
                              (round_ + 1) * 10_000_000)
                results[mode].append(result)
                relay.settle()
                figures = "  ".join(f"{k} {v:.3f}" for k, v in result.items())
                print(f"round {round_ + 1} {mode:>8}: {figures}", flush=True)
        print(f"\nmedian (min-max) over {args.rounds} rounds, {args.connections} connections each, "
              f"{args.threads} clients")
        for mode, runs in results.items():
            print(f"{mode:>8}: " + "  ".join(
                f"{k} {statistics.median(r[k] for r in runs):.3f} ({min(r[k] for r in runs):.3f}-"
                f"{max(r[k] for r in runs):.3f})" for k in runs[0]))
    finally:
        if relay is not None:
            relay.stop()
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
