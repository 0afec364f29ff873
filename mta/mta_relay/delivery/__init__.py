"""Delivery: from the spool to the next hop (smarthost or MX), one attempt at a time."""
