"""A username claimed twice in one Cluster: the older SmtpCredential keeps it, the newer is refused
(Ready=False, UsernameConflict, naming the owner, a Warning Event) and left out of the table; when the
owner is deleted, the newer one takes the username over. As tests/operator/test_operator_edits.py on the
test bed, here in process."""

from __future__ import annotations

from typing import Any

import pytest
from mta_operator.api import API_VERSION
from mta_relay import passwords
from operator_core.conftest import NAMESPACE, Core, cluster_and_domains, wait_for
from support.objects import condition, decoded, table

pytestmark = pytest.mark.unit


def _claim(name: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "SmtpCredential",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"clusterRef": {"name": "main"}, "username": "shared", "domains": {"mode": "AnyDomain"}}}


def _password(core: Core, cred: str) -> str:
    return decoded(core.kube.stored("v1", "Secret", NAMESPACE, f"{cred}-smtp"))["password"]


async def test_the_first_claimant_keeps_a_username_and_hands_it_over_when_deleted(core: Core) -> None:
    core.apply(*cluster_and_domains())
    await core.start()
    core.apply(_claim("app-a"))
    await core.ready("SmtpCredential", "app-a")
    core.apply(_claim("app-b"))

    loser = await wait_for(lambda: (o := core.cr("SmtpCredential", "app-b"))
                           and condition(o, "Ready").get("reason") == "UsernameConflict" and o,
                           "the conflict")
    ready = condition(loser, "Ready")
    assert ready["status"] == "False"
    assert "app-a" in ready["message"]
    assert loser["status"]["observedGeneration"] == loser["metadata"]["generation"]
    assert any(e["reason"] == "UsernameConflict" and e["type"] == "Warning"
               and e["regarding"]["metadata"]["name"] == "app-b" for e in core.kube.posted_events)
    served = table(core.kube, NAMESPACE, "main")
    assert list(served) == ["shared"]
    assert passwords.verify_fast(served["shared"]["passwordVerifier"], _password(core, "app-a").encode())
    # The refused credential gets no connection Secret: no app can use a password that is not served.
    assert core.kube.stored("v1", "Secret", NAMESPACE, "app-b-smtp") is None

    core.kube.delete_now(API_VERSION, "SmtpCredential", NAMESPACE, "app-a")
    winner = await core.ready("SmtpCredential", "app-b")
    assert condition(winner, "Ready")["reason"] == "Serving"
    served = await wait_for(
        lambda: (t := table(core.kube, NAMESPACE, "main")) and "shared" in t and passwords.verify_fast(
            t["shared"]["passwordVerifier"], _password(core, "app-b").encode()) and t, "app-b's entry served")
    assert list(served) == ["shared"]
    # The owner's connection Secret went with it (garbage collection), the new owner has its own.
    assert core.kube.stored("v1", "Secret", NAMESPACE, "app-a-smtp") is None
