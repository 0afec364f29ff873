"""The HTTP injection request — KumoMTA's ``InjectV1Request`` — and the messages it becomes. Pure.

Every field KumoMTA documents either works as it documents it or is refused with ``BadRequest``, which
names the field as a path (``recipients[3].email``, ``content.headers.Received``); unknown fields are
refused too. The fields, what they do here and what is refused are tabled in docs/relay.md ("HTTP"). In
short: ``content`` is a whole RFC 5322 message (a string) or an object to build one from; both are
templates (``mta_relay.templates``), rendered once per recipient with the request's ``substitutions``,
then ``email``, ``name``, ``to_header``, then the recipient's own ``substitutions``. Two extensions kept
from before: a recipient (and ``from``/``reply_to``) may be a plain address string, and an attachment's
``content_type`` defaults to ``application/octet-stream``.

``prepare`` checks and compiles a request once (``BadRequest`` = 400); ``outcomes`` then yields, recipient
by recipient, either a failure (that recipient goes into ``failed_recipients``, as in KumoMTA, with the
SMTP reply when there is one) or a batch to spool: recipients in a row whose rendered message is the same
share one spool entry (one transaction) of at most ``max_recipients``; built content has a ``To`` per
recipient, so it is one entry per recipient, as in KumoMTA. One message is in memory at a time.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from mta_relay import replies
from mta_relay.replies import Reply
from mta_relay.smtp_paths import parse_path
from mta_relay.templates import RenderError, Template, TemplateRefused, compile_template

# Headers a client may not set in built content: trace and authentication headers belong to the MTAs
# that add them, To comes from the recipient, and the MIME structure is built here.
PROTECTED_HEADERS = frozenset({
    "received", "return-path", "dkim-signature", "domainkey-signature", "arc-seal",
    "arc-message-signature", "arc-authentication-results", "authentication-results", "to", "bcc",
    "content-type", "content-transfer-encoding", "mime-version", "content-disposition", "content-id"})
_SUBTYPES = {"text": "plain", "amp_html": "x-amp-html", "html": "html"}  # AMP goes before HTML
_FIELD_SHORTCUTS = {"from": "from", "subject": "subject", "reply-to": "reply_to"}
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 ftext, kept to one line's worth
_LABEL = re.compile(r"(?!-)[^\s.@\[\]\\\"(),:;<>]{1,63}(?<!-)")


def mailbox_problem(address: str) -> str | None:
    """Why ``address`` is not an RFC 5321 mailbox (None when it is). Syntax is ``smtp_paths``' (the SMTP
    side's rule); JSON has no angle brackets, so the address must also come back unchanged (no comments,
    no quoting added), and it needs a domain."""
    try:
        octets = len(address.encode())
    except UnicodeEncodeError:  # a lone surrogate from JSON's \ud800 escapes
        return "not a mailbox (not UTF-8)"
    if not address or octets > 254:
        return "not a mailbox (empty or longer than 254 octets)"
    if any(c in address for c in "\r\n\0<>"):
        return "not a mailbox"
    parsed, rest = parse_path(f"<{address}>")
    if parsed != address or rest != "":
        return "not a mailbox"
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "not a mailbox (local@domain)"
    if len(local.encode()) > 64:
        return "local part longer than 64 octets"
    literal = domain.startswith("[") and domain.endswith("]")
    if not literal and not all(_LABEL.fullmatch(label) for label in domain.split(".")):
        return "not a mailbox (bad domain)"
    return None



_PLACEHOLDER = "<a@b>"


def mailbox_field(name: str | None, address: str) -> str:
    """A From/To field's mailbox: ``formataddr``'s quoting, or RFC 2047 for a non-ASCII name, but an
    address as it is, UTF-8 too (RFC 6532, for SMTPUTF8 mail): ``formataddr`` raises on one."""
    if not name:
        return address
    return formataddr((name, _PLACEHOLDER[1:-1]))[:-len(_PLACEHOLDER)] + f"<{address}>"

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _address_object(value: object) -> object:
    return {"email": value} if isinstance(value, str) else value


class FromHeader(_Strict):
    email: str
    name: str | None = None

    @field_validator("email")
    @classmethod
    def _mailbox(cls, value: str) -> str:
        problem = mailbox_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and ("\r" in value or "\n" in value):
            raise ValueError("has a line break")
        return value


class Recipient(_Strict):
    # Checked per recipient, not here: a bad address fails that recipient only, as in KumoMTA.
    email: str
    name: str | None = None
    substitutions: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _no_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value:
            raise ValueError("per-recipient metadata is for KumoMTA's Lua hooks; this relay has none")
        return value

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return FromHeader._one_line(value)

    def formatted(self) -> str:
        return mailbox_field(self.name, self.email)


class Attachment(_Strict):
    data: str
    base64: bool = False
    content_type: str = "application/octet-stream"
    file_name: str | None = None
    content_id: str | None = None

    @field_validator("content_type")
    @classmethod
    def _mime_type(cls, value: str) -> str:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+", value):
            raise ValueError("must be type/subtype")
        return value

    @field_validator("file_name", "content_id")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "\r\n\0<>")):
            raise ValueError("empty, or has a line break or angle bracket")
        return value


class Content(_Strict):
    from_: FromHeader | None = Field(default=None, alias="from")
    subject: str | None = None
    reply_to: FromHeader | None = None
    text_body: str | None = None
    html_body: str | None = None
    amp_html_body: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    attachments: list[Attachment] = Field(default_factory=list)

    @field_validator("from_", "reply_to", mode="before")
    @classmethod
    def _addresses(cls, value: object) -> object:
        return _address_object(value)

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return FromHeader._one_line(value)

    @model_validator(mode="after")
    def _consistent(self) -> Content:
        if self.text_body is None and self.html_body is None:
            raise _FieldError(("text_body",), "at least one of text_body and html_body is required")
        seen: set[str] = set()
        for name, value in self.headers.items():
            lower = name.lower()
            path = ("headers", name)
            if not _FIELD_NAME.fullmatch(name):
                raise _FieldError(path, "not a header field name")
            if lower in seen:
                raise _FieldError(path, "given twice (header names are case-insensitive)")
            seen.add(lower)
            if lower in PROTECTED_HEADERS:
                raise _FieldError(path, "a protected header (added by the MTAs or built from the request)")
            shortcut = {"from": self.from_, "subject": self.subject, "reply-to": self.reply_to}
            if shortcut.get(lower) is not None:
                raise _FieldError(path, f"also set by content.{_FIELD_SHORTCUTS[lower]}")
            if "\r" in value or "\n" in value or "\0" in value:
                raise _FieldError(path, "has a line break")
        if self.from_ is None and "from" not in seen:
            raise _FieldError(("from",), "required (content.from or content.headers.From)")
        return self


class TraceHeaders(_Strict):
    # received_header: the relay puts its Received field on every message it accepts, either way.
    received_header: bool = False
    supplemental_header: bool = True
    header_name: str = "X-KumoRef"
    include_meta_names: list[str] = Field(default_factory=list)

    @field_validator("header_name")
    @classmethod
    def _x_header(cls, value: str) -> str:
        if not _FIELD_NAME.fullmatch(value) or not value.lower().startswith("x-"):
            raise ValueError("must be an X- header field name")
        return value

    @field_validator("include_meta_names")
    @classmethod
    def _no_meta(cls, value: list[str]) -> list[str]:
        if value:
            raise ValueError("not supported: messages carry no KumoMTA metadata here")
        return value


def _content_kind(value: Any) -> str | None:
    return "raw" if isinstance(value, str) else "built" if isinstance(value, dict) else None


class InjectRequest(_Strict):
    envelope_sender: str
    recipients: list[Recipient] = Field(min_length=1)
    content: Annotated[Annotated[str, Tag("raw")] | Annotated[Content, Tag("built")],
                       Discriminator(_content_kind, custom_error_type="content_kind",
                                     custom_error_message="must be a string (a whole message) or an object")]
    substitutions: dict[str, Any] = Field(default_factory=dict)
    template_dialect: Literal["Jinja", "Static", "Handlebars"] = "Jinja"
    deferred_generation: bool = False
    deferred_spool: bool = False
    trace_headers: TraceHeaders | None = None

    @field_validator("envelope_sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        return FromHeader._mailbox(value)

    @field_validator("recipients", mode="before")
    @classmethod
    def _recipients(cls, value: object) -> object:
        return [_address_object(v) for v in value] if isinstance(value, list) else value

    @field_validator("template_dialect")
    @classmethod
    def _dialect(cls, value: str) -> str:
        if value == "Handlebars":
            raise ValueError("not supported: Jinja (the default) or Static")
        return value

    @field_validator("deferred_generation", "deferred_spool")
    @classmethod
    def _not_deferred(cls, value: bool) -> bool:
        if value:
            raise ValueError("not supported: messages are generated and durable before the reply")
        return value


class BadRequest(ValueError):
    """The request is refused whole (400); ``field`` is the path of the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class _FieldError(ValueError):
    """Raised inside a model validator to name a field below the model."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def field_path(loc: tuple[str | int, ...]) -> str:
    """pydantic's location as a JSON-pointer-ish path: ``recipients[3].email``, ``content.headers.X-A``."""
    out = ""
    for i, part in enumerate(loc):
        if i == 1 and loc[0] == "content" and part in ("raw", "built"):
            continue  # the tag of the string-or-object union, not a field
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse(body: bytes) -> InjectRequest:
    """The request, or ``BadRequest`` naming the first field at fault."""
    try:
        return InjectRequest.model_validate_json(body)
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
        loc = tuple(first["loc"])
        cause = (first.get("ctx") or {}).get("error")
        message = first["msg"].removeprefix("Value error, ")
        if isinstance(cause, _FieldError):
            loc, message = loc + cause.path, str(cause)
        if first["type"] == "json_invalid":
            raise BadRequest("", "body is not valid JSON") from None
        raise BadRequest(field_path(loc), message) from None


# --- compiling and generating -----------------------------------------------------------------------

@dataclass(frozen=True)
class Failed:
    """A recipient that gets no message: the error text, and the SMTP reply when policy decided it."""

    rcpt: str
    error: str
    reply: Reply | None = None


@dataclass(frozen=True)
class Batch:
    """One spool entry: one message for these recipients (one transaction)."""

    rcpts: list[str]
    message: bytes


@dataclass
class Prepared:
    request: InjectRequest
    templates: dict[str, Template]
    attachments: list[tuple[Attachment, bytes]] = field(default_factory=list)


def prepare(request: InjectRequest) -> Prepared:
    """Compile every template and decode every attachment once; ``BadRequest`` names the field."""
    static = request.template_dialect == "Static"
    sources: dict[str, tuple[str, bool]] = {}
    content = request.content
    if isinstance(content, str):
        sources["content"] = (content, False)
    else:
        for name in ("subject", "text_body", "html_body", "amp_html_body"):
            if getattr(content, name) is not None:
                sources[f"content.{name}"] = (getattr(content, name), name.endswith("html_body"))
        for name in ("from", "reply_to"):
            mailbox = content.from_ if name == "from" else content.reply_to
            if mailbox is not None and mailbox.name is not None:
                sources[f"content.{name}.name"] = (mailbox.name, False)
        for name, value in content.headers.items():
            sources[f"content.headers.{name}"] = (value, False)
    templates = {}
    for path, (source, html) in sources.items():
        try:
            templates[path] = compile_template(source, html=html, static=static)
        except TemplateRefused as error:
            raise BadRequest(path, f"template: {error}") from None
    prepared = Prepared(request, templates)
    if not isinstance(content, str):
        for i, attachment in enumerate(content.attachments):
            try:
                data = (base64.b64decode(attachment.data, validate=True) if attachment.base64
                        else attachment.data.encode())
            except (binascii.Error, ValueError):
                raise BadRequest(f"content.attachments[{i}].data", "not valid base64") from None
            prepared.attachments.append((attachment, data))
    return prepared


def raw_message(content: str) -> bytes:
    """A whole message as given: line ends made CRLF; ``BadRequest`` for what SMTP could not carry."""
    try:
        data = content.encode()
    except UnicodeEncodeError:  # a lone surrogate from JSON's \ud800 escapes
        raise BadRequest("content", "not UTF-8") from None
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if any(len(line) > 998 for line in data.split(b"\r\n")):
        raise BadRequest("content", "a line longer than 998 octets")
    if b"\0" in data:
        raise BadRequest("content", "contains NUL")
    return data


def _variables(request: InjectRequest, recipient: Recipient) -> dict[str, Any]:
    variables = dict(request.substitutions)
    variables["email"] = recipient.email
    if recipient.name is not None:
        variables["name"] = recipient.name
    variables["to_header"] = recipient.formatted()
    variables.update(recipient.substitutions)
    return variables


def _trace_header(request: InjectRequest, rcpt: str) -> bytes:
    trace = request.trace_headers
    if trace is None or not trace.supplemental_header:
        return b""
    payload = json.dumps({"_@_": "\\_/", "recipient": rcpt}, separators=(",", ":"))
    return f"{trace.header_name}: {base64.b64encode(payload.encode()).decode()}\r\n".encode()


class _RecipientError(Exception):
    def __init__(self, text: str, reply: Reply | None = None) -> None:
        super().__init__(text)
        self.reply = reply


def _render(prepared: Prepared, path: str, variables: dict[str, Any], limit: int) -> str:
    try:
        return prepared.templates[path].render(variables, limit)
    except RenderError as error:
        raise _RecipientError(f"{path}: {error}") from None


def _one_line(path: str, text: str) -> str:
    if "\r" in text or "\n" in text or "\0" in text:
        raise _RecipientError(f"{path}: the rendered value has a line break")
    return text


def _built(prepared: Prepared, content: Content, recipient: Recipient, variables: dict[str, Any],
           limit: int) -> bytes:
    msg = EmailMessage()
    path = ""
    try:
        for path, mailbox, header in (("content.from", content.from_, "From"),
                                      ("content.reply_to", content.reply_to, "Reply-To")):
            if mailbox is not None:
                name = (_one_line(f"{path}.name", _render(prepared, f"{path}.name", variables, limit))
                        if mailbox.name is not None else None)
                msg[header] = mailbox_field(name, mailbox.email)
        path = "recipients"
        msg["To"] = recipient.formatted()
        if content.subject is not None:
            path = "content.subject"
            msg["Subject"] = _one_line(path, _render(prepared, path, variables, limit))
        for name in content.headers:
            path = f"content.headers.{name}"
            msg[name] = _one_line(path, _render(prepared, path, variables, limit))
        path = "content"
        bodies = [(kind, _render(prepared, f"content.{kind}_body", variables, limit))
                  for kind in ("text", "amp_html", "html") if getattr(content, f"{kind}_body") is not None]
        first_kind, first_text = bodies[0]
        msg.set_content(first_text, subtype=_SUBTYPES[first_kind])
        for kind, text in bodies[1:]:
            msg.add_alternative(text, subtype=_SUBTYPES[kind])
        path = "content.attachments"
        for attachment, data in prepared.attachments:
            maintype, _, subtype = attachment.content_type.partition("/")
            if attachment.content_id:  # inline: multipart/related with the text, as KumoMTA builds it
                msg.add_related(data, maintype=maintype, subtype=subtype, cid=f"<{attachment.content_id}>",
                                filename=attachment.file_name, disposition="inline")
            else:
                msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=attachment.file_name)
        return msg.as_bytes(policy=SMTP)
    except _RecipientError:
        raise
    except Exception as error:  # the email package's ValueError/IndexError/HeaderParseError on odd values
        raise _RecipientError(f"{path}: cannot be built into a message ({type(error).__name__})") from None


def _message(prepared: Prepared, recipient: Recipient, limit: int) -> bytes:
    request = prepared.request
    variables = _variables(request, recipient)
    if isinstance(request.content, str):
        try:
            message = raw_message(_render(prepared, "content", variables, limit))
        except BadRequest as error:
            raise _RecipientError(str(error), replies.BAD_MESSAGE) from None
    else:
        message = _built(prepared, request.content, recipient, variables, limit)
    message = _trace_header(request, recipient.email) + message
    if len(message) > limit:
        raise _RecipientError(replies.TOO_BIG.text, replies.TOO_BIG)
    return message


def outcomes(prepared: Prepared, *, limit: int, max_recipients: int) -> Iterator[Batch | Failed]:
    """Per recipient, in order: its failure, or (in batches) the message to spool for it."""
    batch: Batch | None = None
    for recipient in prepared.request.recipients:
        problem = mailbox_problem(recipient.email)
        try:
            if problem:
                raise _RecipientError(f"email: {problem}")
            message = _message(prepared, recipient, limit)
        except _RecipientError as error:
            if batch is not None:
                yield batch
                batch = None
            yield Failed(recipient.email, str(error), error.reply)
            continue
        if batch is not None and (batch.message != message or len(batch.rcpts) >= max_recipients):
            yield batch
            batch = None
        if batch is None:
            batch = Batch([recipient.email], message)
        else:
            batch.rcpts.append(recipient.email)
    if batch is not None:
        yield batch
