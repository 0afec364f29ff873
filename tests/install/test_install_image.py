"""The image definition, checked by what runs here (no Docker): the build context holds the same
distribution the tests install, both entry points exist, the user is a numeric non-root UID that the
chart and the operator's pods agree on, and nothing needs a writable root filesystem."""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from image import dockerfile
from install_kit import REPO, by_kind, render
from mta_operator.api import Cluster
from mta_operator.render.workload import Image, statefulset
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from setuptools import find_packages

DOCKERFILE = dockerfile.DOCKERFILE.read_text().replace("\\\n", " ")  # continuation lines joined
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
_stages = functools.partial(dockerfile.stages, DOCKERFILE)
_instruction = dockerfile.instructions


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build context Docker would send: the repository's files less what .dockerignore leaves out."""
    patterns = dockerfile.ignore_patterns(REPO)
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    root = tmp_path_factory.mktemp("context")
    for name in files:
        if (REPO / name).is_file() and not dockerfile.dockerignored(name, patterns):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    return root


def test_context_holds_the_package_the_tests_install(context: Path) -> None:
    where = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    for directory in where:
        assert set(find_packages(str(context / directory))) == set(find_packages(str(REPO / directory)))
    assert {"mta_operator", "mta_operator.kubectl_plugin", "mta_relay"} <= {
        p for d in where for p in find_packages(str(context / d))}
    assert (context / "pyproject.toml").read_bytes() == (REPO / "pyproject.toml").read_bytes()
    assert not (context / "tests").exists()
    assert not list(context.rglob("__pycache__"))


def test_build_copies_the_context_and_installs_this_pyproject(context: Path) -> None:
    build = _stages()[0]
    copied = {source.rstrip("/") for c in _instruction(build, "COPY") for source in shlex.split(c)[:-1]}
    assert {c.split("/")[0] for c in copied} == {p.name for p in context.iterdir()}
    assert all((context / c).exists() for c in copied)
    run = " ".join(_instruction(DOCKERFILE, "RUN"))
    # The locked dependencies, hash-checked; then this pyproject, no extras: what `.[test]` also installs.
    assert re.search(r"pip install --require-hashes -r requirements/runtime.txt\s", run)
    assert re.search(r"pip install --no-deps \.(\s|$)", run)
    assert "compileall" in run  # bytecode at build time: nothing to write under a read-only root


def test_entry_points_and_user(context: Path) -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert {"mta-operator", "mta-relay", "kubectl-mta"} <= set(scripts)
    final = _stages()[-1]
    (user,) = _instruction(final, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()  # runAsNonRoot can only verify a numeric user
    assert gid.isdigit()
    assert int(uid) > 0
    assert int(gid) > 0
    (entrypoint,) = _instruction(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["mta-relay"]
    assert "PYTHONDONTWRITEBYTECODE=1" in final
    python = re.match(r"python:(\d+\.\d+)", final).group(1)  # type: ignore[union-attr]
    assert PYPROJECT["project"]["requires-python"] == f">={python}"
    # The Docker-free build (hack/image) reads the same facts from this file.
    facts = dockerfile.facts()
    assert (facts.uid, facts.gid, facts.python) == (int(uid), int(gid), python)
    assert facts.entrypoint == ["mta-relay"]
    assert facts.compiled
    assert facts.env["PYTHONDONTWRITEBYTECODE"] == "1"

    # The chart's operator pod and the operator's MTA pods run as this user, with this entrypoint.
    (operator_pod,) = [d["spec"]["template"]["spec"] for d in by_kind(render(), "Deployment")]
    assert operator_pod["securityContext"]["runAsUser"] == int(uid)
    assert operator_pod["containers"][0]["command"][0] == "mta-operator"
    cluster = Cluster.model_validate({"kind": "Cluster", "metadata": {"name": "main", "namespace": "mail"},
                                      "spec": {"hostname": "smtp.example.com"}})
    relay_sts = statefulset(cluster, "main-mta-tls", Image("mta-operator:0.1.0"), 2)
    relay_pod = relay_sts["spec"]["template"]["spec"]
    assert relay_pod["securityContext"]["runAsUser"] == int(uid)
    relay = next(c for c in relay_pod["containers"] if c["name"] == "relay")
    assert relay.get("command", ["mta-relay"])[0] == "mta-relay"
    assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in relay_pod["containers"])


def _locked() -> dict[str, tuple[str, str, int]]:
    """requirements/runtime.txt as name -> (version, marker, hashes)."""
    pins: dict[str, tuple[str, str, int]] = {}
    name = ""
    for line in (REPO / "requirements" / "runtime.txt").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line):
            name = canonicalize_name(match.group(1))
            pins[name] = (match.group(2), match.group(3) or "", 0)
        elif line.strip().startswith("--hash=sha256:"):
            version, marker, hashes = pins[name]
            pins[name] = (version, marker, hashes + 1)
    return pins


def test_lock_pins_every_dependency_with_hashes_at_the_versions_the_tests_run() -> None:
    """``make lock`` wrote requirements/runtime.txt from [project].dependencies: every dependency is pinned
    there at a version its specifier allows, with its files' hashes; and the venv the tests run in has
    those very versions (the Makefile installs it with the lock as constraints)."""
    pins = _locked()
    assert len(pins) > len(PYPROJECT["project"]["dependencies"])  # the transitive ones too
    for dependency in map(Requirement, PYPROJECT["project"]["dependencies"]):
        if dependency.marker is not None and not dependency.marker.evaluate():
            continue
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{dependency} is not in the lock: run `make lock`"
        assert dependency.specifier.contains(pins[name][0]), f"{dependency}: locked {pins[name][0]}"
    for name, (version, marker, hashes) in pins.items():
        assert hashes, f"{name} has no hash in the lock"
        if not marker or Marker(marker).evaluate():
            assert metadata.version(name) == version, f"the venv has {name} {metadata.version(name)}"
