"""The line protocol between the first process and each extra SMTP serving process (``delivery.channel``'s
framing: one JSON object per line, each with an ``op``).

Serving process → first: ``ready`` (entries: [[qid, slot], …] found in its slot range at start),
``queued`` (qid, slot: an entry made durable), ``quota`` (id, user, quota: a request to charge one message
of a credential that has a quota, or only to check it with ``check: true``), ``charged`` (user, quota: one
message of a credential without a quota, counted for its usage), ``refund`` (user, quota), ``used`` (user,
ip: the credential's last use), ``auth_failed`` (ip, user), and the reply ``metrics_text`` (id, text).
First → serving process: ``released`` (slot: free again in its range), ``auth_failed`` (ip, user: a failure
another process saw), ``metrics`` (id), ``reload``, ``drain`` (seconds left), and the reply
``quota_answer`` (id, ok).
Usernames and client addresses cross here; passwords, AUTH data and message bodies never do.
"""

from __future__ import annotations

from typing import Any

from mta_relay.config import Quota

WORKER_REPLIES = frozenset({"quota_answer"})  # what the serving process waits for
PRIMARY_REPLIES = frozenset({"metrics_text"})  # what the first process waits for


def quota_fields(quota: Quota | None) -> dict[str, Any] | None:
    return None if quota is None else quota.model_dump()


def quota_of(fields: dict[str, Any] | None) -> Quota | None:
    return None if fields is None else Quota.model_validate(fields)
