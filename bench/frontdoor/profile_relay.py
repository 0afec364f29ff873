"""Where the relay's time goes under load: starts the sink and the relay as the benchmark does, samples
the relay with py-spy (bench/requirements.txt; --nonblocking, since strace already traces it) while the
load generator runs one scenario, and prints the functions with the most samples, self and total.
``--drain`` samples on until the relay's spool is empty, so the delivery of what was accepted is in the
profile (the delivery bench's view); ``--idle`` counts waiting threads too (fsyncs in worker threads);
``--gil`` only samples holding the GIL, i.e. where the Python CPU time goes. ``--webhooks 1|2`` starts
the relay with the events benchmark's webhooks (``bench.events.hooks``: one taking every event, or that
and one filtered by type) posting to its HTTPS receiver; ``--subprocesses`` samples the relay's delivery
process too (where deliveries, their events and the webhook sender run).

``python -m bench.frontdoor.profile_relay [--clients 10] [--per-connection 100] [--seconds 10] [--drain]``
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.events import hooks
from bench.frontdoor import relay_peer
from bench.frontdoor.certs import write_certs
from bench.frontdoor.children import spawn
from bench.frontdoor.loadgen import Load, run_load
from bench.frontdoor.smtp_client import Target

PY_SPY = Path(__file__).resolve().parents[1] / ".venv/bin/py-spy"
_LINE_NUMBER = re.compile(r":\d+\)$")


def top_frames(folded: str, limit: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """From py-spy's raw (folded) output: (self samples, total samples) per function, and all samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    return own.most_common(limit), total.most_common(limit), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--per-connection", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--drain", action="store_true", help="sample until the relay's spool is empty")
    parser.add_argument("--idle", action="store_true", help="include idle threads (py-spy --idle)")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL (py-spy --gil)")
    parser.add_argument("--webhooks", type=int, choices=range(len(hooks.VARIANTS)), default=0,
                        help="webhooks of the relay (bench.events.hooks.VARIANTS)")
    parser.add_argument("--subprocesses", action="store_true",
                        help="sample the delivery process too (py-spy --subprocesses)")
    args = parser.parse_args()
    if not PY_SPY.exists():
        parser.error(f"{PY_SPY} missing: python -m venv bench/.venv && bench/.venv/bin/pip install -r "
                     "bench/requirements.txt")
    workdir = Path(tempfile.mkdtemp(prefix="mta-frontdoor-profile-"))
    sink = spawn("sink", [sys.executable, "-m", "bench.frontdoor.sink"], workdir, json_stdout=True)
    relay = receiver = None
    try:
        certs = write_certs(workdir / "certs")
        events = None
        if args.webhooks:
            receiver = hooks.start_receiver(workdir, certs)
            events = receiver.events_section(hooks.VARIANTS[args.webhooks], certs)
        relay = relay_peer.start(workdir, certs, int(sink.read_json_line(20)["port"]),
                                 relay_peer.generated_password(), events=events)
        target = Target("127.0.0.1", relay.port, relay.username, relay.password, "bench@example.com",
                        "sink@example.net")
        tls = ssl.create_default_context(cafile=str(certs.ca))
        asyncio.run(run_load(target, tls, Load(2, 1, 20, 20)))  # warm-up
        folded = workdir / "relay.folded"
        spy_log = workdir / "py-spy.log"
        # py-spy samples for --duration, the time the load runs; with --drain until SIGINT, after the drain.
        duration = [] if args.drain else ["--duration", str(math.ceil(args.seconds))]
        with spy_log.open("w") as log:
            argv = [str(PY_SPY), "record", "--nonblocking", "--format", "raw", "--rate", "250", *duration,
                    *(["--idle"] if args.idle else []), *(["--gil"] if args.gil else []),
                    *(["--subprocesses"] if args.subprocesses else []),
                    "--output", str(folded), "--pid", str(relay.children[0].peer_pid())]
            spy = subprocess.Popen(argv, stdout=log, stderr=log)
        outcome = asyncio.run(run_load(target, tls, Load(args.clients, args.per_connection, 10**9,
                                                          args.seconds)))
        if args.drain:
            relay.settle()
            spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
        if not folded.exists():
            raise RuntimeError(f"py-spy wrote nothing: {spy_log.read_text()[-500:]}")
        own, total, samples = top_frames(folded.read_text(), args.top)
        print(f"load: {outcome.summary()}\nsamples: {samples}\n\nself:")
        for frame, count in own:
            print(f"{100 * count / samples:5.1f}%  {frame}")
        print("\ntotal (inclusive):")
        for frame, count in total:
            print(f"{100 * count / samples:5.1f}%  {frame}")
    finally:
        if relay is not None:
            relay.stop()
        if receiver is not None:
            receiver.child.stop()
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
