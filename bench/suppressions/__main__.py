"""``python -m bench.suppressions [--quick] [--keep]``: the suppression list with a million entries in an
mta-relay pair beside Postfix's ``check_recipient_access`` table: import, propagation to the peer,
memory, disk, lookup and RCPT cost; writes bench/results/suppressions.md and the raw figures as
suppressions.json. Needs root (private Postfix instances) and Debian's postfix and dovecot-core: see
bench/README.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

from bench.delivery.__main__ import relay_source
from bench.frontdoor import machine
from bench.suppressions import run
from bench.suppressions.report import render

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"smaller ({run.QUICK.bounds()})")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, databases, logs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "suppressions.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the Postfix instances are private ones whose master starts as root")
    plan = run.QUICK if args.quick else run.FULL
    about = machine.describe(Path(tempfile.gettempdir()))
    about["mta-relay source"] = relay_source()
    done = run.execute(plan, keep=args.keep)
    about["load average at end"] = machine.load_average()
    if args.keep:
        done.notes.append(f"Kept: {done.workdir}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(done, about, plan))
    raw = {"machine": about, "plan": dataclasses.asdict(plan), **run.as_json(done)}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
