"""``python -m bench.handoff [--quick] [--keep]``: the scale-down hand-off of mta-relay side by side with
Postfix evacuating its queue to another MTA, for several queue sizes, interleaved and repeated; writes
bench/results/handoff.md and the raw figures as handoff.json. Needs root (private Postfix instances) and
Debian's postfix and dovecot-core: see bench/README.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

from bench.delivery import disk
from bench.delivery.__main__ import relay_source
from bench.frontdoor import machine
from bench.handoff import run
from bench.handoff.report import render

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"smaller and once ({run.QUICK.bounds()})")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, queues, logs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "handoff.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the Postfix instances are private ones whose master starts as root")
    plan = run.QUICK if args.quick else run.FULL
    about = machine.describe(Path(tempfile.gettempdir()))
    about["mta-relay source"] = relay_source()
    syncs = disk.fsync_latency_ms(Path(tempfile.gettempdir()))
    about["fsync there, p50 / p90 ms"] = (f"new 1 KiB file {syncs['file_p50_ms']} / {syncs['file_p90_ms']}, "
                                          f"its directory {syncs['dir_p50_ms']} / {syncs['dir_p90_ms']}")
    done = run.execute(plan, keep=args.keep)
    about["load average at end"] = machine.load_average()
    notes = done.notes + ([f"Kept: {done.workdir}"] if args.keep else [])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(done.results, about, plan.bounds(), notes))
    raw = {"machine": about, "plan": dataclasses.asdict(plan), "notes": notes,
           "results": [dataclasses.asdict(r) | {"msgs_per_s": round(r.rate, 1)} for r in done.results]}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
