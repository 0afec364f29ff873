"""Build the test bed's binaries from the Go module proxy, once per pinned version.

Each component gets a throw-away wrapper module in the cache that requires the pinned module and
builds its main packages. Kubernetes needs one extra step: its go.mod lists the ``k8s.io/*`` staging
modules at ``v0.0.0`` (satisfied by a ``replace => ./staging`` that does not apply to dependents), so
the wrapper replaces each of them with the published ``v0.<minor>.<patch>``. The list comes from the
downloaded go.mod, never from a hard-coded table.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from .versions import Component, bin_dir, cache_root, components

STAMP = ".built"


class BuildError(RuntimeError):
    pass


def _go(args: list[str], cwd: Path, log: Path, env: dict[str, str]) -> None:
    with log.open("a") as out:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
        # nice: a cold build takes minutes on 2 cores, often beside a test suite that must keep its timing
        proc = subprocess.run(["nice", "-n", "10", "go", *args], cwd=cwd, stdout=out,
                              stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise BuildError(f"`go {' '.join(args[:2])} ...` failed (exit {proc.returncode})")


def _module_gomod(module: str, version: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True, text=True, env=env, check=False,
    )
    if out.returncode != 0:
        raise BuildError(f"go mod download {module}@{version} failed: {out.stdout}{out.stderr}")
    return Path(json.loads(out.stdout)["GoMod"]).read_text()


def staging_replaces(gomod: str, kube_version: str) -> dict[str, str]:
    """``k8s.io/*`` modules required at v0.0.0 -> the published staging version for kube_version."""
    major_minor_patch = kube_version.lstrip("v").split(".")
    staging = "v0." + ".".join(major_minor_patch[1:3])
    pattern = r"^\s*(?:require\s+)?(k8s\.io/[\w.\-/]+)\s+v0\.0\.0(?=\s|$)"
    found = re.findall(pattern, gomod, flags=re.MULTILINE)
    return {mod: staging for mod in sorted(set(found))}


def ldflags(comp: Component) -> str:
    flags = ["-s", "-w"]
    if comp.name == "kubernetes":
        major, minor = comp.version.lstrip("v").split(".")[:2]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={comp.version}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
            ]
    elif comp.name == "helm":
        flags.append(f"-X helm.sh/helm/v3/internal/version.version={comp.version}")
    elif comp.name == "prometheus":
        # module v0.3MM.P is Prometheus 3.MM.P; `promtool --version` and build_info say so
        _, minor, patch = comp.version.lstrip("v").split(".")
        release = f"3.{int(minor) - 300}.{patch}"
        flags.append(f"-X github.com/prometheus/common/version.Version={release}")
    return " ".join(flags)


def is_built(comp: Component) -> bool:
    out = bin_dir(comp)
    return (out / STAMP).exists() and all((out / b).exists() for b in comp.binaries)


def build(comp: Component) -> float:
    """Build one component's binaries; returns seconds spent (0 when cached)."""
    if is_built(comp):
        return 0.0
    root = cache_root() / comp.key
    src, out, log = root / "src", bin_dir(comp), root / "build.log"
    src.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    started = time.monotonic()
    try:
        gomod = [f"module testbed.local/{comp.name}", "", "go 1.24", "",
                 f"require {comp.module} {comp.version}", ""]
        if comp.name == "kubernetes":
            upstream = _module_gomod(comp.module, comp.version, env)
            for mod, ver in staging_replaces(upstream, comp.version).items():
                gomod.append(f"replace {mod} => {mod} {ver}")
        (src / "go.mod").write_text("\n".join(gomod) + "\n")
        for name in comp.binaries:
            tags = ["-tags", comp.tags] if comp.tags else []
            _go(["build", "-trimpath", *tags, "-ldflags", ldflags(comp), "-o", str(out / name),
                 comp.package(name)], src, log, env)
    except (BuildError, OSError) as exc:
        raise BuildError(f"building {comp.key} failed: {exc}; log: {log}") from exc
    (out / STAMP).write_text(comp.version + "\n")
    return time.monotonic() - started


def build_all(only: list[str] | None = None) -> dict[str, float]:
    timings: dict[str, float] = {}
    for name, comp in components().items():
        if only and name not in only:
            continue
        print(f"testbed: {comp.key}: {'cached' if is_built(comp) else 'building'}", file=sys.stderr)
        timings[name] = build(comp)
        print(f"testbed: {comp.key}: ready in {timings[name]:.0f}s -> {bin_dir(comp)}",
              file=sys.stderr)
    return timings
