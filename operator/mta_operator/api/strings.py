"""Constrained string types shared by the kinds: DNS names, IPs/CIDRs, usernames, quantities.

Each is a plain ``str`` for Python code; the annotations carry the CRD schema and its Python mirror.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from kubernetes.utils.quantity import parse_quantity
from mta_relay.config import validate_url
from mta_relay.usernames import USERNAME_MAX, USERNAME_MESSAGE, USERNAME_RE
from pydantic import Field

from .rules import Rule

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_NAME_RE = rf"^{_LABEL}([.]{_LABEL})+$"  # [.] not \. : no escapes in the CEL literal
DNS_LABEL_RE = rf"^{_LABEL}$"
# IPv6 with an embedded IPv4 tail and a /128 prefix is the longest valid form: 45 + 4 characters.
IP_OR_CIDR_MAX = 49


def _full(pattern: str) -> re.Pattern[str]:
    # CEL matches() is RE2 with explicit anchors; fullmatch also refuses a trailing newline, as RE2 does.
    return re.compile(pattern.removeprefix("^").removesuffix("$"))


_DNS_NAME, _DNS_LABEL, _USERNAME = _full(DNS_NAME_RE), _full(DNS_LABEL_RE), _full(USERNAME_RE)


def is_dns_name(value: str) -> bool:
    return _DNS_NAME.fullmatch(value) is not None


def is_dns_label(value: str) -> bool:
    return _DNS_LABEL.fullmatch(value) is not None


def is_https_url(value: str) -> bool:
    """An https:// URL the relay takes as a webhook's (what the CEL rule on webhook URLs checks)."""
    return validate_url(value) is None and value.lower().startswith("https://")


def has_username_chars(value: str) -> bool:
    """The CEL rule's mirror: the characters only (the length is the field's maxLength)."""
    return _USERNAME.fullmatch(value) is not None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse like the Kubernetes CEL ``ip()``: no zones, no IPv4-mapped IPv6, no leading zeros."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and (addr.scope_id is not None or addr.ipv4_mapped):
        return None
    return addr


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """Parse like the Kubernetes CEL ``cidr()`` (Go netip.ParsePrefix); host bits may be set."""
    addr_text, slash, bits = text.partition("/")
    # Go accepts only a decimal prefix length without sign or leading zero; Python also takes netmasks.
    if not slash or not bits.isdigit() or not bits.isascii() or (len(bits) > 1 and bits[0] == "0"):
        return None
    addr = _ip(addr_text)
    if addr is None or int(bits) > addr.max_prefixlen:
        return None
    return ipaddress.ip_network(f"{addr}/{bits}", strict=False)


def is_ip(text: str) -> bool:
    return _ip(text) is not None


def is_ip_or_cidr(text: str) -> bool:
    return is_ip(text) or parse_cidr(text) is not None


def is_masked(text: str) -> bool:
    network = parse_cidr(text)
    return network is None or str(network.network_address) == str(_ip(text.partition("/")[0]))


def is_quantity(text: str) -> bool:
    try:
        parse_quantity(text)
    except ValueError:
        return False
    return True


DnsName = Annotated[
    str,
    Field(min_length=1, max_length=253),
    Rule(f"self.matches('{DNS_NAME_RE}')",
         "must be a lower-case DNS name with at least one dot, such as mail.example.com", is_dns_name),
]
DnsLabel = Annotated[
    str,
    Field(min_length=1, max_length=63),
    Rule(f"self.matches('{DNS_LABEL_RE}')",
         "must be a lower-case DNS label (letters, digits, '-'), such as mta1", is_dns_label),
]
Username = Annotated[
    str,
    Field(min_length=1, max_length=USERNAME_MAX),
    Rule(f"self.matches('{USERNAME_RE}')", USERNAME_MESSAGE, has_username_chars),
]
IPOrCIDR = Annotated[
    str,
    Field(min_length=1, max_length=IP_OR_CIDR_MAX),
    Rule("isIP(self) || isCIDR(self)",
         "must be an IPv4 or IPv6 address or CIDR, such as 192.0.2.10, 198.51.100.0/24, 2001:db8::/32 or ::1",
         is_ip_or_cidr),
    # The CEL cidr() library accepts host bits after the prefix (10.1.2.3/8); a typo we refuse.
    Rule("!isCIDR(self) || cidr(self) == cidr(self).masked()",
         "CIDR has bits set after its prefix length: write the network address, such as 10.0.0.0/8",
         is_masked),
]
Quantity = Annotated[
    str,
    Field(min_length=1, max_length=64),
    Rule("isQuantity(self)", "must be a Kubernetes quantity, such as 512Mi or 2Gi", is_quantity),
]
Duration = Annotated[
    str,
    Field(pattern=r"^[1-9][0-9]*(s|m|h)$", max_length=16,
          description="A positive whole number of seconds, minutes or hours, such as 90m or 120h."),
]


def duration_seconds(text: str) -> int:
    """Seconds in a ``Duration`` string (``90m`` -> 5400)."""
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]
