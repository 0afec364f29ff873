"""Several SMTP serving processes per MTA: the first process (``mta-relay`` itself) serves SMTP, HTTP and
everything the pod shares; the others (``workers.process``) serve SMTP on the same listening sockets,
inherited from it. ``count`` sizes them, ``protocol`` is what they say to each other, ``pool`` is the
first process's side, ``ledger`` the quota as a serving process sees it, ``metrics`` the one /metrics."""
