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
        self.serving_processes = Gauge("mta_smtp_serving_processes",
                                       "SMTP serving processes running in the pod (workers)", registry=r)
        self.suppressions = Gauge("mta_suppression_list_entries",
                                  "Addresses in force on the suppression list (this MTA's copy)", registry=r)
        # The spool's filesystem as statvfs sees it (the claim's volume): readiness already needs room for one
        # full-size message; these let an alert warn well before that point.
        self.spool_avail = Gauge("mta_spool_filesystem_avail_bytes",
                                 "Bytes the spool's filesystem has free for the relay", registry=r)
        self.spool_size = Gauge("mta_spool_filesystem_size_bytes", "Size of the spool's filesystem in bytes",
                                registry=r)
        # The serving certificate (SMTP STARTTLS, implicit TLS and HTTPS share it) in force, read each time a
        # config generation is installed, so a renewal shows within a reload.
        self.certificate_expiry = Gauge("mta_tls_certificate_expiry_timestamp_seconds",
                                        "notAfter of the TLS certificate in force, as a Unix timestamp",
                                        registry=r)
