"""Events tier: bounce classification against a real-world reply corpus (tests/data/bounce_corpus.tsv),
the local event store and webhook outbox (``mta_relay.events.store``) and the signed webhook sender
(``mta_relay.events.webhooks``). Classification, store and writer tests are pure Python (marker
``unit``; a few start a child Python to kill it or to write from two processes); sender tests run a real
HTTPS receiver on loopback with a certificate from a test CA and check every request with the
``standardwebhooks`` package."""
