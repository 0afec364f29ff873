"""mta-operator: the kopf operator that reconciles Cluster, SendingDomain and SmtpCredential."""
