"""The delivery process alone: a spool filled beforehand with ``--messages`` 1 KiB messages, the relay
started on it (as the front-door bench configures it: smarthost = a null sink in its own process, events
kept, log level INFO), and the delivery process's CPU (user + system, from /proc) and wall time until the
spool is empty. Nothing is submitted while it runs, so the figure is delivery's own cost per message,
events and spool work included, with no front door competing for the cores. A run with no messages
gives the start-up cost (until the relay listens, which it does once delivery is ready), which is
taken off.

    .venv/bin/python -m bench.delivery.drain [--messages N] [--rounds R] [--profile FILE]

``--profile FILE`` samples the delivery process with py-spy (bench/requirements.txt) in the last round,
only while it holds the GIL, and writes py-spy's raw (collapsed stacks) output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mta_relay.spool import Spool, slot_files

from bench.frontdoor import relay_peer
from bench.frontdoor.certs import CertFiles, write_certs
from bench.frontdoor.children import free_port, spawn, wait_for_port
from bench.frontdoor.message import make_message
from bench.frontdoor.run import MAIL_FROM, RCPT_TO

PY_SPY = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy"
TICKS = os.sysconf("SC_CLK_TCK")


def _fill(spool_dir: Path, messages: int) -> None:
    async def fill() -> None:
        spool = Spool(spool_dir)
        spool.recover()
        for seq in range(messages):
            await spool.put(mail_from=MAIL_FROM, rcpts=[RCPT_TO], credential=relay_peer.USERNAME,
                            client_ip="127.0.0.1", source="smtp", smtputf8=False,
                            message=make_message(MAIL_FROM, RCPT_TO, seq))
    asyncio.run(fill())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _delivery_pid(relay_pid: int) -> int:
    for _ in range(200):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                    if b"mta_relay.delivery.worker" in cmdline and f"{relay_pid}".encode() in cmdline:
                        return int(entry.name)
                except OSError:
                    continue
        time.sleep(0.05)
    raise RuntimeError("the relay's delivery process did not start")


def _queued(spool_dir: Path) -> int:
    total = 0
    for path in slot_files(spool_dir / "slots"):
        try:
            total += path.stat().st_size > 0
        except FileNotFoundError:
            continue
    return total


def _run(workdir: Path, certs: CertFiles, sink_port: int, messages: int, profile: Path | None
         ) -> tuple[float, float]:
    """(delivery CPU seconds, wall seconds until the spool was empty)."""
    name = f"relay-{time.monotonic_ns()}"
    config_dir, spool_dir = workdir / f"{name}-config", workdir / f"{name}-spool"
    smtp_port = free_port()
    relay_peer.write_config(config_dir, smtp_port=smtp_port, http_port=free_port(),
                            certs=certs, spool=spool_dir, sink_port=sink_port,
                            password=relay_peer.generated_password())
    _fill(spool_dir, messages)
    executable = shutil.which("mta-relay", path=str(Path(sys.executable).parent)) or "mta-relay"
    started = time.perf_counter()
    child = spawn(name, [executable, "--config", str(config_dir), "--log-level", "INFO", "--workers", "1"],
                  workdir)
    sampler = None
    try:
        pid = _delivery_pid(child.proc.pid)
        wait_for_port(child, smtp_port)  # the relay listens once its delivery process is ready
        if profile is not None:
            sampler = subprocess.Popen([str(PY_SPY), "record", "-p", str(pid), "--gil", "--nonblocking",
                                        "-r", "200", "-f", "raw", "-o", str(profile)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while _queued(spool_dir):
            time.sleep(0.02)
        wall = time.perf_counter() - started
        cpu = _cpu_seconds(pid)
    finally:
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            sampler.wait(timeout=30)
        child.stop()
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="py-spy raw output of the last round's delivery process")
    args = parser.parse_args()
    per_message: list[float] = []
    rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mta-bench-drain-") as tmp:
        workdir = Path(tmp)
        sink = spawn("sink", [sys.executable, "-m", "bench.frontdoor.sink"], workdir, json_stdout=True)
        try:
            sink_port = int(sink.read_json_line(timeout=20)["port"])
            wait_for_port(sink, sink_port)
            certs = write_certs(workdir / "certs")
            for round_no in range(args.rounds):
                base_cpu, base_wall = _run(workdir, certs, sink_port, 0, None)
                last = round_no == args.rounds - 1
                cpu, wall = _run(workdir, certs, sink_port, args.messages, args.profile if last else None)
                per_message.append(1e3 * (cpu - base_cpu) / args.messages)
                rates.append(args.messages / max(1e-6, wall - base_wall))
                print(f"round {round_no + 1}: delivery CPU {per_message[-1]:.3f} ms/msg "
                      f"(start-up {base_cpu:.2f} s taken off), {rates[-1]:.0f} msgs/s", flush=True)
        finally:
            sink.stop()
    print(f"\nmedian (min-max) over {args.rounds} rounds, {args.messages} messages: delivery CPU "
          f"{statistics.median(per_message):.3f} ({min(per_message):.3f}-{max(per_message):.3f}) ms/msg, "
          f"{statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f}) msgs/s")


if __name__ == "__main__":
    main()
