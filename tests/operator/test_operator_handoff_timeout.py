"""A scale-down whose leaving MTA never hands its queue over (its relay is frozen): past
queue.handoffTimeout the StatefulSet shrinks all the same, the MTA's volume is kept and listed, and the
Cluster says so; scaling back up brings the MTA back with that volume and clears the list."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from opkit import apply, condition, cr, examples, patch_spec
from support.waiting import wait_until

pytestmark = pytest.mark.testbed


def _relay_pid(pod_ip: str) -> int:
    """The relay front door listening on ``pod_ip`` in this network namespace (the test host)."""
    here = os.readlink("/proc/self/ns/net")
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if (entry.name.isdigit() and os.readlink(entry / "ns" / "net") == here
                    and any(a.endswith(b"mta-relay") for a in argv[:2]) and pod_ip.encode() in argv):
                return int(entry.name)
        except OSError:
            continue
    raise AssertionError(f"no relay process for {pod_ip}")


def test_a_handoff_that_does_not_finish_keeps_the_volume(k, namespace, run_operator) -> None:
    run_operator()
    docs = [d for d in examples(namespace) if d["kind"] == "Cluster"]
    docs[0]["spec"]["mtas"] = 2
    docs[0]["spec"]["queue"]["handoffTimeout"] = "5s"
    apply(k, *docs)
    wait_until(lambda: condition(cr(k, "Cluster", namespace, "main"), "Ready").get("status") == "True", 90,
               "Cluster Ready")
    pod = k.get("v1", "Pod", namespace, "main-mta-1")
    frozen = _relay_pid(pod["status"]["podIP"])
    os.kill(frozen, signal.SIGSTOP)  # it can neither hand over nor answer
    try:
        patch_spec(k, "Cluster", namespace, "main", {"mtas": 1})
        cluster = wait_until(lambda: (c := cr(k, "Cluster", namespace, "main")) and
                             condition(c, "QueueHandedOff").get("reason") == "HandoffTimedOut" and c, 60,
                             "the hand-off given up")
        assert cluster["status"]["handoff"]["retainedVolumes"] == [{"claim": "spool-main-mta-1"}]
        assert "spool-main-mta-1" in condition(cluster, "QueueHandedOff")["message"]
        replicas = lambda: k.get("apps/v1", "StatefulSet", namespace, "main-mta")["spec"]["replicas"]  # noqa: E731
        wait_until(lambda: replicas() == 1, 30, "the StatefulSet shrunk")
        assert k.get("v1", "PersistentVolumeClaim", namespace, "spool-main-mta-1") is not None
    finally:
        os.kill(frozen, signal.SIGCONT)
    patch_spec(k, "Cluster", namespace, "main", {"mtas": 2})
    wait_until(lambda: not cr(k, "Cluster", namespace, "main")["status"]["handoff"]["retainedVolumes"], 60,
               "the volume back in use")
    claim = k.get("v1", "PersistentVolumeClaim", namespace, "spool-main-mta-1")
    assert claim["status"]["phase"] == "Bound"
    wait_until(lambda: condition(cr(k, "Cluster", namespace, "main"), "Ready").get("status") == "True", 90,
               "Ready again with both MTAs")
