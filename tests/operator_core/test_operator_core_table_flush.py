"""A credential table write that fails: the credentials waiting for it stay Ready=False (Reconciling), the
write is retried, and it converges once the API takes it. Never half-written: the manifest, which is what
the relay's watcher reads, is written only after every shard it names, so while a shard write fails the
manifest in the API is still the previous one (and each shard it names still has the digest it gives, when
a shard write fails)."""

from __future__ import annotations

import hashlib
import json

import pytest
from mta_relay import passwords, shards
from operator_core.conftest import NAMESPACE, Core, cluster_and_domains, credentials, wait_for
from support.objects import condition, decoded, table

pytestmark = pytest.mark.unit

MANIFEST = shards.manifest_secret("main")
SHARD = shards.shard_secret("main", 0)


def _manifest(core: Core) -> str | None:
    return decoded(core.kube.stored("v1", "Secret", NAMESPACE, MANIFEST)).get(shards.MANIFEST_KEY)


def _consistent(core: Core) -> bool:
    """Every shard the manifest names holds the text the manifest's digest is of."""
    for shard in json.loads(_manifest(core) or '{"shards": []}')["shards"]:
        text = decoded(core.kube.stored("v1", "Secret", NAMESPACE, shard["secret"])).get(shard["key"], "")
        if hashlib.sha256(text.encode()).hexdigest() != shard["sha256"]:
            return False
    return True


def _waiting(core: Core, name: str) -> bool:
    ready = condition(core.cr("SmtpCredential", name), "Ready")
    return ready.get("status") == "False" and ready.get("reason") == "Reconciling"


@pytest.mark.parametrize("failing", [SHARD, MANIFEST])
async def test_a_failed_table_write_is_retried_and_never_half_written(core: Core, failing: str) -> None:
    core.apply(*cluster_and_domains(), *credentials("billing"))
    await core.start()
    await core.ready("SmtpCredential", "billing")
    served_before = _manifest(core)
    assert served_before is not None

    failure = core.kube.fail("apply", "Secret", failing)
    core.apply(*credentials("newsletter"))
    await wait_for(lambda: failure.raised >= 3, "the write tried again and again")
    # The new credential says it is not served yet; the relay still reads the previous table, whole.
    assert _waiting(core, "newsletter")
    assert condition(core.cr("SmtpCredential", "newsletter"), "Ready")["message"] == "Adding to the table"
    assert _manifest(core) == served_before
    if failing == SHARD:
        assert _consistent(core)
        assert "newsletter@example.com" not in table(core.kube, NAMESPACE, "main")
    # (With the manifest failing, the shard may be ahead of it: the relay's watcher checks each shard
    # against the manifest's digest and keeps serving the previous table until the manifest names it.)
    assert condition(core.cr("SmtpCredential", "billing"), "Ready")["status"] == "True"

    core.kube.heal()
    await core.ready("SmtpCredential", "newsletter")
    assert _consistent(core)
    served = table(core.kube, NAMESPACE, "main")
    assert set(served) == {"billing", "newsletter@example.com"}
    password = decoded(core.kube.stored("v1", "Secret", NAMESPACE, "newsletter-smtp"))["password"]
    assert passwords.verify_fast(served["newsletter@example.com"]["passwordVerifier"], password.encode())
