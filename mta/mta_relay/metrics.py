"""Prometheus metrics (``mta_`` prefix). Labels are bounded: reply reasons, ports, mechanisms — never
usernames or addresses."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter("mta_messages_accepted", "Messages accepted into the spool",
                                ["source"], registry=r)
        self.rejected = Counter("mta_messages_rejected", "Transactions refused, by reason",
                                ["source", "reason"], registry=r)
        self.auth_failures = Counter("mta_auth_failures", "Failed authentications, by reason",
                                     ["reason"], registry=r)
        self.sessions = Gauge("mta_smtp_sessions", "Open SMTP sessions", registry=r)
        self.connections_refused = Counter("mta_smtp_connections_refused", "Connections refused at connect",
                                           ["reason"], registry=r)
        self.queue_depth = Gauge("mta_queue_depth", "Entries in the spool", registry=r)
        self.spool_fsyncs = Gauge("mta_spool_fsyncs", "fsync calls made by the spool since start", registry=r)
        self.spool_writes = Gauge("mta_spool_entries_written", "Entries written since start", registry=r)
        self.config_reloads = Counter("mta_config_reloads", "Config reload attempts, by result",
                                      ["result"], registry=r)
        self.ready = Gauge("mta_ready", "1 when /readyz answers 200", registry=r)
        self.suppressions = Gauge("mta_suppression_list_entries",
                                  "Addresses in force on the suppression list (this MTA's copy)", registry=r)
