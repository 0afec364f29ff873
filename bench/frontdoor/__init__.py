"""Front-door benchmark: SMTP submission (STARTTLS + AUTH PLAIN + 1 KiB) against the relay, Postfix and a
bare aiosmtpd ceiling, on one machine in one run. ``python -m bench.frontdoor --help``."""
