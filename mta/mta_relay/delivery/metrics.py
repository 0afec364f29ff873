"""Delivery metrics (prometheus-client, ``mta_`` prefix).

Queue depth by state, the oldest message's age and what delivery control holds back (messages by reason,
destinations suspended after throttle replies, queue suspensions in force) are read from the queue when
scraped, so they are never stale; counters and the latency histogram are updated as things happen. Labels
stay bounded: states, reasons, kinds and shaping rule names, never a domain or an address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

QUEUE_STATES = ("active", "ready", "held", "deferred", "suspended")
# Why messages wait although due: the MTA's rate limit, their destination's shaping (limits or a throttle
# suspension), a queue suspension. Together: mta_queue_messages' held and suspended states.
HELD_REASONS = ("ratelimit", "shaping", "suspended")
SUSPENSION_KINDS = ("domain", "credential")


@dataclass(frozen=True)
class QueueSnapshot:
    by_state: Mapping[str, int]  # every key of QUEUE_STATES
    oldest_age: float  # seconds; 0 when the queue is empty
    held_by_reason: Mapping[str, int] = field(default_factory=dict)  # keys of HELD_REASONS
    destinations_suspended: int = 0  # by shaping, after a throttle reply
    suspensions: Mapping[str, int] = field(default_factory=dict)  # in force, by SUSPENSION_KINDS


class _QueueCollector(Collector):
    def __init__(self, snapshot: Callable[[], QueueSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        depth = GaugeMetricFamily("mta_queue_messages",
                                  "Messages in the queue by state: active (being delivered), ready (due, "
                                  "waiting for a delivery slot), held (due, waiting for the rate limit), "
                                  "deferred (waiting to retry), suspended (held by a suspension until "
                                  "resumed)",
                                  labels=["state"])
        for state in QUEUE_STATES:
            depth.add_metric([state], snap.by_state.get(state, 0))
        yield depth
        yield GaugeMetricFamily("mta_queue_oldest_message_age_seconds",
                                "Age of the oldest message in the queue", value=snap.oldest_age)
        held = GaugeMetricFamily("mta_queue_held_messages",
                                 "Messages delivery control holds back, by reason: ratelimit (the MTA's "
                                 "rate limit), shaping (their destination's limits or throttle "
                                 "suspension), suspended (a queue suspension until resumed)",
                                 labels=["reason"])
        for reason in HELD_REASONS:
            held.add_metric([reason], snap.held_by_reason.get(reason, 0))
        yield held
        yield GaugeMetricFamily("mta_delivery_destinations_suspended",
                                "Destinations suspended by shaping after a throttle reply (421, 4.7.x)",
                                value=snap.destinations_suspended)
        suspensions = GaugeMetricFamily("mta_queue_suspensions",
                                        "Queue suspensions in force (kubectl mta queue suspend), by kind: "
                                        "domain, credential", labels=["kind"])
        for kind in SUSPENSION_KINDS:
            suspensions.add_metric([kind], snap.suspensions.get(kind, 0))
        yield suspensions


class LabelledCounter(Counter):
    """A counter whose child per label values is looked up in a dict of its own after the first time:
    ``labels`` converts and checks the values and takes a lock at every call, and delivery calls it for
    every recipient. Positional label values only (keywords go the usual way)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[Any, ...], Self] = {}

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Self:
        if labelkwargs:
            return super().labels(*labelvalues, **labelkwargs)
        child = self._children.get(labelvalues)
        if child is None:
            child = self._children[labelvalues] = super().labels(*labelvalues)
        return child

    def remove(self, *labelvalues: Any) -> None:
        self._children.clear()
        super().remove(*labelvalues)

    def clear(self) -> None:
        self._children.clear()
        super().clear()


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._registry = registry
        self.attempts = Counter("mta_delivery_attempts", "Delivery attempts (one per message and try)",
                                registry=registry)
        self.results = LabelledCounter("mta_delivery_results", "Recipient outcomes of delivery attempts",
                                       ["result", "reply_class"], registry=registry)
        self.latency = Histogram("mta_delivery_latency_seconds", "From acceptance to delivery at next hop",
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600,
                                          86400), registry=registry)
        self.bounces = LabelledCounter("mta_delivery_bounces", "Recipients failed permanently or expired",
                                       ["reason"], registry=registry)
        self.dsns = Counter("mta_dsn_generated", "Delivery status notifications queued to senders",
                            registry=registry)
        self.held = Counter("mta_ratelimit_held", "Times the rate limit made due mail wait",
                            registry=registry)
        self.throttle_suspensions = Counter("mta_delivery_throttle_suspensions",
                                            "Destination suspensions started after a throttle reply, by "
                                            "shaping rule", ["rule"], registry=registry)
        self.tls = Counter("mta_delivery_tls", "TLS outcome of each new connection to a next hop (and of "
                           "checks made before connecting): policy applied and result",
                           ["policy", "result"], registry=registry)
        self.quarantined = Counter("mta_queue_quarantined", "Spool entries quarantined as corrupt",
                                   registry=registry)
        self.events = LabelledCounter("mta_delivery_events", "Delivery events by type (Delivery, "
                                      "TransientFailure, Bounce, Expiration), bounce kind (hard, soft) and "
                                      "category", ["type", "kind", "category"], registry=registry)
        # Opt-in (events.credentialMetrics): one series per credential and type
        self.by_credential = LabelledCounter("mta_credential_delivery_events", "Delivery events by "
                                             "SmtpCredential username and type", ["credential", "type"],
                                             registry=registry)
        self._collector: _QueueCollector | None = None

    def watch_queue(self, snapshot: Callable[[], QueueSnapshot]) -> None:
        self._collector = _QueueCollector(snapshot)
        self._registry.register(self._collector)

    def unwatch_queue(self) -> None:
        if self._collector is not None:
            self._registry.unregister(self._collector)
            self._collector = None
