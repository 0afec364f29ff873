"""Relay fixtures: a test CA, a config directory with the standard test credentials, a running relay."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from mta_relay.passwords import argon2_verifier
from relaykit import CANARY, PASSWORD, RelayThread, free_port, password_credential, settings, write_config
from support.dnsserver import DnsServer
from support.tls import client_context, make_ca, write_server_cert

SPF_INCLUDE = "_spf.mta.test.example"


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return make_ca()


@pytest.fixture(scope="session")
def tls_client(ca: trustme.CA) -> ssl.SSLContext:
    return client_context(ca)


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.add("spf-ok.example", "TXT", f'"v=spf1 include:{SPF_INCLUDE} -all"')
        server.add("nested.example", "TXT", '"v=spf1 include:_spf.nested.example ~all"')
        server.add("_spf.nested.example", "TXT", f'"v=spf1 ip4:192.0.2.0/24 include:{SPF_INCLUDE} -all"')
        server.add("spf-other.example", "TXT", '"v=spf1 include:_spf.elsewhere.example -all"')
        server.fail("spf-broken.example")
        yield server


@functools.cache
def _weak_verifier() -> str:
    return argon2_verifier("hunter2")  # argon2id takes a good half second: hash once per session


def standard_credentials() -> list[dict[str, Any]]:
    return [
        password_credential("app", PASSWORD),
        password_credential("two-domains", PASSWORD, domains={"mode": "Specific",
                                                               "names": ["example.com", "Example.ORG"]}),
        password_credential("all-domains", PASSWORD, domains={"mode": "AllClusterDomains"}),
        password_credential("any-domain", PASSWORD, domains={"mode": "AnyDomain"}),
        password_credential("restricted", PASSWORD, allowedIPs=["10.0.0.0/8", "2001:db8::/32"]),
        password_credential("loopback2", PASSWORD, allowedIPs=["127.0.0.2/32"]),
        password_credential("quota-two", PASSWORD, quota={"messages": 2, "period": "Hour"}),
        password_credential("on-behalf", PASSWORD, allowSenderHeader=True),
        password_credential("cram", PASSWORD, mechanisms=["PLAIN", "CRAM-MD5"], cramMd5Secret=CANARY),
        password_credential("canary", CANARY),
        password_credential("suspended", PASSWORD, suspended=True),
        {"username": "weak-pw", "passwordVerifier": _weak_verifier(),
         "domains": {"mode": "Specific", "names": ["example.com"]}},
        {"username": "by-source-ip", "authentication": "SourceIP", "allowedIPs": ["127.0.0.3/32"],
         "domains": {"mode": "Specific", "names": ["example.org"]}},
    ]


@dataclass
class RelaySetup:
    config_dir: Path
    settings: dict[str, Any]
    credentials: list[dict[str, Any]]
    spool: Path

    def write(self) -> None:
        write_config(self.config_dir, self.settings, self.credentials)


@pytest.fixture
def relay_setup(tmp_path: Path, ca: trustme.CA, dns_server: DnsServer) -> RelaySetup:
    cert, key = write_server_cert(ca, tmp_path / "tls")
    spool = tmp_path / "spool"
    relay_settings = settings([0, 0, 0], 0, cert, key, spool, spfInclude=SPF_INCLUDE,
                              dns={"nameservers": ["127.0.0.1"], "port": dns_server.port,
                                   "timeoutSeconds": 2},
                              # delivery runs in the relay: point it at a closed port so
                              # accepted mail stays deferred in the spool for the tests to inspect
                              delivery={"mode": "Smarthost", "smarthost": {
                                  "host": "127.0.0.1", "port": free_port(), "tls": "None"}},
                              limits={"maxMessageSize": 64 * 1024, "maxConnectionsPerIp": 20,
                                      "authFailureDelaySeconds": 0.05, "shutdownGraceSeconds": 0.2})
    setup = RelaySetup(tmp_path / "config", relay_settings, standard_credentials(), spool)
    setup.write()
    return setup


@pytest.fixture
def relay(relay_setup: RelaySetup) -> Iterator[RelayThread]:
    """The relay in this process (three SMTP ports, HTTPS), on ephemeral loopback ports."""
    thread = RelayThread(relay_setup.config_dir).start()
    try:
        yield thread
    finally:
        thread.stop()
