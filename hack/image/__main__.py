"""Command line: ``python -m image build [--out DIR]`` (run from ``hack/``, as root)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the OCI archive (cached by its inputs)")
    b.add_argument("--out", type=Path, default=None, help="also place the archive in this directory")
    args = parser.parse_args(argv)
    try:
        image = build.build(args.out)
    except build.ImageError as exc:
        print(f"image: error: {exc}", file=sys.stderr)
        return 1
    size = image.archive.stat().st_size / 2**20
    print(f"image: {image.ref} ({size:.0f} MiB, {'cached' if image.cached else 'built'} in "
          f"{image.seconds:.0f}s) -> {image.archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
