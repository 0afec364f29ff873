"""``python -m bench.frontdoor [--quick] [--rounds N] [--cpus 1,2] [--relay-workers N] [--no-relay]
[--keep]``: run every peer side by side and write bench/results/frontdoor.md (and the raw figures as
frontdoor.json). Needs root (a private Postfix instance, control groups), postfix, dovecot-core and
strace: see bench/README.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

from bench.frontdoor import machine, run
from bench.frontdoor.report import render
from bench.frontdoor.rounds import parse_cpus

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"short runs ({run.QUICK.bounds()})")
    parser.add_argument("--rounds", type=int, help=f"rounds per scenario (default {run.FULL.rounds}, "
                        f"quick {run.QUICK.rounds})")
    parser.add_argument("--cpus", type=parse_cpus, default=run.FULL.cpus, metavar="N[,N…]",
                        help="CPU limits in cores for each peer's process tree, one pass each; 'none' for "
                        "no limit (default 1,2)")
    parser.add_argument("--relay-workers", type=int, metavar="N",
                        help="pass --workers N to mta-relay (default: not passed, the relay sizes itself)")
    parser.add_argument("--no-relay", action="store_true", help="only Postfix and the ceiling")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, strace logs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "frontdoor.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the Postfix peer is a private instance that starts as root")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    plan = run.QUICK if args.quick else run.FULL
    plan = dataclasses.replace(plan, cpus=args.cpus, rounds=args.rounds or plan.rounds)
    about = machine.describe(Path(tempfile.gettempdir()))
    done = run.execute(plan, with_relay=not args.no_relay, keep=args.keep, relay_workers=args.relay_workers)
    about["load average at end"] = machine.load_average()
    notes = done.notes + ([f"Kept: {done.workdir}"] if args.keep else [])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(done.results, about, plan.bounds(), notes, done.processes))
    raw = {"machine": about, "plan": dataclasses.asdict(plan), "notes": notes, "processes": done.processes,
           "results": [dataclasses.asdict(r) for r in done.results]}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
