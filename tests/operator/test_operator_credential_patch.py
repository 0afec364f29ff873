"""`kubectl mta credential rotate | retire-old | suspend | resume`: the spec patches they send (pure)."""

from __future__ import annotations

import datetime as dt

import pytest
from mta_operator.kubectl_plugin import credential_patch
from mta_operator.kubectl_plugin.cli import _parser

pytestmark = pytest.mark.unit
NOW = dt.datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=dt.UTC)


def _cred(**spec: object) -> dict[str, object]:
    return {"metadata": {"name": "app"}, "spec": {"clusterRef": {"name": "main"}, **spec}}


def test_rotate_asks_for_a_new_password_and_may_set_the_grace_period() -> None:
    assert credential_patch.rotate(_cred(), NOW, None) == {
        "spec": {"rotation": {"requestedAt": "2026-03-04T05:06:07Z"}}}
    assert credential_patch.rotate(_cred(), NOW, "90m") == {
        "spec": {"rotation": {"requestedAt": "2026-03-04T05:06:07Z", "gracePeriod": "90m"}}}


@pytest.mark.parametrize(("spec", "grace", "says"), [
    ({"passwordSecretRef": {"name": "own", "key": "password"}}, None, "change Secret 'own'"),
    ({"authentication": "SourceIP"}, None, "no password"),
    ({}, "1d", "--grace '1d'"),
])
def test_rotate_refuses_where_there_is_no_password_to_make(spec: dict[str, object], grace: str | None,
                                                          says: str) -> None:
    with pytest.raises(ValueError, match=says):
        credential_patch.rotate(_cred(**spec), NOW, grace)


def test_retire_suspend_resume() -> None:
    retire = {"spec": {"rotation": {"retireRequestedAt": "2026-03-04T05:06:07Z"}}}
    assert credential_patch.retire(NOW) == retire
    assert credential_patch.suspend(True) == {"spec": {"suspended": True}}
    assert credential_patch.suspend(False) == {"spec": {"suspended": False}}


def test_the_commands_parse() -> None:
    args = _parser().parse_args(["credential", "rotate", "app", "--grace", "8s"])
    assert (args.action, args.name, args.grace) == ("rotate", "app", "8s")
    for verb in ("retire-old", "suspend", "resume", "show"):
        assert _parser().parse_args(["credential", verb, "app"]).action == verb
