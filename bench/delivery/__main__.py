"""``python -m bench.delivery [--quick] [--rounds N] [--cpus 1,2] [--keep]``: the relay and the Postfix
peer side by side, end to end (accepted → delivered to a timing sink), in rounds under each CPU limit;
writes bench/results/delivery.md and the raw figures as delivery.json. Needs root (a private Postfix
instance, control groups), postfix, dovecot-core and strace: see bench/README.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import tempfile
from pathlib import Path

from bench.delivery import disk, run
from bench.delivery.report import render
from bench.frontdoor import machine
from bench.frontdoor.rounds import parse_cpus

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench/results"


def relay_source() -> str:
    """The commit the relay was measured at, and whether its working tree differed (others edit it)."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=30,
                              check=False)
        return done.stdout.strip()
    dirty = git("status", "--porcelain", "--", "mta")
    return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes under mta/" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"short runs ({run.QUICK.bounds()})")
    parser.add_argument("--rounds", type=int, help=f"rounds per scenario (default {run.FULL.rounds}, "
                        f"quick {run.QUICK.rounds})")
    parser.add_argument("--cpus", type=parse_cpus, default=run.FULL.cpus, metavar="N[,N…]",
                        help="CPU limits in cores for each peer's process tree, one pass each; 'none' for "
                        "no limit (default 1,2)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, strace logs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "delivery.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the Postfix peer is a private instance that starts as root")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    plan = run.QUICK if args.quick else run.FULL
    plan = dataclasses.replace(plan, cpus=args.cpus, rounds=args.rounds or plan.rounds)
    about = machine.describe(Path(tempfile.gettempdir()))
    about["mta-relay source"] = relay_source()
    syncs = disk.fsync_latency_ms(Path(tempfile.gettempdir()))
    about["fsync there, p50 / p90 ms"] = (f"new 1 KiB file {syncs['file_p50_ms']} / {syncs['file_p90_ms']}, "
                                          f"its directory {syncs['dir_p50_ms']} / {syncs['dir_p90_ms']}")
    done = run.execute(plan, keep=args.keep)
    about["load average at end"] = machine.load_average()
    notes = done.notes + ([f"Kept: {done.workdir}"] if args.keep else [])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(done.results, about, plan.bounds(), notes, done.processes))
    raw = {"machine": about, "plan": dataclasses.asdict(plan), "notes": notes, "processes": done.processes,
           "results": [dataclasses.asdict(r) | {"e2e_msgs_per_s": round(r.e2e_rate, 1)}
                       for r in done.results]}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
