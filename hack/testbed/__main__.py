"""Command line: ``python -m testbed {build,up,down,status}`` (run from ``hack/``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import build, cluster, netns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the control-plane binaries into the cache (once)")
    b.add_argument("components", nargs="*", help="only these (default: all of versions.toml)")
    for name, text in (("up", "start a test bed"), ("down", "stop it"),
                       ("status", "show whether it runs")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--state-dir", type=Path, default=None,
                       help="where the test bed keeps its state (default $MTA_TESTBED_STATE)")
    r = sub.add_parser("run", help="run a command in the test host's own network namespace, where "
                       "pod IPs are local addresses (e.g. `run -- pytest`)")
    r.add_argument("command", nargs="+")
    i = sub.add_parser("_inside")  # internal: the re-exec inside the namespace
    i.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            started = time.monotonic()
            build.build_all(args.components or None)
            print(f"testbed: all binaries ready ({time.monotonic() - started:.0f}s)")
        elif args.cmd == "run":
            return netns.run(args.command)
        elif args.cmd == "_inside":
            netns.inside(args.command)
        elif args.cmd == "up":
            started = time.monotonic()
            tb = cluster.up(args.state_dir)
            print(f"testbed: up in {time.monotonic() - started:.1f}s; API server {tb.server}")
            print(f"export KUBECONFIG={tb.kubeconfig}")
        elif args.cmd == "down":
            cluster.down(args.state_dir)
            print("testbed: down")
        elif args.cmd == "status":
            state = (args.state_dir or cluster.default_state_dir()).resolve()
            if not (state / cluster.STATE_FILE).exists():
                print("testbed: not running")
                return 1
            tb = cluster.Testbed.load(state)
            print(f"testbed: API server {tb.server}; KUBECONFIG={tb.kubeconfig}")
    except (build.BuildError, cluster.StartError) as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
