"""The credential table's wire format, written by the operator and read by the relay's watcher and loader.

The table is a set of shard Secrets plus a manifest Secret (the operator writes it last) that names each
shard with its digest; this module owns every name, key and encoding in it:

- a shard is one Secret ``<cluster>-mta-credentials-NNN`` with one key ``credentials-NNN.json``: a
  ``CredentialShard`` (``{"version": 1, "credentials": [...]}``, sorted by username, compact JSON);
- the manifest is the Secret ``<cluster>-mta-credentials`` with the key ``manifest.json``:
  ``{"version": 1, "shards": [{"secret", "key", "sha256"}]}``, sha256 the hex digest of the shard text.

A Secret holds at most 1 MiB in total, and its ``data`` is base64 (4/3 larger), so the default budget
keeps each shard's JSON at 512 KiB: a generated credential is about 300 bytes, so 10,000 credentials take
about six shards. Assignment is by a stable hash of the username, so adding or removing one credential
rewrites only its own shard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from mta_relay.config import CONFIG_VERSION, Credential, CredentialShard

DEFAULT_SHARD_BUDGET = 512 * 1024
SHARD_NAME = "credentials-{:03d}.json"
SHARD_PREFIX, SHARD_SUFFIX = "credentials-", ".json"
MANIFEST_KEY = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ShardRef:
    """One manifest entry: the Secret, its key (the shard's file name) and the text's sha256."""

    secret: str
    key: str
    sha256: str


def manifest_secret(cluster: str) -> str:
    """The manifest Secret: which shard Secrets are in force, with their digests."""
    return f"{cluster}-mta-credentials"


def shard_secret(cluster: str, index: int) -> str:
    return f"{cluster}-mta-credentials-{index:03d}"


def shard_file(index: int) -> str:
    return SHARD_NAME.format(index)


def shard_index(file_name: str) -> int:
    """credentials-007.json → 7."""
    return int(file_name.removeprefix(SHARD_PREFIX).removesuffix(SHARD_SUFFIX))


def shard_of(username: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(username.encode()).digest()[:8], "big") % count


def digest(content: bytes | str) -> str:
    return hashlib.sha256(content.encode() if isinstance(content, str) else content).hexdigest()


def encode_manifest(cluster: str, shards: dict[str, str]) -> tuple[list[ShardRef], str]:
    """The manifest for shard file name → text: its entries (sorted by file name) and its JSON text."""
    refs = [ShardRef(shard_secret(cluster, shard_index(name)), name, digest(text))
            for name, text in sorted(shards.items())]
    text = json.dumps({"version": MANIFEST_VERSION,
                       "shards": [{"secret": r.secret, "key": r.key, "sha256": r.sha256} for r in refs]},
                      separators=(",", ":"))
    return refs, text


def decode_manifest(text: str) -> list[ShardRef]:
    doc = json.loads(text)
    if doc.get("version") != MANIFEST_VERSION:
        raise ValueError(f"unknown manifest version {doc.get('version')!r}")
    return [ShardRef(s["secret"], s["key"], s["sha256"]) for s in doc["shards"]]


def encode_shard(creds: Iterable[Credential]) -> str:
    return json.dumps({"version": CONFIG_VERSION,
                       "credentials": [c.model_dump(mode="json", by_alias=True, exclude_defaults=True)
                                       for c in sorted(creds, key=lambda c: c.username)]},
                      separators=(",", ":"))


def decode_shard(text: str | bytes) -> CredentialShard:
    """Raises ValueError (JSON) or pydantic's ValidationError (a ValueError too) on a bad shard."""
    return CredentialShard.model_validate(json.loads(text))


def render_shards(credentials: Iterable[Credential], budget: int = DEFAULT_SHARD_BUDGET) -> dict[str, str]:
    """File name → JSON text, each text at most ``budget`` bytes; the fewest hash-stable shards."""
    creds = list(credentials)
    total = len(encode_shard(creds).encode())
    count = max(1, -(-total // budget))
    while True:
        buckets: list[list[Credential]] = [[] for _ in range(count)]
        for cred in creds:
            buckets[shard_of(cred.username, count)].append(cred)
        texts = [encode_shard(bucket) for bucket in buckets]
        if all(len(text.encode()) <= budget for text in texts):
            return {shard_file(i): text for i, text in enumerate(texts)}
        if count >= max(1, len(creds)):
            raise ValueError("a single credential exceeds the shard budget")
        count += 1
