"""Pure tests of the test bed's build recipe (no Go toolchain needed)."""

from testbed.build import ldflags, staging_replaces
from testbed.versions import components

GOMOD = """module k8s.io/kubernetes

require (
\tgithub.com/google/cel-go v0.26.0
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0 // indirect
\tk8s.io/utils v0.0.0-20250604170112-4c0f3b243397
\tk8s.io/klog/v2 v2.130.1
)

require k8s.io/cri-api v0.0.0
"""


def test_staging_modules_are_replaced_with_the_published_minor_and_patch():
    assert staging_replaces(GOMOD, "v1.34.4") == {
        "k8s.io/api": "v0.34.4",
        "k8s.io/client-go": "v0.34.4",
        "k8s.io/cri-api": "v0.34.4",
    }


def test_kubernetes_binaries_carry_a_real_version():
    flags = ldflags(components()["kubernetes"])
    version = components()["kubernetes"].version
    assert f"k8s.io/component-base/version.gitVersion={version}" in flags
    assert "k8s.io/component-base/version.gitMinor=" + version.split(".")[1] in flags


def test_every_control_plane_binary_is_pinned():
    names = {b for comp in components().values() for b in comp.binaries}
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl",
            "kwok", "kwokctl", "helm", "coredns"} <= names
    assert all(comp.version.startswith("v") for comp in components().values())


def test_prometheus_binaries_carry_the_release_not_the_module_version():
    comp = components()["prometheus"]
    _, minor, patch = comp.version.lstrip("v").split(".")
    assert f"common/version.Version=3.{int(minor) - 300}.{patch}" in ldflags(comp)
    assert {"prometheus", "promtool"} <= set(comp.binaries)
