"""Key material and the DNS checks around it, pure or self-contained, with no API access: DKIM key pairs
(``dkim``), the operator-managed CA and serving certificates (``managed_tls``), TXT lookups
(``dns_check``). The reconcilers store what these produce in Secrets."""
