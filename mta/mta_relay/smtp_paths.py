"""MAIL FROM / RCPT TO path parsing, as aiosmtpd does it (the email package's angle-addr and addr-spec
parsers), with a fast path for the plain ``<local@domain>`` form nearly every client sends: the email
package takes ~50 µs per address, twice per message. The fast path only takes what the email package
would parse to the same address and rest (a property test holds them together); anything else — quoted
local parts, source routes, comments, address literals, non-ASCII — goes the slow way.
"""

from __future__ import annotations

import re
from email._header_value_parser import get_addr_spec, get_angle_addr

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# '<' dot-atom '@' hostname '>', then the end or one space before a parameter (not a comment or more space)
_PLAIN = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?: (?=[^\s(])|\Z)")


def parse_path(arg: str) -> tuple[str | None, str | None]:
    """(address, rest of the line): ("", "") for an empty argument, (None, None) when unparseable."""
    if not arg:
        return "", ""
    plain = _PLAIN.match(arg)
    if plain is not None:
        return plain.group(1), arg[plain.end():]
    parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
    try:
        address, rest = parse(arg)
        return address.addr_spec, rest
    except Exception:
        # HeaderParseError, and the parser's crashes on garbage (IndexError on "<", AttributeError on
        # "<a@[b>"): a pure parser that fails means an unparseable path, a syntax error for the client
        return None, None
