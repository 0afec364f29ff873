"""MTA-STS (RFC 8461), the pure part: the ``_mta-sts`` TXT record, the policy file, MX patterns, the
cache rules and the cache file's format. No sockets here; ``tls_policy`` does the DNS and HTTPS I/O.

This module owns two formats: the policy as a receiving domain publishes it (``parse_txt``,
``parse_policy``) and ``<spool>/state/mta-sts.json``, where the delivery process keeps the policies it
fetched across restarts (``encode_cache``, ``decode_cache``)::

    {"version": 1, "policies": {"<domain>": {"id": "<TXT id>", "mode": "enforce", "mx": ["*.example.net"],
                                             "maxAge": 86400, "fetchedAt": <Unix time>}}}

Cache rules (RFC 8461 §3.3, §5.1), as ``plan`` and ``after_fetch`` decide them:
- a cached policy is used until ``fetchedAt + max_age``, even when the TXT record is gone or a fetch
  fails (that is what protects against an attacker who strips the TXT record or blocks HTTPS);
- a TXT ``id`` different from the cached one means a new policy: it is fetched; if that fails, the
  cached one stays in force;
- a policy is fetched again (same id) once it is ``REFRESH_AFTER`` old, so that a domain that never
  changes its id does not drop out of the cache at ``max_age``;
- no TXT record and nothing cached: no policy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_POLICY_BYTES = 64 * 1024  # §3.3: senders SHOULD limit the policy body to 64 KB
MAX_AGE_LIMIT = 31_557_600  # §3.2: max_age is at most one year, in seconds
REFRESH_AFTER = 86_400.0  # a cached policy this old is fetched again (§5.1 suggests refreshing daily)
CACHE_VERSION = 1
CACHE_FILE = "mta-sts.json"
POLICY_PATH = "/.well-known/mta-sts.txt"

_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_MAX_AGE = re.compile(r"^[0-9]{1,10}$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class Mode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class PolicyError(ValueError):
    """The policy file is not a valid STSv1 policy (the message says why; no policy content)."""


@dataclass(frozen=True)
class Policy:
    mode: Mode
    mx: tuple[str, ...]  # patterns, lower case: "mail.example.net" or "*.example.net"
    max_age: int  # seconds

    def allows(self, host: str) -> bool:
        """Whether MX host ``host`` is one the policy names (§4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)


@dataclass(frozen=True)
class CachedPolicy:
    id: str  # the TXT record's id when the policy was fetched
    policy: Policy
    fetched_at: float  # Unix time

    def fresh(self, now: float) -> bool:
        return now < self.fetched_at + self.policy.max_age


def policy_host(domain: str) -> str:
    return f"mta-sts.{domain}"


def txt_name(domain: str) -> str:
    return f"_mta-sts.{domain}"


# --- the TXT record (§3.1) ---------------------------------------------------------------------------
def parse_txt(records: list[str]) -> str | None:
    """The policy id of a domain's ``_mta-sts`` TXT records, or None when there is no valid one.

    Records not starting with ``v=STSv1`` are ignored; more than one that does (or one without a valid
    ``id``) counts as no record, as §3.1 says."""
    sts = [r for r in records if r.startswith("v=STSv1")]
    if len(sts) != 1:
        return None
    fields = _txt_fields(sts[0])
    if fields is None or fields.get("v") != "STSv1":
        return None
    ident = fields.get("id", "")
    return ident if _ID.match(ident) else None


def _txt_fields(record: str) -> dict[str, str] | None:
    fields: dict[str, str] = {}
    for part in record.split(";"):
        part = part.strip(" \t")
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            return None
        fields.setdefault(key.strip(" \t"), value.strip(" \t"))
    return fields


# --- the policy file (§3.2) --------------------------------------------------------------------------
def parse_policy(text: str) -> Policy:
    """The policy in ``text`` (the body of ``https://mta-sts.<domain>/.well-known/mta-sts.txt``).

    Lines end in CRLF or LF; ``key: value``. ``version`` must be STSv1, ``mode`` one of enforce,
    testing, none, ``max_age`` a decimal of at most 10 digits (capped at one year), and ``mx`` present
    at least once unless the mode is none. Unknown keys are ignored; a repeated key other than ``mx``
    counts at its first occurrence."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for raw in re.split(r"\r?\n", text):
        line = raw.strip(" \t")
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError("a line is not 'key: value'")
        key, value = key.strip(" \t"), value.strip(" \t")
        if key == "mx":
            mx.append(_mx_pattern(value))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError("version is not STSv1")
    try:
        mode = Mode(fields.get("mode", ""))
    except ValueError:
        raise PolicyError("mode is not enforce, testing or none") from None
    max_age = fields.get("max_age", "")
    if not _MAX_AGE.match(max_age):
        raise PolicyError("max_age is not a number of seconds")
    if not mx and mode is not Mode.NONE:
        raise PolicyError("no mx line")
    return Policy(mode, tuple(mx), min(int(max_age), MAX_AGE_LIMIT))


def _mx_pattern(value: str) -> str:
    pattern = value.lower().rstrip(".")
    labels = pattern.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise PolicyError("an mx line is not a host name or *.<host name>")
    return pattern


def mx_matches(pattern: str, host: str) -> bool:
    """§4.1: a pattern matches the host name exactly, or ``*.`` matches exactly one leftmost label
    (``*.example.net`` matches ``mx1.example.net``, not ``example.net`` nor ``a.b.example.net``)."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


# --- the cache rules (§3.3, §5.1) --------------------------------------------------------------------
class Step(StrEnum):
    USE_CACHED = "use-cached"  # the cached policy is in force; nothing to fetch
    FETCH = "fetch"  # fetch the policy (then ``after_fetch``)
    NO_POLICY = "no-policy"  # no TXT record and nothing fresh in the cache


def plan(cached: CachedPolicy | None, txt_id: str | None, now: float) -> Step:
    """What to do for a domain given what the cache holds and the TXT record's id (None: no valid
    record, or the lookup failed)."""
    fresh = cached is not None and cached.fresh(now)
    if txt_id is None:
        return Step.USE_CACHED if fresh else Step.NO_POLICY
    if fresh and cached is not None and cached.id == txt_id and now - cached.fetched_at < REFRESH_AFTER:
        return Step.USE_CACHED
    return Step.FETCH


def after_fetch(cached: CachedPolicy | None, txt_id: str, fetched: Policy | None,
                now: float) -> CachedPolicy | None:
    """The policy in force after a fetch: the new one, or (a failed fetch) the cached one while it is
    fresh, or none."""
    if fetched is not None:
        return CachedPolicy(txt_id, fetched, now)
    return cached if cached is not None and cached.fresh(now) else None


# --- the cache file ----------------------------------------------------------------------------------
def encode_cache(policies: dict[str, CachedPolicy], now: float) -> bytes:
    """The cache file; expired policies are left out."""
    return json.dumps({"version": CACHE_VERSION, "policies": {
        domain: {"id": c.id, "mode": str(c.policy.mode), "mx": list(c.policy.mx), "maxAge": c.policy.max_age,
                 "fetchedAt": round(c.fetched_at, 3)}
        for domain, c in sorted(policies.items()) if c.fresh(now)}}, separators=(",", ":")).encode()


def decode_cache(data: bytes) -> dict[str, CachedPolicy]:
    """Domain → cached policy; ValueError if the file is not this format."""
    raw = json.loads(data)
    if not isinstance(raw, dict) or raw.get("version") != CACHE_VERSION:
        raise ValueError("not a version 1 MTA-STS cache file")
    policies = raw.get("policies")
    if not isinstance(policies, dict):
        raise ValueError("policies is not an object")
    return {str(domain): _cached(entry) for domain, entry in policies.items()}


def _cached(entry: Any) -> CachedPolicy:
    if not isinstance(entry, dict):
        raise ValueError("a policy is not an object")
    ident, mode, mx = entry.get("id"), entry.get("mode"), entry.get("mx")
    max_age, fetched_at = entry.get("maxAge"), entry.get("fetchedAt")
    if (not isinstance(ident, str) or not _ID.match(ident) or mode not in set(Mode)
            or not isinstance(mx, list) or not all(isinstance(p, str) for p in mx)
            or not isinstance(max_age, int) or isinstance(max_age, bool) or not 0 <= max_age <= MAX_AGE_LIMIT
            or not isinstance(fetched_at, int | float) or isinstance(fetched_at, bool)):
        raise ValueError("a policy is not {id, mode, mx, maxAge, fetchedAt}")
    try:
        patterns = tuple(_mx_pattern(p) for p in mx)
    except PolicyError as error:
        raise ValueError(str(error)) from None
    return CachedPolicy(ident, Policy(Mode(mode), patterns, max_age), float(fetched_at))
