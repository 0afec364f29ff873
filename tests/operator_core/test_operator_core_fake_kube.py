"""The fake API keeps the promises the in-process tier relies on, checked against the real client's
behaviour: resourceVersion and generation, 409 on a stale write and on a duplicate create, 404 as the real
``ApiError`` (and None from ``get``), server-side apply per field manager, status only through its
subresource, garbage collection, label selectors, injected failures; and the leader election's
optimistic writes, which only work if stale writes conflict."""

from __future__ import annotations

import datetime as dt

import pytest
from mta_operator.controller.leader import LeaderElector
from mta_operator.kube.client import ApiError
from support.fake_kube import FakeKube, matches

pytestmark = pytest.mark.unit


def _cm(name: str, data: dict[str, str], **meta: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns", **meta},
            "data": data}


def test_versions_and_conflicts() -> None:
    kube = FakeKube()
    created = kube.create(_cm("a", {"x": "1"}))
    assert created["metadata"]["generation"] == 1
    assert created["metadata"]["uid"]
    with pytest.raises(ApiError) as exists:
        kube.create(_cm("a", {"x": "1"}))
    assert exists.value.status == 409
    fresh = kube.replace({**created, "data": {"x": "2"}})
    assert int(fresh["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert fresh["metadata"]["generation"] == 2
    with pytest.raises(ApiError) as stale:
        kube.replace({**created, "data": {"x": "3"}})
    assert stale.value.status == 409
    assert kube.get("v1", "ConfigMap", "ns", "missing") is None
    with pytest.raises(ApiError) as missing:
        kube.patch_status("v1", "ConfigMap", "ns", "missing", {"a": 1})
    assert missing.value.status == 404
    kube.delete("v1", "ConfigMap", "ns", "missing")  # as the real client: nothing to delete is fine


def test_server_side_apply_merges_per_field_manager() -> None:
    kube = FakeKube()
    kube.apply(_cm("a", {"ours": "1", "dropped": "1"}, labels={"l": "1"}))
    kube.apply(_cm("a", {"theirs": "1"}), manager="someone-else")
    after = kube.apply(_cm("a", {"ours": "2"}))
    # Our field left out is removed; another manager's field is kept; maps merge key by key.
    assert after["data"] == {"ours": "2", "theirs": "1"}
    assert "labels" not in after["metadata"]
    kube.patch_status("v1", "ConfigMap", "ns", "a", {"phase": "x"})
    kept = kube.apply(_cm("a", {"ours": "2"}) | {"status": {"phase": "ignored"}})
    assert kept["status"] == {"phase": "x"}  # status only through the subresource
    assert kept["metadata"]["generation"] == 3  # the status write did not count


def test_garbage_collection_selectors_and_failures() -> None:
    kube = FakeKube()
    owner = kube.create(_cm("owner", {}, labels={"app": "mta", "tier": "a"}))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    kube.create(_cm("child", {}, ownerReferences=[ref]))
    assert [o["metadata"]["name"] for o in kube.list("v1", "ConfigMap", "ns", "app=mta,tier in (a,b)")] \
        == ["owner"]
    assert matches("!layout,app", {"app": "x"})
    assert not matches("app,!tier", {"app": "x", "tier": "y"})
    kube.delete("v1", "ConfigMap", "ns", "owner")
    assert kube.stored("v1", "ConfigMap", "ns", "child") is None
    failure = kube.fail("create", "ConfigMap", "b", status=503, times=1)
    with pytest.raises(ApiError):
        kube.create(_cm("b", {}))
    assert kube.stored("v1", "ConfigMap", "ns", "b") is None  # a failed call changes nothing
    kube.create(_cm("b", {}))
    assert failure.raised == 1


def test_of_two_replicas_one_leads() -> None:
    kube = FakeKube()
    now = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    a = LeaderElector(kube, "ns", "a", clock=lambda: now[0])
    b = LeaderElector(kube, "ns", "b", clock=lambda: now[0])
    assert a._try()
    assert not b._try()
    # b read the Lease before a renewed it: b's write is stale and conflicts, so a keeps leading.
    lease = kube.get("coordination.k8s.io/v1", "Lease", "ns", "mta-operator")
    assert lease is not None
    now[0] += dt.timedelta(seconds=1)
    assert a._try()  # a renewal (a new renewTime) is a write
    lease["spec"]["holderIdentity"] = "b"
    with pytest.raises(ApiError) as stale:
        kube.replace(lease)
    assert stale.value.status == 409
