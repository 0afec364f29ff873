"""Splitting credentials into shard files that each fit one Secret (for the operator's renderer).

A Secret holds at most 1 MiB in total, and its ``data`` is base64 (4/3 larger), so the default budget
keeps each shard's JSON at 512 KiB: a generated credential is about 300 bytes, so 10,000 credentials take
about six shards. Assignment is by a stable hash of the username, so adding or removing one credential
rewrites only its own shard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from mta_relay.config import CONFIG_VERSION, Credential

DEFAULT_SHARD_BUDGET = 512 * 1024
SHARD_NAME = "credentials-{:03d}.json"


def shard_of(username: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(username.encode()).digest()[:8], "big") % count


def _render(creds: list[Credential]) -> str:
    return json.dumps({"version": CONFIG_VERSION,
                       "credentials": [c.model_dump(mode="json", by_alias=True, exclude_defaults=True)
                                       for c in sorted(creds, key=lambda c: c.username)]},
                      separators=(",", ":"))


def render_shards(credentials: Iterable[Credential], budget: int = DEFAULT_SHARD_BUDGET) -> dict[str, str]:
    """File name → JSON text, each text at most ``budget`` bytes; the fewest hash-stable shards."""
    creds = list(credentials)
    total = len(_render(creds).encode())
    count = max(1, -(-total // budget))
    while True:
        buckets: list[list[Credential]] = [[] for _ in range(count)]
        for cred in creds:
            buckets[shard_of(cred.username, count)].append(cred)
        texts = [_render(bucket) for bucket in buckets]
        if all(len(text.encode()) <= budget for text in texts):
            return {SHARD_NAME.format(i): text for i, text in enumerate(texts)}
        if count >= max(1, len(creds)):
            raise ValueError("a single credential exceeds the shard budget")
        count += 1
