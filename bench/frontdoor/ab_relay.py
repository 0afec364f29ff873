"""Two or more builds of the relay side by side, for before/after figures of one change: each variant is
the relay started as the front-door bench starts it (``relay_peer.write_config``, the same sink, the same
certificate), with its own environment and, optionally, its own source tree (``PYTHONPATH`` put before
the installed package, e.g. a ``git archive`` of the commit before the change). The variants take turns
within every round, the first moving on by one each round, so a busy moment of the shared machine does
not always fall on the same one.

``python -m bench.frontdoor.ab_relay --variant base:/tmp/base/mta --variant new --scenario 100x10
--scenario 1x50 --rounds 5 --seconds 3``; a variant is ``NAME[:SOURCE_DIR][,ENV=VALUE...]``.

Per run: msgs/s, p50 ms, CPU ms per message of the front door process alone while the load runs (its own
utime + stime), of the delivery process (from the start of the run until the run's mail reached the
sink) and of the whole tree over that time.
Printed per round and, at the end, median (min-max) per variant and scenario; ``--json`` writes every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.frontdoor import proctree, relay_peer
from bench.frontdoor.certs import write_certs
from bench.frontdoor.children import Child, free_port, spawn, wait_for_port
from bench.frontdoor.loadgen import Load, run_load
from bench.frontdoor.peers import wait_drained
from bench.frontdoor.smtp_client import Target

WARM_UP = Load(clients=4, per_connection=5, max_messages=200, max_seconds=20)
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Variant:
    name: str
    source: Path | None
    env: dict[str, str]
    child: Child | None = None
    port: int = 0
    spool: Path | None = None
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Variant:
        head, *assignments = spec.split(",")
        name, _, source = head.partition(":")
        env = dict(a.split("=", 1) for a in assignments)
        if source and not (Path(source) / "mta_relay" / "__init__.py").is_file():
            raise argparse.ArgumentTypeError(f"{source} holds no mta_relay package")
        return cls(name, Path(source).resolve() if source else None, env)


def _own_cpu(pid: int, which: slice = slice(11, 13)) -> float:
    """User + system CPU seconds of the process alone (``which``: slice(12, 13) for system only)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2:].split()
    return sum(int(value) for value in fields[which]) / _TICK


def _start(variant: Variant, workdir: Path, certs, sink_port: int, password: str) -> None:
    port = free_port()
    config_dir, spool = workdir / f"{variant.name}-config", workdir / f"{variant.name}-spool"
    relay_peer.write_config(config_dir, smtp_port=port, http_port=free_port(), certs=certs, spool=spool,
                            sink_port=sink_port, password=password)
    env = dict(os.environ, **variant.env)
    if variant.source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(variant.source), env.get("PYTHONPATH"))))
    executable = relay_peer._executable()
    assert executable is not None
    variant.child = spawn(variant.name, [executable, "--config", str(config_dir), "--log-level", "INFO"],
                          workdir, env=env)
    wait_for_port(variant.child, port)
    variant.port, variant.spool = port, spool


def _settle(variant: Variant) -> None:
    assert variant.spool is not None
    wait_drained(lambda: relay_peer._spooled(variant.spool))


def _run(variant: Variant, tls: ssl.SSLContext, load: Load, password: str) -> dict[str, float]:
    assert variant.child is not None
    pid = variant.child.proc.pid
    target = Target("127.0.0.1", variant.port, relay_peer.USERNAME, password, "bench@example.com",
                    "sink@example.net")
    own, own_sys, tree = _own_cpu(pid), _own_cpu(pid, slice(12, 13)), proctree.tree_cpu_seconds(pid)
    delivery = sum(_own_cpu(child) for child in proctree.descendants(pid))
    outcome = asyncio.run(run_load(target, tls, load))
    own_after = _own_cpu(pid)  # before the drain: what accepting cost, not delivering
    own_sys_after = _own_cpu(pid, slice(12, 13))
    _settle(variant)
    tree_after = proctree.tree_cpu_seconds(pid)
    delivery_after = sum(_own_cpu(child) for child in proctree.descendants(pid))
    summary = outcome.summary()
    n = max(1, outcome.messages)
    if outcome.errors:
        print(f"  {variant.name}: {outcome.errors} errors {outcome.error_samples}", file=sys.stderr)
    return {"msgs_per_s": float(summary["msgs_per_s"]), "p50_ms": float(summary["p50_ms"]),
            "frontdoor_cpu_ms": 1000 * (own_after - own) / n, "tree_cpu_ms": 1000 * (tree_after - tree) / n,
            "frontdoor_sys_ms": 1000 * (own_sys_after - own_sys) / n,
            "delivery_cpu_ms": 1000 * (delivery_after - delivery) / n,
            "messages": float(outcome.messages), "errors": float(outcome.errors)}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, type=Variant.parse)
    parser.add_argument("--scenario", action="append", default=[],
                        help="PER_CONNECTIONxCLIENTS, e.g. 100x10 (default: 100x10 and 1x50)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--size", type=int, default=1024, help="message size in octets")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    scenarios = [tuple(int(x) for x in s.split("x")) for s in (args.scenario or ["100x10", "1x50"])]
    workdir = Path(tempfile.mkdtemp(prefix="mta-ab-relay-"))
    sink = spawn("sink", [sys.executable, "-m", "bench.frontdoor.sink"], workdir, json_stdout=True)
    variants: list[Variant] = args.variant
    try:
        certs = write_certs(workdir / "certs")
        sink_port = int(sink.read_json_line(20)["port"])
        password = relay_peer.generated_password()
        tls = ssl.create_default_context(cafile=str(certs.ca))
        for variant in variants:
            _start(variant, workdir, certs, sink_port, password)
            _run(variant, tls, WARM_UP, password)
        for round_ in range(args.rounds):
            order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
            for per_connection, clients in scenarios:
                key = f"{per_connection}x{clients}"
                load = Load(clients, per_connection, args.messages, args.seconds, args.size)
                for variant in order:
                    result = _run(variant, tls, load, password)
                    variant.runs.setdefault(key, []).append(result)
                    print(f"round {round_ + 1} {key:>6} {variant.name:>12}: "
                          f"{result['msgs_per_s']:7.1f} msgs/s p50 {result['p50_ms']:6.2f} ms  "
                          f"front door {result['frontdoor_cpu_ms']:.3f} "
                          f"ms/msg  tree {result['tree_cpu_ms']:.3f} ms/msg", flush=True)
        print(f"\nmedian (min-max) over {args.rounds} rounds; load average {os.getloadavg()[0]:.2f}")
        for per_connection, clients in scenarios:
            key = f"{per_connection}x{clients}"
            for variant in variants:
                runs = variant.runs[key]
                print(f"{key:>6} {variant.name:>12}: msgs/s {_spread([r['msgs_per_s'] for r in runs])}  "
                      f"p50 ms {_spread([r['p50_ms'] for r in runs])}  "
                      f"front door ms/msg {_spread([r['frontdoor_cpu_ms'] for r in runs])} "
                      f"(system {_spread([r['frontdoor_sys_ms'] for r in runs])})  "
                      f"delivery ms/msg {_spread([r['delivery_cpu_ms'] for r in runs])}  "
                      f"tree ms/msg {_spread([r['tree_cpu_ms'] for r in runs])}")
        if args.json is not None:
            args.json.write_text(json.dumps({v.name: v.runs for v in variants}, indent=1) + "\n")
    finally:
        for variant in variants:
            if variant.child is not None:
                variant.child.stop()
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
