"""Shared fixtures: the local Kubernetes test bed, an API client and a fresh namespace per test.

``MTA_USE_EXISTING_CLUSTER=true`` points the suite at the cluster of ``$KUBECONFIG`` (a kind cluster, say)
instead of starting the test bed, as envtest's USE_EXISTING_CLUSTER does.
In CI (``CI=true``) a test that needs the test bed fails when it is missing; it never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings
from image import build as image_build
from support.namespaces import temporary_namespace
from testbed import cluster, images, netns, versions

# Property tests check what the code returns, not how fast: on the shared, loaded machines CI runs on, a
# per-example deadline fails examples for the machine's pauses.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")

_REPORT: list[str] = []
IN_CI = os.environ.get("CI", "").lower() == "true"
USE_EXISTING = os.environ.get("MTA_USE_EXISTING_CLUSTER", "").lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class ReachableCluster:
    """A reachable cluster: its kubeconfig and a kubectl bound to it."""

    kubeconfig: Path
    kubectl_path: str
    testbed: cluster.Testbed | None  # None when the suite runs against an existing cluster

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
                              input=stdin, capture_output=True, text=True, check=check,
                              timeout=timeout)


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"test bed required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReachableCluster]:
    if USE_EXISTING:
        kubeconfig = Path(os.environ.get("KUBECONFIG", "~/.kube/config")).expanduser()
        path = shutil.which("kubectl") or str(versions.binary("kubectl"))
        yield ReachableCluster(kubeconfig, path, None)
        return
    missing = [name for name in cluster.COMPONENTS if not versions.binary(name).exists()]
    if missing:
        _unavailable(f"binaries not built: {', '.join(missing)} (run `make testbed-build`)")
    started = time.monotonic()
    tb = cluster.up(tmp_path_factory.mktemp("testbed"), die_with_parent=True)
    _REPORT.append(f"test bed: up in {time.monotonic() - started:.1f}s")
    try:
        yield ReachableCluster(tb.kubeconfig, str(versions.binary("kubectl")), tb)
    finally:
        cluster.down(tb.dir)
        peaks = json.loads((tb.dir / "peak-memory.json").read_text())
        _REPORT.append(f"test bed: peak memory {sum(peaks.values())} MiB in all ("
                       + ", ".join(f"{k} {v}" for k, v in sorted(peaks.items())) + ")")


@pytest.fixture(scope="session")
def api_client(kube: ReachableCluster):
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kube.kubeconfig))
    yield client
    client.close()


@pytest.fixture
def namespace(kube: ReachableCluster) -> Iterator[str]:
    yield from temporary_namespace(kube, "t")


@pytest.fixture(scope="session")
def pod_network() -> str:
    """The pod CIDR, when pod IPs are local addresses here (the suite runs under `python -m testbed run`)."""
    if not netns.pod_network_ready():
        _unavailable(f"pod IPs ({cluster.POD_CIDR}) are not local here: run the suite with "
                     "`make test` (or `PYTHONPATH=hack python -m testbed run -- pytest ...`)")
    return cluster.POD_CIDR


@pytest.fixture(scope="session")
def oci_image() -> image_build.Image:
    """The image's OCI archive, built without Docker (``make image``; cached by its inputs, so warm it
    costs the hashing of the build context). In CI a missing tool fails the test, never skips it."""
    missing = image_build.missing_tools()
    if missing or os.geteuid() != 0:
        reason = f"the image build needs root and {', '.join(image_build.TOOLS)} (missing: {missing})"
        if IN_CI:
            pytest.fail(f"image build required in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return image_build.build()


# The name the suite's operators give their MTA pods' image (``--relay-image``), loaded onto the test bed's
# node from the built archive, so those pods run from the image as they would on any cluster.
RELAY_IMAGE = "mta-relay:suite"


@pytest.fixture(scope="session")
def relay_image(kube: ReachableCluster, oci_image: image_build.Image) -> str:
    """``RELAY_IMAGE``, loaded on the test bed's node (as ``kind load image-archive`` would): the pod runner
    runs the containers of pods that name it from the image with runc, as UID 10001 on its read-only root."""
    if kube.testbed is None:
        _unavailable("the image is loaded onto the test bed's node; an existing cluster loads its own")
    images.load(Path(kube.testbed.dir), oci_image.archive, RELAY_IMAGE)
    return RELAY_IMAGE


# Fixtures that reach the test bed (directly or through another fixture) and what a test using them needs.
TESTBED_FIXTURES = {"kube", "api_client", "namespace"}
ROOT_FIXTURES = {"pod_network"}  # the test bed's network namespace
IMAGE_FIXTURES = {"oci_image"}  # root for the build's chroot, no test bed
NEEDS = ("testbed", "root", "postfix", "swaks", "node")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the test bed is marked so by its fixtures, whatever its module says; a test
    marked ``unit`` that needs anything more than Python is an error, so ``make unit`` never picks up a
    test that would need (and in CI fail without) the test bed."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & (TESTBED_FIXTURES | ROOT_FIXTURES):
            item.add_marker(pytest.mark.testbed)
        if fixtures & (ROOT_FIXTURES | IMAGE_FIXTURES):
            item.add_marker(pytest.mark.root)
        needs = [name for name in NEEDS if item.get_closest_marker(name)]
        if item.get_closest_marker("unit") and needs:
            raise pytest.UsageError(f"{item.nodeid} is marked unit but needs {', '.join(needs)}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _REPORT:
        terminalreporter.write_line(line)
