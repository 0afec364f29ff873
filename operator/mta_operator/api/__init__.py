"""The mta-operator.io/v1alpha1 API: typed models of Cluster, SendingDomain and SmtpCredential.

Parse a custom resource as the API server returns it with ``SmtpCredential.model_validate(obj)``; the models
apply the schema defaults and the same rules the CRDs enforce (except transition rules). The CRDs in crds/
are generated from these models: ``python -m mta_operator.api.crdgen``.
"""

from .base import API_VERSION, CATEGORY, GROUP, VERSION, Condition, ConditionStatus, ObjectMeta, Resource
from .cluster import (
    AuthMechanism,
    Cluster,
    ClusterSpec,
    ClusterStatus,
    DeliveryMode,
    RatePeriod,
    ShapingPeriod,
    SmarthostTls,
)
from .sending_domain import (
    DkimAlgorithm,
    DnsRecord,
    RecordPurpose,
    SendingDomain,
    SendingDomainSpec,
    SendingDomainStatus,
)
from .smtp_credential import (
    DEFAULT_GRACE_PERIOD,
    Authentication,
    DomainsMode,
    PasswordStatus,
    QuotaPeriod,
    Rotation,
    SmtpCredential,
    SmtpCredentialSpec,
    SmtpCredentialStatus,
)
from .strings import duration_seconds

KINDS: tuple[type[Resource], ...] = (Cluster, SendingDomain, SmtpCredential)

__all__ = [
    "API_VERSION", "CATEGORY", "DEFAULT_GRACE_PERIOD", "GROUP", "KINDS", "VERSION",
    "AuthMechanism", "Authentication", "Cluster", "ClusterSpec", "ClusterStatus", "Condition",
    "ConditionStatus", "DeliveryMode", "DkimAlgorithm", "DnsRecord", "DomainsMode", "ObjectMeta",
    "PasswordStatus", "QuotaPeriod", "RatePeriod", "RecordPurpose", "Resource", "Rotation", "SendingDomain",
    "SendingDomainSpec", "SendingDomainStatus", "ShapingPeriod", "SmarthostTls", "SmtpCredential",
    "SmtpCredentialSpec", "SmtpCredentialStatus", "duration_seconds",
]
