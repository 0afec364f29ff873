"""The whole suite as two pytest processes at once, inside the test host (``make test``).

The tests that need the test bed share one test bed and run in one process, in file order; every other
test (real relays, receivers and clients on loopback, the benchmarks' harness) runs beside them in a
second process. Most of both waits on timers and sockets rather than the CPU, so side by side they take
little longer than the slower of the two alone. Each process gets its own range of ports for the
servers its tests start (``tests/support/ports.py``).

The test-bed process prints as it goes; the other's output is kept in a file and printed when both are
done, each with its own summary. The exit status is the first non-zero one.

Usage: ``python hack/suite.py [pytest arguments for both]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STREAMS = {
    "test bed": ("testbed", "20000-25999"),
    "loopback": ("not testbed", "26000-31999"),
}
BANNER = "=" * 30 + " the loopback tests (run beside the test bed's) " + "=" * 30


def main(extra: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mta-suite-") as tmp:
        log = Path(tmp) / "loopback.log"
        with log.open("wb") as out:
            marker, ports = STREAMS["loopback"]
            loopback = subprocess.Popen(
                [*pytest, "-m", marker, "-p", "no:cacheprovider", *extra], stdout=out,
                stderr=subprocess.STDOUT, env={**os.environ, "MTA_TEST_PORTS": ports})
            marker, ports = STREAMS["test bed"]
            testbed = subprocess.run([*pytest, "-m", marker, *extra], check=False,
                                     env={**os.environ, "MTA_TEST_PORTS": ports})
            loopback_code = loopback.wait()
        sys.stdout.write(f"\n{BANNER}\n")
        sys.stdout.write(log.read_text(errors="replace"))
    print(f"suite: test bed exit {testbed.returncode}, loopback exit {loopback_code}, "
          f"{time.monotonic() - started:.0f} s in all", flush=True)
    return testbed.returncode or loopback_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
