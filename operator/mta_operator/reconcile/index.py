"""What the operator knows in memory, fed by watch events: the custom resources, username claims, DKIM
keys, Ready MTA counts, peer tokens, and the caches that let an unchanged object cost no API calls."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mta_operator.api import Cluster, DkimAlgorithm, SendingDomain, SmtpCredential

if TYPE_CHECKING:
    from .usage import UsageState

Key = tuple[str, str]  # namespace, name


@dataclass
class DkimState:
    """A SendingDomain's key as stored in its Secret (algorithm of the stored key, not of the spec)."""

    pem: str
    algorithm: DkimAlgorithm


class CompactCreds(MutableMapping[Key, SmtpCredential]):
    """SmtpCredentials kept as compact JSON (about 0.6 KB each instead of about 6 KB as models: 10,000 of
    them are the operator's largest state), parsed again when a reconcile needs one."""

    def __init__(self) -> None:
        self._json: dict[Key, bytes] = {}
        self.generation: dict[Key, int | None] = {}

    def __getitem__(self, key: Key) -> SmtpCredential:
        return SmtpCredential.model_validate_json(self._json[key])

    def __setitem__(self, key: Key, cred: SmtpCredential) -> None:
        self._json[key] = cred.model_dump_json(exclude_defaults=True).encode()
        self.generation[key] = cred.metadata.generation

    def __delitem__(self, key: Key) -> None:
        del self._json[key]
        del self.generation[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)


# owner UIDs, decoded data, annotations of ours
Connection = tuple[set[str], dict[str, str], dict[str, str]]


@dataclass(frozen=True)
class PendingRotation:
    request: str  # the spec.rotation.requestedAt it answers
    password: str = field(repr=False)
    verifier: str
    created: str
    handout_at: dt.datetime | None = None  # set once the table accepting it is written


@dataclass
class Index:
    clusters: dict[Key, Cluster] = field(default_factory=dict)
    domains: dict[Key, SendingDomain] = field(default_factory=dict)
    creds: CompactCreds = field(default_factory=CompactCreds)
    dkim: dict[Key, DkimState] = field(default_factory=dict)
    ready_mtas: dict[Key, int] = field(default_factory=dict)
    # (cluster, Secret name) → the peer and admin tokens as read or generated; never logged
    tokens: dict[tuple[Key, str], str] = field(default_factory=dict)
    mta_problems: dict[Key, str] = field(default_factory=dict)  # why MTAs are not ready, as they said
    usage: dict[Key, UsageState] = field(default_factory=dict)  # per Cluster: the usage poll (``usage``)
    # Connection Secrets by (namespace, name): owner UIDs, decoded data and the operator's annotations
    # (naming.PASSWORD_CREATED, ...), as last read or written.
    connections: dict[Key, Connection] = field(default_factory=dict)
    # Rotations under way, by SmtpCredential: the new password waits here (memory only) until the table
    # that accepts it is written, and only then goes to the connection Secret, so an app never holds a
    # password the MTAs do not know yet. Lost with the process: the request is then answered afresh.
    rotations: dict[Key, PendingRotation] = field(default_factory=dict)
    unknown_connections: set[Key] = field(default_factory=set)  # seen to exist (409) but not read yet
    _cred_cluster: dict[Key, Key] = field(default_factory=dict)
    _by_cluster: dict[Key, set[Key]] = field(default_factory=lambda: defaultdict(set))
    _claims: dict[tuple[Key, str], dict[Key, tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(dict))

    @staticmethod
    def key(obj: Any) -> Key:
        return obj.metadata.namespace or "", obj.metadata.name

    def cluster_of(self, obj: SendingDomain | SmtpCredential) -> Key:
        return obj.metadata.namespace or "", obj.spec.cluster_ref.name

    def put_cred(self, cred: SmtpCredential, created: str) -> None:
        key = self.key(cred)
        ck = self.cluster_of(cred)
        self.creds[key] = cred
        self._cred_cluster[key] = ck
        self._by_cluster[ck].add(key)
        self._claims[(ck, cred.effective_username)][key] = (created, cred.metadata.name)

    def drop_cred(self, key: Key) -> Key | None:
        """Forget a deleted credential; returns its cluster key."""
        cred = self.creds.pop(key, None)
        ck = self._cred_cluster.pop(key, None)
        if ck is not None:
            self._by_cluster[ck].discard(key)
        if cred is not None and ck is not None:
            claims = self._claims.get((ck, cred.effective_username), {})
            claims.pop(key, None)
            if not claims:
                self._claims.pop((ck, cred.effective_username), None)
        return ck

    def claimants(self, ck: Key, username: str) -> list[Key]:
        return list(self._claims.get((ck, username), {}))

    def winner(self, ck: Key, username: str) -> Key | None:
        """The oldest claimant of a username in a cluster owns it (ties: by name); the rest conflict."""
        claims = self._claims.get((ck, username))
        return min(claims, key=lambda k: claims[k]) if claims else None

    def creds_of(self, ck: Key) -> list[Key]:
        return list(self._by_cluster.get(ck, ()))

    def domains_of(self, ck: Key) -> list[Key]:
        return [k for k, d in self.domains.items() if self.cluster_of(d) == ck]
