"""The operator's core, in the manner of a client-go controller: intake of watch events into the index
(``controller``), a deduplicating work queue (``workqueue``), the start-up listing and periodic resync
(``startup``), status writes (``status_write``) and leader election (``leader``). It hands each job to
``mta_operator.reconcile``, which sees it only through ``reconcile.context.Context``."""
