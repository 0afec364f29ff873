"""The reconcilers, one module per kind (``cluster``, ``domain``, ``credential``) and per aspect they share
(``tls``, ``table``, ``scale_down``), with the in-memory state they read (``index``, ``table.Table``). They
do the I/O around the pure renderers of ``mta_operator.render`` and ask the core for nothing beyond the
``Protocol`` in ``context``; they never import ``mta_operator.controller``."""
