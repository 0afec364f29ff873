"""The table of manifests the API must refuse or accept, shared by the model tests and the API server tests.

Each case is checked twice: by pydantic (pure, tests/api/test_api_models.py) and by the real API server
(tests/api/test_api_server_validation.py), so the Python mirror of every rule stays in step with the CRD.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from mta_operator.api import API_VERSION
from mta_relay.usernames import USERNAME_MAX, USERNAME_MESSAGE

Manifest = dict[str, Any]
DELETE = object()  # in an override: remove the key

BASE_SPECS: dict[str, Manifest] = {
    "Cluster": {"hostname": "smtp.example.com"},
    "SendingDomain": {"clusterRef": {"name": "main"}, "domain": "example.com"},
    "SmtpCredential": {
        "clusterRef": {"name": "main"},
        "domains": {"mode": "Specific", "names": ["example.com"]},
    },
}


def _merge(base: Manifest, over: Manifest) -> Manifest:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def manifest(kind: str, name: str, **spec: Any) -> Manifest:
    """A manifest of `kind`: a valid base spec with `spec` merged over it (DELETE removes a key)."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name},
        "spec": _merge(BASE_SPECS[kind], spec),
    }


def cred(name: str, **spec: Any) -> Manifest:
    return manifest("SmtpCredential", name, **spec)


def domain(name: str, **spec: Any) -> Manifest:
    return manifest("SendingDomain", name, **spec)


def cluster(name: str, **spec: Any) -> Manifest:
    return manifest("Cluster", name, **spec)


@dataclass(frozen=True)
class Invalid:
    id: str
    manifest: Manifest
    field: str  # the field the API server's message names, e.g. spec.allowedIPs[0]
    # (server-side apply reports duplicates in a set before validation, on the list itself)
    message: str  # text in the API server's message
    rule_message: bool = False  # message comes from our CEL rule, so pydantic gives the same text


IP_MSG = "must be an IPv4 or IPv6 address or CIDR"
MASK_MSG = "CIDR has bits set after its prefix length"
DNS_MSG = "must be a lower-case DNS name"
USER_MSG = USERNAME_MESSAGE


def _ip_case(id_: str, ip: str, message: str = IP_MSG) -> Invalid:
    return Invalid(id_, cred(f"ip-{id_}", allowedIPs=["192.0.2.1", ip]), "spec.allowedIPs[1]", message, True)


INVALID: tuple[Invalid, ...] = (
    # username
    Invalid("username-space", cred("u1", username="app user"), "spec.username", USER_MSG, True),
    Invalid("username-256", cred("u2", username="a" * (USERNAME_MAX + 1)), "spec.username", "Too long"),
    Invalid("username-empty", cred("u3", username=""), "spec.username", "at least 1 chars long"),
    Invalid("username-umlaut", cred("u4", username="jürgen"), "spec.username", USER_MSG, True),
    Invalid("username-slash", cred("u5", username="team/app"), "spec.username", USER_MSG, True),
    Invalid("username-colon", cred("u6", username="user:pass"), "spec.username", USER_MSG, True),
    # allowedIPs entries
    _ip_case("ipv4-octet-300", "300.1.1.1"),
    _ip_case("ipv4-prefix-33", "10.0.0.0/33"),
    _ip_case("ipv6-prefix-129", "2001:db8::/129"),
    _ip_case("not-an-ip", "not-an-ip"),
    _ip_case("ipv4-host-bits", "10.1.2.3/8", MASK_MSG),
    _ip_case("ipv6-host-bits", "2001:db8::1/32", MASK_MSG),
    _ip_case("ipv4-mapped-ipv6", "::ffff:192.0.2.1"),
    _ip_case("ipv6-zone", "fe80::1%eth0"),
    _ip_case("ipv4-leading-zero", "010.0.0.1"),
    _ip_case("netmask-form", "10.0.0.0/255.0.0.0"),
    _ip_case("empty-prefix", "10.0.0.0/"),
    Invalid("ip-too-long", cred("ip-long", allowedIPs=["1" * 50]), "spec.allowedIPs[0]", "Too long"),
    Invalid(
        "ip-duplicate",
        cred("ip-dup", allowedIPs=["192.0.2.1", "192.0.2.1"]),
        "spec.allowedIPs",
        "duplicate entries",
    ),
    Invalid(
        "ip-too-many",
        cred("ip-many", allowedIPs=[f"192.0.2.{i}" for i in range(65)]),
        "spec.allowedIPs",
        "Too many",
    ),
    # authentication
    Invalid(
        "sourceip-no-ips",
        cred("s1", authentication="SourceIP"),
        "spec.allowedIPs",
        "allowedIPs must list at least one address or CIDR when authentication is SourceIP",
        True,
    ),
    Invalid(
        "sourceip-any-v4",
        cred("s2", authentication="SourceIP", allowedIPs=["192.0.2.1", "0.0.0.0/0"]),
        "spec.allowedIPs",
        "may not contain 0.0.0.0/0 or ::/0 when authentication is SourceIP",
        True,
    ),
    Invalid(
        "sourceip-any-v6",
        cred("s3", authentication="SourceIP", allowedIPs=["::/0"]),
        "spec.allowedIPs",
        "may not contain 0.0.0.0/0 or ::/0 when authentication is SourceIP",
        True,
    ),
    Invalid(
        "sourceip-with-password",
        cred("s4", authentication="SourceIP", allowedIPs=["192.0.2.1"], passwordSecretRef={"name": "pw"}),
        "spec.passwordSecretRef",
        "passwordSecretRef is only allowed when authentication is Password",
        True,
    ),
    Invalid(
        "authentication-unknown",
        cred("s5", authentication="Token"),
        "spec.authentication",
        "Unsupported value",
    ),
    Invalid(
        "password-ref-no-name",
        cred("s6", passwordSecretRef={"key": "pw"}),
        "spec.passwordSecretRef.name",
        "Required value",
    ),
    # domains
    Invalid(
        "specific-no-names",
        cred("d1", domains={"mode": "Specific", "names": DELETE}),
        "spec.domains.names",
        "domains.names must list at least one domain when domains.mode is Specific",
        True,
    ),
    Invalid(
        "specific-empty-names",
        cred("d2", domains={"names": []}),
        "spec.domains.names",
        "domains.names must list at least one domain when domains.mode is Specific",
        True,
    ),
    Invalid(
        "anydomain-with-names",
        cred("d3", domains={"mode": "AnyDomain"}),
        "spec.domains.names",
        "domains.names is only allowed when domains.mode is Specific",
        True,
    ),
    Invalid(
        "domains-mode-unknown",
        cred("d4", domains={"mode": "Some", "names": DELETE}),
        "spec.domains.mode",
        "Unsupported value",
    ),
    Invalid("domains-missing", cred("d5", domains=DELETE), "spec.domains", "Required value"),
    Invalid(
        "domain-upper-case",
        cred("d6", domains={"names": ["Example.com"]}),
        "spec.domains.names[0]",
        DNS_MSG,
        True,
    ),
    Invalid(
        "domain-underscore",
        cred("d7", domains={"names": ["ex_ample.com"]}),
        "spec.domains.names[0]",
        DNS_MSG,
        True,
    ),
    Invalid(
        "domain-no-dot", cred("d8", domains={"names": ["localhost"]}), "spec.domains.names[0]", DNS_MSG, True
    ),
    Invalid(
        "domain-duplicate",
        cred("d9", domains={"names": ["example.com", "example.com"]}),
        "spec.domains.names",
        "duplicate entries",
    ),
    # quota, references
    Invalid(
        "quota-negative",
        cred("q1", quota={"messages": -1}),
        "spec.quota.messages",
        "greater than or equal to 0",
    ),
    Invalid(
        "quota-period-unknown",
        cred("q2", quota={"messages": 5, "period": "Week"}),
        "spec.quota.period",
        "Unsupported value",
    ),
    Invalid(
        "quota-no-messages", cred("q3", quota={"period": "Day"}), "spec.quota.messages", "Required value"
    ),
    Invalid("cluster-ref-missing", cred("r1", clusterRef=DELETE), "spec.clusterRef", "Required value"),
    Invalid(
        "cluster-ref-empty-name",
        cred("r2", clusterRef={"name": ""}),
        "spec.clusterRef.name",
        "at least 1 chars long",
    ),
    # SendingDomain
    Invalid("sd-upper-case", domain("sd1", domain="Example.COM"), "spec.domain", DNS_MSG, True),
    Invalid("sd-trailing-dot", domain("sd2", domain="example.com."), "spec.domain", DNS_MSG, True),
    Invalid("sd-label-64", domain("sd3", domain=f"{'a' * 64}.com"), "spec.domain", DNS_MSG, True),
    Invalid("sd-leading-hyphen", domain("sd4", domain="-mail.example.com"), "spec.domain", DNS_MSG, True),
    Invalid("sd-missing-domain", domain("sd5", domain=DELETE), "spec.domain", "Required value"),
    Invalid(
        "sd-dkim-algorithm",
        domain("sd6", dkim={"algorithm": "DSA"}),
        "spec.dkim.algorithm",
        "Unsupported value",
    ),
    Invalid(
        "sd-dkim-key-1024", domain("sd7", dkim={"keySize": 1024}), "spec.dkim.keySize", "Unsupported value"
    ),
    Invalid(
        "sd-dkim-selector",
        domain("sd8", dkim={"selector": "Mta_1"}),
        "spec.dkim.selector",
        "must be a lower-case DNS label",
        True,
    ),
    # Cluster
    Invalid("cl-hostname-upper", cluster("c1", hostname="SMTP.example.com"), "spec.hostname", DNS_MSG, True),
    Invalid("cl-hostname-missing", cluster("c2", hostname=DELETE), "spec.hostname", "Required value"),
    Invalid("cl-mtas-zero", cluster("c3", mtas=0), "spec.mtas", "greater than or equal to 1"),
    Invalid(
        "cl-port-zero", cluster("c4", smtp={"ports": [0]}), "spec.smtp.ports[0]", "greater than or equal to 1"
    ),
    Invalid(
        "cl-port-70000",
        cluster("c5", smtp={"ports": [25, 70000]}),
        "spec.smtp.ports[1]",
        "less than or equal to 55535",
    ),
    Invalid("cl-ports-empty", cluster("c6", smtp={"ports": []}), "spec.smtp.ports", "at least 1 items"),
    Invalid(
        "cl-message-size-tiny",
        cluster("c7", smtp={"maxMessageSize": 10}),
        "spec.smtp.maxMessageSize",
        "greater than or equal to 1024",
    ),
    Invalid(
        "cl-port-above-55535",
        cluster("c30", smtp={"ports": [587, 60000]}),
        "spec.smtp.ports[1]",
        "less than or equal to 55535",
    ),
    Invalid(
        "cl-port-8443",
        cluster("c31", smtp={"ports": [8443]}),
        "spec.smtp.ports[0]",
        "8443 is the Service's HTTPS port",
        True,
    ),
    Invalid(
        "cl-cram-md5-only",
        cluster("c32", smtp={"authMechanisms": ["CRAM-MD5"]}),
        "spec.smtp.authMechanisms",
        "authMechanisms must offer PLAIN or LOGIN",
        True,
    ),
    Invalid(
        "cram-md5-source-ip",
        cred("s30", authentication="SourceIP", allowedIPs=["192.0.2.1"], cramMd5=True),
        "spec.cramMd5",
        "cramMd5 is only allowed when authentication is Password",
        True,
    ),
    Invalid(
        "rotation-with-own-password",
        cred("s31", passwordSecretRef={"name": "pw"}, rotation={"requestedAt": "2026-01-02T03:04:05Z"}),
        "spec.rotation.requestedAt",
        "rotation.requestedAt is only for generated passwords",
        True,
    ),
    Invalid(
        "rotation-source-ip",
        cred("s32", authentication="SourceIP", allowedIPs=["192.0.2.1"],
             rotation={"requestedAt": "2026-01-02T03:04:05Z"}),
        "spec.rotation.requestedAt",
        "rotation.requestedAt is only for generated passwords",
        True,
    ),
    Invalid(
        "rotation-grace-period",
        cred("s33", rotation={"gracePeriod": "1d"}),
        "spec.rotation.gracePeriod",
        "should match",
    ),
    Invalid(
        "cl-auth-mechanism",
        cluster("c8", smtp={"authMechanisms": ["XOAUTH2"]}),
        "spec.smtp.authMechanisms[0]",
        "Unsupported value",
    ),
    Invalid(
        "cl-rate-zero",
        cluster("c9", rateLimit={"messages": 0}),
        "spec.rateLimit.messages",
        "greater than or equal to 1",
    ),
    Invalid(
        "cl-rate-negative",
        cluster("c10", rateLimit={"messages": -5}),
        "spec.rateLimit.messages",
        "greater than or equal to 1",
    ),
    Invalid(
        "cl-smarthost-missing",
        cluster("c11", delivery={"mode": "Smarthost"}),
        "spec.delivery.smarthost",
        "delivery.smarthost is required when delivery.mode is Smarthost",
        True,
    ),
    Invalid(
        "cl-smarthost-with-mx",
        cluster("c12", delivery={"smarthost": {"host": "relay.example.net"}}),
        "spec.delivery.smarthost",
        "delivery.smarthost is required when delivery.mode is Smarthost",
        True,
    ),
    Invalid(
        "cl-dane-without-resolver",
        cluster("c12a", delivery={"tlsPolicy": "Dane"}),
        "spec.delivery.dnssecResolver",
        "delivery.tlsPolicy Dane needs delivery.dnssecResolver",
        True,
    ),
    Invalid(
        "cl-smarthost-host",
        cluster("c13", delivery={"mode": "Smarthost", "smarthost": {"host": "relay!"}}),
        "spec.delivery.smarthost.host",
        "host must be a lower-case DNS name or an IP address",
        True,
    ),
    Invalid(
        "cl-tls-both",
        cluster("c14", tls={"secretName": "tls", "issuerRef": {"name": "le"}}),
        "spec.tls",
        "tls: set secretName or issuerRef, not both",
        True,
    ),
    Invalid(
        "cl-etp-clusterip",
        cluster("c15", service={"externalTrafficPolicy": "Local"}),
        "spec.service.externalTrafficPolicy",
        "needs service.type NodePort or LoadBalancer",
        True,
    ),
    Invalid(
        "cl-service-type",
        cluster("c16", service={"type": "ExternalName"}),
        "spec.service.type",
        "Unsupported value",
    ),
    Invalid(
        "cl-retry-age",
        cluster("c17", queue={"maxRetryAge": "5 days"}),
        "spec.queue.maxRetryAge",
        "should match",
    ),
    Invalid(
        "cl-queue-size",
        cluster("c18", queue={"storage": {"size": "lots"}}),
        "spec.queue.storage.size",
        "must be a Kubernetes quantity",
        True,
    ),
    Invalid(
        "ephemeral-with-storage-class",
        cluster("c19", queue={"storage": {"ephemeral": True, "storageClassName": "fast"}}),
        "spec.queue.storage",
        "storageClassName and ephemeral: true exclude each other",
        True,
    ),
    Invalid(
        "retry-intervals-out-of-order",
        cluster("c20", queue={"minRetryInterval": "2h", "maxRetryInterval": "30m"}),
        "spec.queue.minRetryInterval",
        "minRetryInterval must not be longer than queue.maxRetryInterval",
        True,
    ),
    Invalid(
        "implicit-tls-port-also-starttls",
        cluster("c22", smtp={"ports": [587, 465], "implicitTlsPorts": [465]}),
        "spec.smtp.implicitTlsPorts",
        "smtp.implicitTlsPorts and smtp.ports must not share a port",
        True,
    ),
    Invalid(
        "smtp-workers-over-the-spool-ranges",
        cluster("c23", smtp={"workers": 9}),
        "spec.smtp.workers",
        "should be less than or equal to 8",
    ),
    Invalid(
        "access-mode-unknown",
        cluster("c21", queue={"storage": {"accessModes": ["ReadWriteMany"]}}),
        "spec.queue.storage.accessModes[0]",
        "Unsupported value",
    ),
    Invalid(
        "suppression-class-typo",
        cluster("c40", suppression={"classes": ["InvalidRecipient", "InvalidRecipeint"]}),
        "spec.suppression.classes[1]",
        "Unsupported value",
    ),
    Invalid(
        "suppression-expire-too-short",
        cluster("c41", suppression={"expireAfter": "30s"}),
        "spec.suppression.expireAfter",
        "expireAfter must be at least 60s",
        True,
    ),
    Invalid(
        "suppression-expire-days",
        cluster("c42", suppression={"expireAfter": "30d"}),
        "spec.suppression.expireAfter",
        "should match",
    ),
    # delivery: routes and shaping
    Invalid(
        "route-no-domains",
        cluster("c60", delivery={"routes": [{"name": "r", "mode": "MX"}]}),
        "spec.delivery.routes[0]",
        "a route needs recipientDomains or senderDomains",
        True,
    ),
    Invalid(
        "route-smarthost-missing",
        cluster("c61", delivery={"routes": [{"name": "r", "recipientDomains": ["a.example"]}]}),
        "spec.delivery.routes[0].smarthosts",
        "route.smarthosts is required when the route's mode is Smarthost",
        True,
    ),
    Invalid(
        "route-names-unique",
        cluster("c62", delivery={"routes": [
            {"name": "r", "mode": "MX", "recipientDomains": ["a.example"]},
            {"name": "r", "mode": "MX", "recipientDomains": ["b.example"]}]}),
        "spec.delivery.routes",
        "delivery.routes: names must be unique",
        True,
    ),
    Invalid(
        "route-smarthost-is-hostname",
        cluster("c63", delivery={"routes": [{"name": "r", "recipientDomains": ["a.example"],
                                             "smarthosts": [{"host": "smtp.example.com"}]}]}),
        "spec.delivery",
        "a smarthost may not be the cluster itself",
        True,
    ),
    Invalid(
        "smarthost-is-hostname",
        cluster("c64", delivery={"mode": "Smarthost", "smarthost": {"host": "smtp.example.com"}}),
        "spec.delivery",
        "a smarthost may not be the cluster itself",
        True,
    ),
    Invalid(
        "shaping-rule-matches-nothing",
        cluster("c65", delivery={"shaping": {"rules": [{"name": "r", "maxConnections": 2}]}}),
        "spec.delivery.shaping.rules[0]",
        "a shaping rule needs domains or mxHosts",
        True,
    ),
    Invalid(
        "shaping-mx-host",
        cluster("c66", delivery={"shaping": {"rules": [{"name": "r", "mxHosts": ["*.google.com"]}]}}),
        "spec.delivery.shaping.rules[0].mxHosts[0]",
        "must be an MX host name",
        True,
    ),
    Invalid(
        "shaping-zero-connections",
        cluster("c67", delivery={"shaping": {"default": {"maxConnections": 0}}}),
        "spec.delivery.shaping.default.maxConnections",
        "greater than or equal to 1",
    ),
    Invalid(
        "shaping-suspension-order",
        cluster("c68", delivery={"shaping": {"throttleSuspension": {"first": "2h", "max": "1h"}}}),
        "spec.delivery.shaping.throttleSuspension.first",
        "shaping.throttleSuspension.first must not be longer than max",
        True,
    ),
    Invalid(
        "shaping-rule-names-unique",
        cluster("c69", delivery={"shaping": {"rules": [{"name": "r", "domains": ["a.example"]},
                                                       {"name": "r", "domains": ["b.example"]}]}}),
        "spec.delivery.shaping.rules",
        "shaping.rules: names must be unique",
        True,
    ),
)


@dataclass(frozen=True)
class Change:
    """An update the API server must refuse (transition rules: pydantic cannot see the old object)."""

    id: str
    before: Manifest
    after: Manifest
    field: str
    message: str


USERNAME_IMMUTABLE = "spec.username is immutable"
CHANGES: tuple[Change, ...] = (
    Change(
        "username-changed",
        cred("t1", username="app1"),
        cred("t1", username="app2"),
        "spec.username",
        USERNAME_IMMUTABLE,
    ),
    Change(
        "username-added", cred("t2"), cred("t2", username="someone-else"), "spec.username", USERNAME_IMMUTABLE
    ),
    Change("username-removed", cred("t3", username="app3"), cred("t3"), "spec.username", USERNAME_IMMUTABLE),
    Change(
        "cred-cluster-ref-changed",
        cred("t4"),
        cred("t4", clusterRef={"name": "other"}),
        "spec.clusterRef",
        "clusterRef is immutable",
    ),
    Change(
        "sd-cluster-ref-changed",
        domain("t5"),
        domain("t5", clusterRef={"name": "other"}),
        "spec.clusterRef",
        "clusterRef is immutable",
    ),
    Change(
        "queue-storage-size-changed",
        cluster("t10", queue={"storage": {"size": "1Gi"}}),
        cluster("t10", queue={"storage": {"size": "2Gi"}}),
        "spec.queue.storage",
        "queue.storage (the MTAs' volumes are made from it",
    ),
    Change(
        "queue-storage-class-set",
        cluster("t11"),
        cluster("t11", queue={"storage": {"storageClassName": "fast"}}),
        "spec.queue.storage",
        "is immutable",
    ),
    Change(
        "sd-domain-changed",
        domain("t6"),
        domain("t6", domain="example.org"),
        "spec.domain",
        "domain is immutable",
    ),
)

# Updates that look like the above but change nothing that matters: accepted.
ALLOWED_CHANGES: tuple[tuple[str, Manifest, Manifest], ...] = (
    ("username-spelled-out-as-name", cred("t7"), cred("t7", username="t7")),
    ("description-changed", cred("t8", description="a"), cred("t8", description="b")),
    ("sd-dkim-selector-changed", domain("t9"), domain("t9", dkim={"selector": "mta2"})),
    ("cluster-retry-and-mtas-changed", cluster("t12"), cluster("t12", mtas=5, queue={"maxRetryAge": "48h"})),
)

VALID: tuple[tuple[str, Manifest], ...] = (
    ("username-255", cred("v1", username="a" * (USERNAME_MAX - 5) + "+=,.@")),
    ("username-all-special", cred("v2", username="a+b=c,d.e@f_g-h")),
    ("username-only-special", cred("v3", username="+=,.@_-")),
    (
        "ipv6-and-cidrs",
        cred(
            "v4",
            allowedIPs=["2001:db8::1", "2001:db8::/32", "::1", "::1/128", "fe80::/10", "2001:DB8:1::/48"],
        ),
    ),
    (
        "ipv4-host-and-any",
        cred("v5", allowedIPs=["192.0.2.10", "198.51.100.0/24", "203.0.113.7/32", "0.0.0.0/0", "::/0"]),
    ),
    ("sourceip-loopback-v6", cred("v6", authentication="SourceIP", allowedIPs=["::1"])),
    ("sourceip-cidrs", cred("v7", authentication="SourceIP", allowedIPs=["10.0.0.0/8", "2001:db8::/32"])),
    ("all-cluster-domains", cred("v8", domains={"mode": "AllClusterDomains", "names": DELETE})),
    ("any-domain-empty-names", cred("v9", domains={"mode": "AnyDomain", "names": []})),
    ("quota-zero-unlimited", cred("v10", quota={"messages": 0})),
    ("allowed-ips-64", cred("v11", allowedIPs=[f"192.0.2.{i}" for i in range(64)])),
    ("sd-63-char-label-and-punycode", domain("v12", domain=f"{'a' * 63}.xn--bcher-kva.example")),
    ("sd-ed25519", domain("v13", dkim={"algorithm": "Ed25519", "enabled": False})),
    ("cl-minimal", cluster("v14")),
    ("cl-cram-md5-offered", cluster("v30", smtp={"authMechanisms": ["PLAIN", "CRAM-MD5"]})),
    ("cram-md5-password", cred("v31", cramMd5=True)),
    ("cl-suppression", cluster("v40", suppression={
        "enabled": False, "classes": ["InvalidRecipient", "BadDomain"], "expireAfter": "60s"})),
    ("cl-suppression-no-classes", cluster("v41", suppression={"classes": []})),
    ("cred-bypass-suppression-list", cred("v42", bypassSuppressionList=True)),
    (
        "cl-smarthost-ip",
        cluster(
            "v15",
            delivery={
                "mode": "Smarthost",
                "smarthost": {"host": "192.0.2.25", "port": 465, "tls": "Implicit"},
            },
        ),
    ),
    (
        "cl-routes-and-shaping",
        cluster(
            "v17",
            delivery={
                "mode": "MX",
                "routes": [
                    {"name": "partners", "recipientDomains": ["partner.example"], "smarthosts": [
                        {"host": "relay1.partner.example", "credentialsSecretRef": {"name": "partner-relay"}},
                        {"host": "192.0.2.26", "port": 2525, "tls": "Opportunistic"}]},
                    {"name": "news", "senderDomains": ["news.example.com"], "mode": "MX"},
                ],
                "shaping": {
                    "builtinTable": False,
                    "default": {"maxConnections": 4, "connectTimeout": "20s", "transactionTimeout": "5m"},
                    "rules": [
                        {"name": "google", "mxHosts": [".google.com", "aspmx.l.google.com"],
                         "maxConnections": 3, "messagesPerConnection": 40,
                         "rate": {"messages": 100, "period": "Minute"}},
                        {"name": "slow", "domains": ["slow.example"],
                         "rate": {"messages": 5, "period": "Hour"}},
                    ],
                    "throttleSuspension": {"first": "30s", "max": "2h"},
                },
            },
        ),
    ),
    (
        "cl-loadbalancer-local",
        cluster(
            "v16",
            service={"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
            tls={"secretName": "smtp-tls"},
            rateLimit={"messages": 1, "period": "Second"},
        ),
    ),
)

# allowedIPs entries and whether the Kubernetes CEL ip/cidr libraries (plus our host-bits rule) accept them.
IP_PARITY: tuple[tuple[str, bool], ...] = (
    ("192.0.2.1", True),
    ("10.0.0.0/8", True),
    ("2001:DB8::/32", True),
    ("2001:0db8::1", True),
    ("::", True),
    ("0.0.0.0/0", True),
    ("1.2.3.4/32", True),
    ("::1/128", True),
    ("10.1.2.3/8", False),
    ("2001:db8::1/32", False),
    ("::ffff:1.2.3.4", False),
    ("::ffff:1.2.3.0/120", False),
    ("fe80::1%eth0", False),
    ("010.0.0.1", False),
    ("10.0.0.0/08", False),
    ("1.2.3.4/+8", False),
    (" 1.2.3.4", False),
    ("1.2.3.4/", False),
    ("1.2.3", False),
    ("10.0.0.0/255.0.0.0", False),
)
