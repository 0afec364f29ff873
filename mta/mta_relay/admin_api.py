"""The MTA's admin API: ``GET /admin/v1/messages``, the events this MTA holds about messages (its local
store, ``events.store``), for ``kubectl mta messages``.

People reach it through the Kubernetes API (the pods' proxy subresource), with their own RBAC: they
need ``pods/proxy`` on the MTA pods and ``get`` on the Cluster's admin token Secret, whose token goes in
the ``X-MTA-Admin-Token`` header (the API server consumes ``Authorization``). Never an SMTP credential:
a credential's password opens submission only, and the admin token opens only this API. Answers hold
addresses, usernames and reply lines, never a message body.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from mta_relay import config_loader
from mta_relay.config import RelaySettings
from mta_relay.events import from_config as events_config
from mta_relay.events.record import EventType
from mta_relay.events.store import EventStore

TOKEN_HEADER = "X-MTA-Admin-Token"  # noqa: S105 - a header name
MESSAGES_PATH = "/admin/v1/messages"
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
_TEXT_FILTERS = ("recipient", "sender", "credential", "message_id", "queue_id")
_MAX_FILTER_LENGTH = 998


class Admin:
    """What the admin API needs from the relay: the token in force and the event store."""

    def __init__(self, config_dir: Path, settings: Callable[[], RelaySettings], pod_name: str | None,
                 store: Callable[[], EventStore]) -> None:
        self.config_dir, self._settings, self.pod_name, self.store = config_dir, settings, pod_name, store
        self.token: bytes | None = None
        self.reload()

    def reload(self) -> None:
        self.token = read_token(self.config_dir, self._settings())

    @property
    def store_path(self) -> Path:
        return events_config.store_path(self.config_dir, self._settings())


ADMIN_KEY = web.AppKey("admin", Admin)


def read_token(config_dir: Path, settings: RelaySettings) -> bytes | None:
    """The admin token; None without ``adminTokenFile`` or a readable, non-empty file."""
    return config_loader.read_token(config_dir, settings.admin_token_file)


def token_ok(presented: str | None, token: bytes | None) -> bool:
    if token is None or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8", "replace"), token)


class BadQuery(ValueError):
    """A query parameter the API cannot use; the message names it."""


def parse_query(query: dict[str, str]) -> dict[str, Any]:
    """The store query from the request's parameters: ``recipient``, ``sender``, ``credential``,
    ``message_id``, ``queue_id`` (exact), ``since`` (Unix seconds), ``type`` (comma-separated event
    types), ``limit`` (1-10000)."""
    unknown = sorted(set(query) - {*_TEXT_FILTERS, "since", "type", "limit"})
    if unknown:
        raise BadQuery(f"unknown parameter {unknown[0]!r}")
    found: dict[str, Any] = {}
    for name in _TEXT_FILTERS:
        value = query.get(name)
        if value is not None:
            if not value or len(value) > _MAX_FILTER_LENGTH:
                raise BadQuery(f"{name}: empty or longer than {_MAX_FILTER_LENGTH} characters")
            found[name] = value
    if "since" in query:
        try:
            since = float(query["since"])
        except ValueError:
            raise BadQuery("since: Unix seconds expected, such as 1767225600") from None
        if not math.isfinite(since) or since < 0:
            raise BadQuery("since: Unix seconds expected, such as 1767225600")
        found["since"] = since
    if "type" in query:
        names = [t for t in query["type"].split(",") if t]
        known = {str(t) for t in EventType}
        bad = [t for t in names if t not in known]
        if bad or not names:
            raise BadQuery(f"type: unknown event type {bad[0] if bad else ''!r}; one of {sorted(known)}")
        found["types"] = frozenset(names)
    limit = query.get("limit", str(DEFAULT_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise BadQuery(f"limit: a whole number from 1 to {MAX_LIMIT}")
    found["limit"] = int(limit)
    return found


async def messages(request: web.Request) -> web.Response:
    admin = request.app[ADMIN_KEY]
    if admin.token is None:
        return web.json_response({"error": "the admin API is not configured on this MTA"}, status=404)
    if not token_ok(request.headers.get(TOKEN_HEADER), admin.token):
        return web.json_response({"error": f"{TOKEN_HEADER}: missing or wrong"}, status=401)
    try:
        criteria = parse_query(dict(request.query))
    except BadQuery as error:
        return web.json_response({"error": str(error)}, status=400)
    path = admin.store_path
    if not path.exists():
        return web.json_response({"mta": admin.pod_name or "", "events": []})
    events = await asyncio.to_thread(_query, admin.store, criteria)
    return web.json_response({"mta": admin.pod_name or "", "events": events})


def _query(store: Callable[[], EventStore], criteria: dict[str, Any]) -> list[dict[str, Any]]:
    return [event.to_json() for event in store().query(**criteria)]


def add_routes(app: web.Application, admin: Admin) -> None:
    app[ADMIN_KEY] = admin
    app.router.add_get(MESSAGES_PATH, messages)
