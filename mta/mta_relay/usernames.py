"""What an SMTP/HTTP username may be: 1-255 letters, digits and ``+=,.@_-``.

One definition for every place that checks it: the relay's config model, the operator's CRD schema (its
CEL rule and maxLength) and the tests. It lives in the relay because the operator may import the relay and
never the other way round. The characters are safe in logs, in a userinfo of an SMTP URL once
percent-encoded, and in SASL PLAIN/LOGIN; the length is what common clients and servers accept.
"""

from __future__ import annotations

import re

USERNAME_MAX = 255
USERNAME_SPECIALS = "+=,.@_-"  # "-" last: literal inside a character class
USERNAME_CHARS = f"A-Za-z0-9{USERNAME_SPECIALS}"
# Characters only (the length is a separate maxLength in the CRD); anchored for CEL's matches(), which is
# RE2 without implicit anchors, and free of backslashes so it sits in a CEL string literal as is.
USERNAME_RE = rf"^[{USERNAME_CHARS}]+$"
USERNAME_PATTERN = rf"^[{USERNAME_CHARS}]{{1,{USERNAME_MAX}}}$"  # characters and length in one
USERNAME_MESSAGE = f"username may contain only letters, digits and the characters {USERNAME_SPECIALS}"

_USERNAME = re.compile(rf"[{USERNAME_CHARS}]{{1,{USERNAME_MAX}}}")


def is_username(value: str) -> bool:
    """Characters and length; fullmatch, so a trailing newline is refused as RE2 refuses it."""
    return _USERNAME.fullmatch(value) is not None
