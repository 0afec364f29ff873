"""One generation of served config: the validated config plus what is built from it (policy, TLS
context, SPF resolver). Built off the loop, swapped in whole, so a session sees one generation at a time."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from mta_relay import config_loader
from mta_relay.config import RelayConfig
from mta_relay.config_loader import ConfigError
from mta_relay.policy import Policy
from mta_relay.spf import SpfChecker


@dataclass(frozen=True)
class Generation:
    config: RelayConfig
    policy: Policy
    tls: ssl.SSLContext
    spf: SpfChecker


def tls_context(config_dir: Path, cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config_loader.resolve_path(config_dir, cert_file),
                                config_loader.resolve_path(config_dir, key_file))
    except (OSError, ssl.SSLError) as error:
        # the error names the file or the OpenSSL reason, never key material
        raise ConfigError(f"tls: cannot load {cert_file} / {key_file}: "
                          f"{getattr(error, 'strerror', None) or error.__class__.__name__}") from None
    return context


def build(config_dir: Path) -> Generation:
    """Load and check everything; raise ConfigError (and change nothing) if any part is unusable."""
    config = config_loader.load(config_dir)
    settings = config.settings
    return Generation(config=config, policy=Policy(config),
                      tls=tls_context(config_dir, settings.tls.cert_file, settings.tls.key_file),
                      spf=SpfChecker(settings.spf_include, settings.dns.nameservers, settings.dns.port,
                                     settings.dns.timeout_seconds))
