"""One /metrics for the whole pod: the first process's exposition, with the series every serving process
counts for itself (SMTP sessions, acceptances, refusals, AUTH failures, spool writes) summed over the
processes. Everything else (readiness, queue depth, the spool's filesystem, the certificate, reloads) is
the first process's alone. A serving process that was restarted starts its counters again at zero: the
sum then drops, which Prometheus reads as a counter reset, as after a pod restart."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

SUMMED = frozenset({
    "mta_messages_accepted", "mta_messages_rejected", "mta_auth_failures", "mta_smtp_sessions",
    "mta_smtp_connections_refused", "mta_spool_fsyncs", "mta_spool_entries_written",
})
_CREATED = "_created"

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def _key(sample: Sample) -> SampleKey:
    return sample.name, tuple(sorted(sample.labels.items()))


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merged(own: bytes, others: Iterable[str]) -> bytes:
    """``own``: the first process's exposition; ``others``: each serving process's (summed families only
    are read from them)."""
    extra: dict[str, dict[SampleKey, Sample]] = {}
    for text in others:
        for family in text_string_to_metric_families(text):
            if family.name not in SUMMED:
                continue
            found = extra.setdefault(family.name, {})
            for sample in family.samples:
                key = _key(sample)
                known = found.get(key)
                if known is None:
                    found[key] = sample
                elif sample.name.endswith(_CREATED):
                    found[key] = known._replace(value=min(known.value, sample.value))
                else:
                    found[key] = known._replace(value=known.value + sample.value)
    families = list(text_string_to_metric_families(own.decode()))
    for family in families:
        theirs = extra.get(family.name)
        if not theirs:
            continue
        samples = []
        for sample in family.samples:
            other = theirs.pop(_key(sample), None)
            if other is None:
                samples.append(sample)
            elif sample.name.endswith(_CREATED):
                samples.append(sample._replace(value=min(sample.value, other.value)))
            else:
                samples.append(sample._replace(value=sample.value + other.value))
        family.samples = samples + list(theirs.values())  # label sets only another process has seen
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)
