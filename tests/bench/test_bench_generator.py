"""The front-door benchmark's harness works: its load generator, run as a process the way the bench runs
it, completes real STARTTLS + AUTH PLAIN sessions against the bench's bare aiosmtpd ceiling server (also a
real process), in both modes, and the server really received every message. No timing assertions: speed
is the benchmark's business (bench/README.md)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from bench.frontdoor.certs import write_certs; write_certs(Path(sys.argv[1]))",
                    str(tmp_path / "certs")], cwd=REPO, check=True, timeout=60)
    return tmp_path / "certs"


@pytest.fixture
def ceiling(certs: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    argv = [sys.executable, "-m", "bench.frontdoor.ceiling", "--cert", str(certs / "server-chain.pem"),
            "--key", str(certs / "server-key.pem")]
    server = subprocess.Popen(argv, cwd=REPO, text=True, stdout=subprocess.PIPE)
    try:
        ready = json.loads(server.stdout.readline())  # type: ignore[union-attr]
        yield int(ready["port"]), server
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=10)


def _stop(server: subprocess.Popen[str]) -> dict[str, int]:
    server.send_signal(signal.SIGTERM)
    out, _ = server.communicate(timeout=20)
    return json.loads(out.strip().splitlines()[-1])


def _loadgen(port: int, certs: Path, password_file: Path, *, clients: int, per_connection: int,
             messages: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.frontdoor.loadgen", "--port", str(port), "--ca", str(certs / "ca.pem"),
         "--password-file", str(password_file), "--clients", str(clients), "--per-connection",
         str(per_connection), "--messages", str(messages), "--seconds", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def test_generator_sends_every_message_in_both_modes(ceiling: tuple[int, subprocess.Popen[str]],
                                                     certs: Path, tmp_path: Path) -> None:
    port, server = ceiling
    password_file = tmp_path / "password"
    password_file.write_text("a-password-the-ceiling-accepts\n")

    one_each = _loadgen(port, certs, password_file, clients=3, per_connection=1, messages=7)
    batched = _loadgen(port, certs, password_file, clients=2, per_connection=5, messages=12)

    for summary, sent in ((one_each, 7), (batched, 12)):
        assert summary["errors"] == 0, summary["error_samples"]
        assert summary["messages"] == sent
        assert summary["msgs_per_s"] > 0
        assert 0 < summary["p50_ms"] <= summary["p99_ms"]
    assert _stop(server) == {"messages": 7 + 12}


def test_generator_reports_a_refusing_server_as_errors(tmp_path: Path, certs: Path) -> None:
    """Against a port where nothing listens, every attempt is an error and no message is counted."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password_file = tmp_path / "password"
    password_file.write_text("x\n")
    summary = _loadgen(port, certs, password_file, clients=2, per_connection=1, messages=5)
    assert summary["messages"] == 0
    assert summary["errors"] == 5
    assert "ConnectionRefusedError" in summary["error_samples"][0]
