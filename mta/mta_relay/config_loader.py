"""Reading the relay config from a directory of files, as Kubernetes mounts ConfigMaps and Secrets.

Layout (``mta-relay --config DIR``)::

    DIR/relay.yaml (or relay.json)        RelaySettings (a ConfigMap)
    DIR/<credentialsDir>/*.json           CredentialShard files (one or more Secrets, e.g. one projected
                                          volume with keys credentials-000.json, credentials-001.json ...)
    TLS and DKIM files                    wherever the settings point (absolute, or relative to DIR)

Kubelet updates a volume by writing a new timestamped directory and atomically swapping the ``..data``
symlink to it. Each volume is read through one resolution of ``..data``, so a reload sees either the old
or the new set of files of that volume, never a mix (``atomic_dir.snapshot``, the layout's owner). A plain
directory (no ``..data``) is read as is.

Errors never quote file contents: credential files hold password verifiers and CRAM-MD5 secrets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from mta_relay.atomic_dir import snapshot
from mta_relay.config import CredentialShard, RelayConfig, RelaySettings
from mta_relay.shards import SHARD_SUFFIX, decode_shard

SETTINGS_NAMES = ("relay.yaml", "relay.json")
_SWAP_RETRIES = 3  # a swap can delete the old snapshot while we read it: start over
T = TypeVar("T")


class ConfigError(Exception):
    """The config cannot be used; the message names the file and the field, never a value."""


def resolve_path(config_dir: Path, path: str) -> Path:
    """Settings paths (TLS, DKIM, credentials) are absolute or relative to the config directory."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else config_dir / candidate


def read_token(config_dir: Path, path: str | None) -> bytes | None:
    """A token file the settings name (peer token, admin token): its stripped bytes, or None when the
    settings name none or it is unreadable or empty."""
    if not path:
        return None
    try:
        token = resolve_path(config_dir, path).read_bytes().strip()
    except OSError:
        return None
    return token or None


def load(config_dir: Path) -> RelayConfig:
    """Read, parse and validate the whole config; raise ConfigError with a clear, secret-free reason."""
    return _retrying_swaps(_load_once, config_dir)


def load_settings(config_dir: Path) -> RelaySettings:
    """Only the settings, not the credentials (the delivery process needs none)."""
    return _retrying_swaps(_settings_once, config_dir)


def _retrying_swaps(read: Callable[[Path], T], config_dir: Path) -> T:
    for attempt in range(_SWAP_RETRIES):
        try:
            return read(config_dir)
        except FileNotFoundError as error:
            if attempt == _SWAP_RETRIES - 1:
                raise ConfigError(f"missing file: {error.filename}") from None
    raise AssertionError("unreachable")


def fingerprint(config_dir: Path, settings: RelaySettings | None) -> tuple[Any, ...]:
    """Cheap change detector for the watcher: resolved snapshots plus names, sizes and mtimes of the
    settings volume and, per the settings in force, of the credentials volume and the TLS files."""
    try:
        parts: list[Any] = [_listing(snapshot(config_dir))]
        if settings is not None:
            creds = resolve_path(config_dir, settings.credentials_dir)
            if creds.is_dir():
                parts.append(_listing(snapshot(creds)))
            parts.extend(_stat(resolve_path(config_dir, p)) for p in (settings.tls.cert_file,
                                                                     settings.tls.key_file))
    except FileNotFoundError:
        return ("changing",)  # mid-swap: the next poll sees the new generation
    return tuple(parts)


def snapshot_name(fingerprint_: tuple[Any, ...]) -> str:
    """The settings volume's generation a ``fingerprint`` saw (its snapshot directory's name; the
    volume's own name when it is a plain directory); "" when it saw a swap half done. Logged with the
    generation built after it, so a reader can tell which published files a relay uses."""
    first = fingerprint_[0] if fingerprint_ else None
    return Path(first[0]).name if isinstance(first, tuple) and first else ""


def _settings_once(config_dir: Path) -> RelaySettings:
    settings_file = _settings_file(snapshot(config_dir))
    if settings_file is None:
        raise ConfigError(f"{config_dir}: no {' or '.join(SETTINGS_NAMES)}")
    return _parse_settings(settings_file)


def _load_once(config_dir: Path) -> RelayConfig:
    settings = _settings_once(config_dir)
    creds_dir = resolve_path(config_dir, settings.credentials_dir)
    credentials = []
    if creds_dir.is_dir():
        shard_dir = snapshot(creds_dir)
        for shard in sorted(shard_dir.iterdir()):
            if shard.name.endswith(SHARD_SUFFIX) and not shard.name.startswith("."):
                credentials.extend(_parse_shard(shard).credentials)
    try:
        return RelayConfig(settings=settings, credentials=tuple(credentials))
    except ValidationError as error:
        raise ConfigError(f"{creds_dir}: {_describe(error)}") from None


def _settings_file(directory: Path) -> Path | None:
    for name in SETTINGS_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def _parse_settings(path: Path) -> RelaySettings:
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid {path.suffix[1:]}: {_where(error)}") from None
    try:
        return RelaySettings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{path}: {_describe(error)}") from None


def _parse_shard(path: Path) -> CredentialShard:
    try:
        return decode_shard(path.read_bytes())
    except ValidationError as error:  # before ValueError: it is one
        raise ConfigError(f"{path}: {_describe(error)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON: {_where(error)}") from None


def _describe(error: ValidationError) -> str:
    # include_input=False: the offending value may be a secret.
    details = error.errors(include_input=False, include_url=False, include_context=False)
    return "; ".join(f"{'.'.join(str(p) for p in d['loc']) or '(top)'}: {d['msg']}" for d in details[:5])


def _where(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"line {error.lineno} column {error.colno}"
    mark = getattr(error, "problem_mark", None)
    return f"line {mark.line + 1} column {mark.column + 1}" if mark else "unreadable"


def _listing(directory: Path) -> tuple[Any, ...]:
    entries = sorted((entry.name, *_stat(Path(entry.path))) for entry in os.scandir(directory))
    return (str(directory), *entries)


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)
