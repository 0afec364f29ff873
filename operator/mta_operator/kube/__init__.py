"""Talking to the Kubernetes API: the counted, synchronous REST client (``client``) and server-side apply
with its ownership check and per-process cache (``apply``)."""
