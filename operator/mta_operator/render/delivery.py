"""Cluster.spec.delivery → the relay's ``delivery`` section (default route, routes, shaping), and the
policy that refuses a smarthost: one that is the cluster itself (a loop) or whose credentials Secret is
missing. Pure: the reconciler gathers which Secrets exist and the Service's address, then asks
``refusals``; ``delivery`` leaves the refused smarthosts out, and a route left without any holds its mail
in the queue (relay mode ``Hold``) rather than sending it elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mta_relay import config as rc

from mta_operator import naming
from mta_operator.api import Cluster, DeliveryMode, ShapingPeriod, SmarthostTls, duration_seconds
from mta_operator.api.cluster import ShapingLimits, Smarthost
from mta_operator.api.reasons import Reason

SMARTHOST_DIR = "smarthost"
# A route smarthost's Secret is published into smarthost-<Secret name>.
SMARTHOST_SECRET_PREFIX = "smarthost-"  # noqa: S105 - a directory prefix, not a secret
CREDENTIAL_KEYS = ("username", "password")
SMARTHOST_TLS: dict[SmarthostTls, str] = {
    SmarthostTls.REQUIRED: "STARTTLS", SmarthostTls.IMPLICIT: "Implicit",
    SmarthostTls.OPPORTUNISTIC: "Opportunistic"}
SHAPING_PERIOD_SECONDS = {ShapingPeriod.SECOND: 1, ShapingPeriod.MINUTE: 60, ShapingPeriod.HOUR: 3600}
CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class Refusal:
    """A smarthost left out of the settings: ``field`` is its path in the Cluster, for the condition."""

    field: str
    reason: Reason
    message: str


def smarthosts(cluster: Cluster) -> list[tuple[str, Smarthost]]:
    """(field path, smarthost) of the default smarthost and every route's."""
    spec = cluster.spec.delivery
    found = [("spec.delivery.smarthost", spec.smarthost)] if spec.smarthost is not None else []
    found += [(f"spec.delivery.routes[{i}].smarthosts[{j}]", host)
              for i, route in enumerate(spec.routes) for j, host in enumerate(route.smarthosts)]
    return found


def secret_dirs(cluster: Cluster) -> dict[str, str]:
    """Secret name → the config subdirectory the watcher publishes it into: the default smarthost's in
    ``smarthost`` (as always), each other one in ``smarthost-<name>``."""
    dirs: dict[str, str] = {}
    for path, host in smarthosts(cluster):
        ref = host.credentials_secret_ref
        if ref is not None and ref.name not in dirs:
            dirs[ref.name] = SMARTHOST_DIR if path == "spec.delivery.smarthost" \
                else f"{SMARTHOST_SECRET_PREFIX}{ref.name}"
    return dirs


def own_names(cluster: Cluster) -> set[str]:
    """Host names that reach this cluster's MTAs: spec.hostname and its Services' DNS names."""
    ns, name = cluster.metadata.namespace or "default", cluster.metadata.name
    names = {cluster.spec.hostname}
    for service in (naming.mta(name), naming.headless(name)):
        names |= {service, f"{service}.{ns}", f"{service}.{ns}.svc", f"{service}.{ns}.svc.{CLUSTER_DOMAIN}"}
    return names


def _is_own(host: str, names: set[str], headless_suffixes: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return host in names or host.endswith(headless_suffixes)  # a pod's name under the headless Service


def refusals(cluster: Cluster, secrets: Mapping[str, Iterable[str] | None],
             own_addresses: Iterable[str] = ()) -> list[Refusal]:
    """The smarthosts to leave out. ``secrets``: each referenced Secret's data keys (None: it does not
    exist); ``own_addresses``: IP addresses of the cluster's Services, as far as known."""
    ns, name = cluster.metadata.namespace or "default", cluster.metadata.name
    names = own_names(cluster) | set(own_addresses)
    headless = naming.headless(name)
    suffixes = (f".{headless}.{ns}.svc", f".{headless}.{ns}.svc.{CLUSTER_DOMAIN}")
    found: list[Refusal] = []
    for path, host in smarthosts(cluster):
        if _is_own(host.host, names, suffixes):
            found.append(Refusal(f"{path}.host", Reason.SMARTHOST_LOOP,
                                 f"{path}.host: {host.host} is this cluster itself; mail would loop"))
            continue
        ref = host.credentials_secret_ref
        if ref is None:
            continue
        keys = secrets.get(ref.name)
        missing = [k for k in CREDENTIAL_KEYS if keys is None or k not in set(keys)]
        if missing:
            what = "does not exist" if keys is None else f"has no key {' or '.join(missing)}"
            found.append(Refusal(f"{path}.credentialsSecretRef", Reason.SMARTHOST_SECRET_NOT_FOUND,
                                 f"{path}.credentialsSecretRef: Secret {ref.name!r} {what}"))
    return found


def _smarthost(host: Smarthost, subdir: str | None) -> rc.Smarthost:
    return rc.Smarthost(host=host.host, port=host.port, tls=SMARTHOST_TLS[host.tls],
                        username_file=f"{subdir}/username" if subdir else None,
                        password_file=f"{subdir}/password" if subdir else None)


def _limits(limits: ShapingLimits) -> dict[str, object]:
    rate = limits.rate
    return {"max_connections": limits.max_connections,
            "messages_per_connection": limits.messages_per_connection,
            "rate": rc.ShapingRate(messages=rate.messages, period_seconds=SHAPING_PERIOD_SECONDS[rate.period])
            if rate is not None else None,
            "connect_timeout_seconds": duration_seconds(limits.connect_timeout)
            if limits.connect_timeout else None,
            "transaction_timeout_seconds": duration_seconds(limits.transaction_timeout)
            if limits.transaction_timeout else None}


def shaping(cluster: Cluster) -> rc.Shaping:
    spec = cluster.spec.delivery.shaping
    return rc.Shaping(
        builtin=spec.builtin_table,
        default=rc.ShapingLimits.model_validate(_limits(spec.default)),
        rules=[rc.ShapingRule.model_validate({"name": r.name, "domains": list(r.domains),
                                              "mx_hosts": list(r.mx_hosts), **_limits(r)})
               for r in spec.shaping_rules],
        suspend_first_seconds=duration_seconds(spec.throttle_suspension.first),
        suspend_max_seconds=duration_seconds(spec.throttle_suspension.max))


def delivery(cluster: Cluster, refused: Iterable[Refusal] = ()) -> rc.Delivery:
    """The relay's delivery section, without the ``refused`` smarthosts."""
    spec = cluster.spec.delivery
    out = {r.field.rsplit(".", 1)[0] for r in refused}  # "spec.delivery.routes[0].smarthosts[1]"
    dirs = secret_dirs(cluster)

    def kept(path: str, host: Smarthost) -> rc.Smarthost | None:
        if path in out:
            return None
        ref = host.credentials_secret_ref
        return _smarthost(host, dirs[ref.name] if ref is not None else None)

    routes = []
    for i, route in enumerate(spec.routes):
        common = {"name": route.name, "recipient_domains": list(route.recipient_domains),
                  "sender_domains": list(route.sender_domains)}
        if route.mode != DeliveryMode.SMARTHOST:
            routes.append(rc.Route(mode="MX", **common))
            continue
        hosts = [h for j, host in enumerate(route.smarthosts)
                 if (h := kept(f"spec.delivery.routes[{i}].smarthosts[{j}]", host)) is not None]
        routes.append(rc.Route(mode="Smarthost" if hosts else "Hold", smarthosts=hosts,
                               **common))
    resolver = spec.dnssec_resolver
    tls = rc.DeliveryTls(policy=spec.tls_policy.value, dnssec_resolver=rc.DnssecResolver(
        nameservers=list(resolver.nameservers), port=resolver.port) if resolver is not None else None)
    default = rc.Delivery(routes=routes, shaping=shaping(cluster), tls=tls)
    if spec.mode != DeliveryMode.SMARTHOST or spec.smarthost is None:
        return default
    # The default smarthost's Secret is a required source of the watcher, as it always was: only a loop
    # leaves it out.
    looped = any(r.reason is Reason.SMARTHOST_LOOP and r.field.startswith("spec.delivery.smarthost.")
                 for r in refused)
    if looped:
        return default.model_copy(update={"mode": "Hold"})
    return default.model_copy(update={"mode": "Smarthost", "smarthost": _smarthost(
        spec.smarthost, SMARTHOST_DIR if spec.smarthost.credentials_secret_ref else None)})
