"""Events tier: the local event store and webhook outbox (``mta_relay.events.store``) and the signed
webhook sender (``mta_relay.events.webhooks``). Store and writer tests are pure Python (marker ``unit``;
a few start a child Python to kill it or to write from two processes); sender tests run a real HTTPS
receiver on loopback with a certificate from a test CA and check every request with the
``standardwebhooks`` package."""
