"""The Cluster's suppression list: recipients that bounced hard (or were added by hand) are refused at
RCPT on every MTA (``store``, ``bounces``, ``exchange``; docs/events.md, "Suppression list")."""
