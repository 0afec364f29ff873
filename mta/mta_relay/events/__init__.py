"""Delivery events: one record per recipient and lifecycle step (``record``), classified bounces
(``classify``), the MTA's local queryable store and webhook outbox on its volume (``store``), and the
signed webhook sender (``webhooks``)."""
