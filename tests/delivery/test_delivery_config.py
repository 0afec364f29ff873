"""The delivery side built from the relay config: route, credentials, DKIM keys, limits, reloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deliverykit import message, rsa_key
from mta_relay.config import RelaySettings
from mta_relay.config_loader import ConfigError
from mta_relay.delivery import from_config, service
from mta_relay.delivery.client import TlsMode
from mta_relay.spool import Spool
from prometheus_client import CollectorRegistry


def settings(tmp_path: Path, **extra: Any) -> RelaySettings:
    return RelaySettings.model_validate({
        "version": 1, "hostname": "mta.test.example", "smtpListeners": [{"port": 2525}],
        "tls": {"certFile": "tls.crt", "keyFile": "tls.key"}, "queue": {"path": str(tmp_path / "spool")},
        **extra})


def smarthost(tmp_path: Path, port: int = 587) -> dict[str, Any]:
    (tmp_path / "user").write_text("relay\n")
    (tmp_path / "pass").write_text("Secret-Pw-1\n")
    return {"mode": "Smarthost", "smarthost": {"host": "smtp.example.net", "port": port,
                                               "usernameFile": "user", "passwordFile": "pass"}}


def test_smarthost_route_reads_credentials_and_requires_tls(tmp_path: Path) -> None:
    route = from_config.route(settings(tmp_path, delivery=smarthost(tmp_path)), tmp_path)
    assert route.policy.tls is TlsMode.REQUIRED
    assert route.policy.port == 587
    assert route.policy.credentials is not None
    assert route.policy.credentials.username == "relay"
    assert route.policy.credentials.password == "Secret-Pw-1"
    assert "Secret-Pw-1" not in repr(route.policy)
    assert not route.by_domain


def test_mx_route_is_opportunistic_on_port_25(tmp_path: Path) -> None:
    route = from_config.route(settings(tmp_path), tmp_path)
    assert route.by_domain
    assert (route.policy.tls, route.policy.port, route.policy.helo_name) == (TlsMode.OPPORTUNISTIC, 25,
                                                                            "mta.test.example")


def test_dkim_keys_and_limits(tmp_path: Path) -> None:
    pem, _txt = rsa_key()
    (tmp_path / "dkim.pem").write_bytes(pem)
    signed = {"domain": "example.com", "dkim": {"selector": "s1", "keyFile": "dkim.pem"}}
    relay = settings(tmp_path, domains=[signed, {"domain": "example.org"}],
                     rateLimit={"messages": 100, "periodSeconds": 60},
                     queue={"path": str(tmp_path / "spool"), "maxRetryAgeSeconds": 3600})
    signer = from_config.signer(relay, tmp_path)
    assert signer.sign(message(sender="a@example.com")).startswith(b"DKIM-Signature:")
    assert not signer.sign(message(sender="a@example.org")).startswith(b"DKIM-Signature:")
    queue = from_config.queue_settings(relay)
    assert queue.rate_limit == (100, 60.0)
    assert queue.retry.max_age == 3600
    assert queue.reporting_mta == "mta.test.example"


def test_missing_key_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    relay = settings(tmp_path, domains=[{"domain": "example.com",
                                         "dkim": {"selector": "s1", "keyFile": "gone.pem"}}])
    with pytest.raises(ConfigError, match=r"gone\.pem"):
        from_config.signer(relay, tmp_path)


async def test_reload_keeps_connections_unless_the_route_changes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.recover()
    first = settings(tmp_path, delivery=smarthost(tmp_path))
    runner = await service.start(first, tmp_path, spool, CollectorRegistry())
    try:
        original = runner.deliverer
        service.reconfigure(runner, settings(tmp_path, delivery=smarthost(tmp_path),
                                             rateLimit={"messages": 5, "periodSeconds": 10}), tmp_path)
        assert runner.deliverer is original
        assert runner.settings.rate_limit == (5, 10.0)
        service.reconfigure(runner, settings(tmp_path, delivery=smarthost(tmp_path, port=2587)), tmp_path)
        assert runner.deliverer is not original
        assert runner.deliverer.route.policy.port == 2587
        assert runner.deliverer.shaper is original.shaper  # its counters and suspensions stay
        changed = runner.deliverer
        assert changed.shaper is not None
        table = changed.shaper.table
        broken = settings(tmp_path, domains=[{"domain": "example.com",
                                              "dkim": {"selector": "s", "keyFile": "gone.pem"}}])
        service.reconfigure(runner, broken, tmp_path)  # refused: the previous delivery config stays
        assert runner.deliverer is changed
        assert changed.shaper.table is table  # and the shaper keeps its rules
    finally:
        await runner.stop()


def test_retry_intervals_reach_the_backoff(tmp_path: Path) -> None:
    queue = {"path": str(tmp_path / "spool"), "minRetryIntervalSeconds": 2, "maxRetryIntervalSeconds": 8}
    retry = from_config.queue_settings(settings(tmp_path, queue=queue)).retry
    assert (retry.first, retry.cap) == (2, 8)
    assert retry.delay(1) <= 2
    assert 4 <= retry.delay(5) <= 8


def test_retry_intervals_out_of_order_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="minRetryIntervalSeconds"):
        settings(tmp_path, queue={"minRetryIntervalSeconds": 60, "maxRetryIntervalSeconds": 30})
