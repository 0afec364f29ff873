"""The operator's Prometheus metrics (``mta_operator_`` prefix), served on ``--metrics-port``.

Few on purpose: whether this replica is the one that reconciles (the chart's "operator down" alert asks
that some replica leads), and the client library's process metrics. The MTAs' own figures are the
relay's (``mta_relay.metrics``), scraped from the pods."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.process_collector import ProcessCollector


class OperatorMetrics:
    def __init__(self, leading: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_* (CPU, memory, start time, open fds)
        self.leader = Gauge("mta_operator_leader", "1 when this replica holds the leader Lease and "
                            "reconciles (always 1 when run without leader election)", registry=self.registry)
        # read at scrape time: the elector's flag is the truth, no second copy to keep in step
        self.leader.set_function(lambda: 1.0 if leading() else 0.0)

    def serve(self, port: int, address: str) -> None:
        """Plain HTTP in a daemon thread (prometheus-client's server): the figures carry no secrets."""
        start_http_server(port, addr=address, registry=self.registry)
