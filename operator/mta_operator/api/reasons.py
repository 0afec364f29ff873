"""Every condition type and reason the operator writes, each defined once: the registry users read.

A reason is what ``kubectl get -o yaml``, Events, Argo CD and Flux show, so it is part of the API. Each
``Reason`` carries where it appears (``Kind.ConditionType``; none: only an Event carries it), whether it is
terminal (``Ready=False`` with it needs a person: Argo CD reports Degraded, not Progressing) and a one-line
meaning. The Argo CD health check's terminal list and the reason tables in the docs are generated from
this module (``python -m mta_operator.api.healthgen``); a unit test fails on any reason literal written
elsewhere in the operator.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"
    TLS_READY = "TlsReady"
    SPOOL_PERSISTENT = "SpoolPersistent"
    QUEUE_HANDED_OFF = "QueueHandedOff"
    LEGACY_DEPLOYMENT_RETIRED = "LegacyDeploymentRetired"
    WEBHOOKS_READY = "WebhooksReady"
    DELIVERY_READY = "DeliveryReady"
    VERIFIED = "Verified"
    SUSPENDED = "Suspended"


class Reason(StrEnum):
    """A reason, with ``conditions`` (``Kind.Type`` it appears in), ``terminal`` and ``meaning``."""

    _value_: str
    conditions: tuple[str, ...]
    terminal: bool
    meaning: str

    def __new__(cls, value: str, conditions: str, terminal: bool, meaning: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.conditions = tuple(conditions.split())
        member.terminal = terminal
        member.meaning = meaning
        return member

    # Shared by the three kinds.
    RECONCILING = ("Reconciling", "Cluster.Ready SendingDomain.Ready SmtpCredential.Ready", False,
        "The first reconcile has not finished yet")
    CLUSTER_NOT_FOUND = ("ClusterNotFound", "SendingDomain.Ready SmtpCredential.Ready", False,
        "The Cluster of spec.clusterRef does not exist (yet)")
    SECRET_NOT_OWNED = ("SecretNotOwned", "Cluster.Ready Cluster.TlsReady SmtpCredential.Ready", True,
        "A Secret with the name the operator needs exists and is not the operator's (it never takes"
        " over others' objects): rename or delete it")

    # Cluster
    READY = ("Ready", "Cluster.Ready", False, "Every MTA is ready and nothing is being handed over")
    MTAS_NOT_READY = ("MtasNotReady", "Cluster.Ready", False,
        "Fewer MTAs are ready than spec.mtas; the message says why each one waits")
    SCALING_DOWN = ("ScalingDown", "Cluster.Ready", False, "Leaving MTAs are handing their queue over")
    CHILD_NOT_OWNED = ("ChildNotOwned", "Cluster.Ready", True,
        "An object the Cluster needs (StatefulSet, Service, ConfigMap, ...) exists under its name "
        "and is not the operator's: rename or delete it")
    TLS_SECRET_NOT_FOUND = ("TlsSecretNotFound", "Cluster.Ready Cluster.TlsReady", False,
        "The Secret of spec.tls.secretName does not exist (yet) or lacks tls.crt/tls.key")
    CERT_MANAGER_NOT_INSTALLED = ("CertManagerNotInstalled", "Cluster.Ready Cluster.TlsReady", False,
        "spec.tls.issuerRef is set and cert-manager's API is not served (yet)")
    CERTIFICATE_PENDING = ("CertificatePending", "Cluster.Ready Cluster.TlsReady", False,
        "cert-manager has not issued the serving certificate yet")
    USER_SECRET = ("UserSecret", "Cluster.TlsReady", False, "The certificate comes from spec.tls.secretName")
    CERT_MANAGER = ("CertManager", "Cluster.TlsReady", False,
        "The certificate was issued by cert-manager for spec.tls.issuerRef")
    OPERATOR_CA = ("OperatorCA", "Cluster.TlsReady", False,
        "The certificate comes from the operator-managed CA of this Cluster")
    STORAGE_CLASS_NOT_FOUND = ("StorageClassNotFound", "Cluster.Ready Cluster.SpoolPersistent", True,
        "spec.queue.storage.storageClassName names a StorageClass that does not exist; "
        "queue.storage is immutable, so create that class (or recreate the Cluster)")
    VOLUME_NOT_BOUND = ("VolumeNotBound", "Cluster.Ready Cluster.SpoolPersistent", False,
        "A spool PersistentVolumeClaim is not bound yet (the provisioner has not made it)")
    EPHEMERAL_SPOOL = ("EphemeralSpool", "Cluster.SpoolPersistent", False,
        "spec.queue.storage.ephemeral: queued mail is lost when its pod goes")
    VOLUME_PER_MTA = ("VolumePerMta", "Cluster.SpoolPersistent", False,
        "Each MTA's queue is on its own PersistentVolumeClaim, kept when the pod goes")
    HANDING_OFF = ("HandingOff", "Cluster.QueueHandedOff", False,
        "A scale-down is under way: leaving MTAs hand their queued mail to the MTAs that stay")
    HANDOFF_TIMED_OUT = ("HandoffTimedOut", "Cluster.QueueHandedOff", False,
        "A leaving MTA did not hand everything over within handoffTimeout: its volume is kept and "
        "listed in status.handoff.retainedVolumes")
    NOTHING_LEFT = ("NothingLeft", "Cluster.QueueHandedOff", False, "Every removed MTA handed its queue over")
    SCALED_DOWN = ("ScaledDown", "", False, "Event: the StatefulSet shrank after the hand-off")
    DELIVERING_QUEUE = ("DeliveringQueue", "Cluster.LegacyDeploymentRetired", False,
        "The previous release's Deployment takes no new mail and goes once its queue is delivered")
    RETIRED = ("Retired", "Cluster.LegacyDeploymentRetired", False,
        "The previous release's Deployment delivered its queue and was removed")
    LEGACY_DEPLOYMENT_RETIRED = ("LegacyDeploymentRetired", "", False,
        "Event: the previous release's Deployment was removed")
    NO_WEBHOOKS = ("NoWebhooks", "Cluster.WebhooksReady", False, "spec.events.webhooks is empty")
    WEBHOOKS_DELIVERING = ("WebhooksDelivering", "Cluster.WebhooksReady", False,
        "Every webhook's Secret is there and its receiver takes events; status.events says how many wait")
    WEBHOOK_SECRET_NOT_FOUND = ("WebhookSecretNotFound", "Cluster.WebhooksReady", False,
        "A webhook's secretRef names a Secret or key that does not exist (yet): that webhook is idle and "
        "its events wait (mail is not affected)")
    WEBHOOK_BACKLOG = ("WebhookBacklog", "Cluster.WebhooksReady", False,
        "A webhook's receiver has not taken events for a while; they wait on the MTAs' volumes up to "
        "spec.events.maxPendingEvents, past which the oldest are dropped (status.events counts them)")
    ROUTES_ACCEPTED = ("RoutesAccepted", "Cluster.DeliveryReady", False,
        "Every smarthost of spec.delivery (default and routes) is in the MTAs' settings")
    SMARTHOST_LOOP = ("SmarthostLoop", "Cluster.Ready Cluster.DeliveryReady", True,
        "A smarthost is this cluster itself (its hostname, Service or an address of it): it is left out "
        "and its route holds mail in the queue until the field the message names is fixed")
    SMARTHOST_SECRET_NOT_FOUND = ("SmarthostSecretNotFound", "Cluster.DeliveryReady", False,
        "A smarthost's credentialsSecretRef names a Secret that does not exist (yet) or lacks username or "
        "password: a route's smarthost is left out until it does (its route holds mail if none is left)")

    # SendingDomain
    RECONCILED = ("Reconciled", "SendingDomain.Ready", False,
        "The domain signs for its Cluster; status.dnsRecords lists what to publish")
    DKIM_SECRET_NOT_OWNED = ("DkimSecretNotOwned", "SendingDomain.Ready", True,
        "The DKIM key Secret's name is taken by a Secret the operator does not own")
    DKIM_KEY_UNREADABLE = ("DkimKeyUnreadable", "SendingDomain.Ready", True,
        "The DKIM key Secret holds no readable RSA or Ed25519 key: delete it for a new key")
    DKIM_KEY_MISMATCH = ("DkimKeyMismatch", "SendingDomain.Ready", True,
        "The DKIM key Secret's key does not match spec.dkim; the operator never replaces a key "
        "silently: delete the Secret for a new key")
    NOT_CHECKED = ("NotChecked", "SendingDomain.Verified", False, "The DNS records were not checked yet")
    RECORDS_FOUND = ("RecordsFound", "SendingDomain.Verified", False, "Every DNS record is published")
    RECORDS_MISSING = ("RecordsMissing", "SendingDomain.Verified", False,
        "Some DNS records are not published (yet); the message names them")
    VERIFIED = ("Verified", "", False, "Event: the DNS records became published")
    NOT_VERIFIED = ("NotVerified", "", False, "Event: DNS records went missing")

    # SmtpCredential
    SERVING = ("Serving", "SmtpCredential.Ready", False,
        "The credential is in its Cluster's credential table")
    USERNAME_CONFLICT = ("UsernameConflict", "SmtpCredential.Ready", True,
        "Another SmtpCredential of the same Cluster claimed the username first: pick another "
        "spec.username")
    PASSWORD_SECRET_NOT_FOUND = ("PasswordSecretNotFound", "SmtpCredential.Ready", False,
        "The passwordSecretRef Secret or its key does not exist (yet)")
    SUSPENDED = ("Suspended", "SmtpCredential.Ready SmtpCredential.Suspended", False,
        "spec.suspended: the credential is in the table and every MTA refuses it (525 5.7.13); Ready "
        "stays True because the suspension is the state asked for")
    NOT_SUSPENDED = ("NotSuspended", "SmtpCredential.Suspended", False,
        "spec.suspended is false: the MTAs accept the credential")
    PASSWORD_ROTATED = ("PasswordRotated", "", False,
        "Event: a new password is in the connection Secret (or a passwordSecretRef change was seen); the "
        "replaced one works until the expiry in status.passwords")
    PASSWORDS_RETIRED = ("PasswordsRetired", "", False,
        "Event: replaced passwords were retired (rotation.retireRequestedAt) or expired")
    CRAM_MD5_NOT_OFFERED = ("CramMd5NotOffered", "SmtpCredential.Ready", True,
        "spec.cramMd5 on a Cluster whose smtp.authMechanisms lacks CRAM-MD5: add it there or drop "
        "cramMd5 (the credential still works with the other mechanisms)")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds whose conditions carry this reason, in first-seen order."""
        return tuple(dict.fromkeys(where.split(".")[0] for where in self.conditions))

    @classmethod
    def parse(cls, text: str) -> Reason | None:
        """The reason named ``text``, or None for one this release does not write."""
        return next((reason for reason in cls if reason.value == text), None)


def terminal() -> list[Reason]:
    """The reasons of ``Ready=False`` that need a person, in registry order."""
    return [reason for reason in Reason if reason.terminal]
