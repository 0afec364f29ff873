"""Local mode (``mta-operator local``): manifests from a directory rendered into a relay config directory
with the operator's own renderers (``manifests``), then served by the relay on loopback (``cli``)."""
