"""mta-relay: the SMTP + HTTP submission relay every MTA pod runs."""
