"""The MAIL/RCPT path parser's fast path must agree with the email package's parsers (what aiosmtpd
uses) on every input: same address, same rest of the line, same refusals. Where the email package
crashes on garbage (IndexError, AttributeError), the path is refused, never an exception."""

from __future__ import annotations

from collections.abc import Callable
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from mta_relay.smtp_paths import parse_path

ODD = "<>@.+-_ ()\"[]:;,\\\t=!#$%&'*/?^`{|}~é\x00"
ATOM = st.text("abcXYZ019" + "!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=6)
PIECE = st.one_of(ATOM, st.text(ODD, min_size=1, max_size=3))


def reference(arg: str) -> tuple[str | None, str | None]:
    if not arg:
        return "", ""
    parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
    try:
        address, rest = parse(arg)
        return address.addr_spec, rest
    except (HeaderParseError, IndexError, AttributeError):
        return None, None


def outcome(parser: Callable[[str], tuple[str | None, str | None]], arg: str) -> object:
    """The result, or the type of what it raised (the email package crashes on some garbage)."""
    try:
        return parser(arg)
    except Exception as error:
        return type(error)


@st.composite
def near_plain(draw: st.DrawFn) -> str:
    """Mostly '<local@domain> PARAMS' with odd characters spliced in, so both paths get exercised."""
    local = ".".join(draw(st.lists(ATOM, min_size=1, max_size=3)))
    domain = ".".join(draw(st.lists(st.text("ab-9", min_size=1, max_size=4), min_size=1, max_size=3)))
    tail = draw(st.sampled_from(["", " SIZE=100", "  BODY=8BITMIME", " (c) SIZE=1", "x", " ", "\tSIZE=1"]))
    text = f"<{local}@{domain}>{tail}"
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(PIECE) + text[at:]
    return text


@pytest.mark.parametrize("arg", ["<bench@example.com> SIZE=100", "<a.b+c@x.y>", "<A@B.COM>",
                                 "<@a:x@b>", '<"x@e"@evil.com>', "x@y.com SIZE=1", "<a@[1.2.3.4]>",
                                 "<a@b.>", "<>", "<a@b> (c) SIZE=1", "<a@b>  SIZE=1", "<a..b@c>", "",
                                 "<", " <", '"'])
def test_known_forms_match_the_email_package(arg: str) -> None:
    assert outcome(parse_path, arg) == outcome(reference, arg)


@pytest.mark.parametrize("arg", ["<", " <", '"', "<a@", "<a@[b>"])
def test_garbage_that_crashes_the_email_package_is_refused(arg: str) -> None:
    assert parse_path(arg) == (None, None)


@given(st.one_of(near_plain(), st.text(ODD + "abc", max_size=30)))
@example("<x%evil.com@example.com>")
@example("<a@b> (")
@example("/@[")
def test_fast_path_agrees_with_the_email_package(arg: str) -> None:
    assert outcome(parse_path, arg) == outcome(reference, arg)
