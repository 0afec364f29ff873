"""Delivery benchmark: accept → delivered to a sink, end to end, for the relay (smarthost to the sink) and
the Postfix peer (relayhost = the sink), on one machine in one run. ``python -m bench.delivery --help``."""
