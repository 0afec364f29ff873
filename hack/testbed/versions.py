"""Pinned component versions (read from versions.toml) and where their binaries are cached."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

VERSIONS_FILE = Path(__file__).with_name("versions.toml")
CACHE_ENV = "MTA_TESTBED_CACHE"


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    version: str
    binaries: dict[str, str]  # binary name -> package path inside the module ("" = module root)
    tags: str = ""  # go build -tags (comma-separated), to leave out what the test bed never uses

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    def package(self, binary: str) -> str:
        sub = self.binaries[binary]
        return f"{self.module}/{sub}" if sub else self.module


def components() -> dict[str, Component]:
    data = tomllib.loads(VERSIONS_FILE.read_text())
    return {
        name: Component(name, entry["module"], entry["version"], dict(entry["binaries"]),
                        entry.get("tags", ""))
        for name, entry in data.items()
    }


def cache_root() -> Path:
    default = Path.home() / ".cache" / "mta-operator-testbed"
    return Path(os.environ.get(CACHE_ENV, default)).expanduser()


def bin_dir(component: Component) -> Path:
    return cache_root() / component.key / "bin"


def binary(name: str) -> Path:
    """Path of a cached binary by its name (e.g. ``kube-apiserver``)."""
    for comp in components().values():
        if name in comp.binaries:
            return bin_dir(comp) / name
    raise KeyError(f"no component builds a binary named {name!r}")


def kube_version() -> str:
    return components()["kubernetes"].version
