"""The HTTP injection request (KumoMTA / unMTA compatible JSON) and the messages it becomes. Pure.

Request::

    {"envelope_sender": "app@example.com",
     "recipients": ["a@x.example", {"email": "b@y.example", "name": "B"}],
     "content": "From: ...\\r\\n...raw RFC 5322..."            # or, built for you:
     "content": {"from": {"email": ..., "name": ...} | "addr", "subject": ..., "reply_to": ...,
                 "text_body": ..., "html_body": ..., "headers": {"X-Tag": "v"},
                 "attachments": [{"data": ..., "base64": true, "content_type": ..., "file_name": ...,
                                  "content_id": ...}]}}

A raw ``content`` is one message for all recipients (line ends normalised to CRLF). Built content is one
message per recipient, each with its own To, as KumoMTA does, so recipients never see each other.
Template substitutions are not supported (refused as unknown fields).
"""

from __future__ import annotations

import base64
import binascii
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate, make_msgid

from pydantic import BaseModel, ConfigDict, Field, field_validator

_HEADER_FORBIDDEN = frozenset({"from", "to", "subject", "reply-to", "content-type",
                               "content-transfer-encoding", "mime-version"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Address(_Strict):
    email: str = Field(min_length=3, max_length=320)
    name: str | None = None

    def formatted(self) -> str:
        return formataddr((self.name, self.email)) if self.name else self.email


def _address(value: object) -> object:
    return {"email": value} if isinstance(value, str) else value


class Attachment(_Strict):
    data: str
    base64: bool = False
    content_type: str = "application/octet-stream"
    file_name: str | None = None
    content_id: str | None = None


class Content(_Strict):
    from_: Address = Field(alias="from")
    subject: str = ""
    reply_to: Address | None = None
    text_body: str | None = None
    html_body: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    attachments: list[Attachment] = Field(default_factory=list)

    @field_validator("from_", "reply_to", mode="before")
    @classmethod
    def _addresses(cls, value: object) -> object:
        return _address(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name.lower() in _HEADER_FORBIDDEN or not name.isascii() or ":" in name or " " in name:
                raise ValueError(f"header {name!r} cannot be set here")
            if "\r" in text or "\n" in text:
                raise ValueError(f"header {name!r} has a line break")
        return value


class InjectRequest(_Strict):
    envelope_sender: str = Field(min_length=1, max_length=320)
    recipients: list[Address] = Field(min_length=1)
    content: str | Content

    @field_validator("recipients", mode="before")
    @classmethod
    def _recipients(cls, value: object) -> object:
        return [_address(v) for v in value] if isinstance(value, list) else value


class BadRequest(ValueError):
    """The request is not a message we can build (400)."""


def raw_message(content: str) -> bytes:
    data = content.encode("utf-8")
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if any(len(line) > 998 for line in data.split(b"\r\n")):
        raise BadRequest("content has a line longer than 998 octets")
    if b"\0" in data:
        raise BadRequest("content contains NUL")
    return data


def built_message(content: Content, recipient: Address, hostname: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = content.from_.formatted()
    msg["To"] = recipient.formatted()
    msg["Subject"] = content.subject
    if content.reply_to:
        msg["Reply-To"] = content.reply_to.formatted()
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=hostname)
    for name, text in content.headers.items():
        msg[name] = text
    if content.text_body is not None:
        msg.set_content(content.text_body)
    if content.html_body is not None:
        if content.text_body is None:
            msg.set_content(content.html_body, subtype="html")
        else:
            msg.add_alternative(content.html_body, subtype="html")
    if content.text_body is None and content.html_body is None:
        msg.set_content("")
    for attachment in content.attachments:
        _attach(msg, attachment)
    return msg.as_bytes(policy=SMTP)


def _attach(msg: EmailMessage, attachment: Attachment) -> None:
    try:
        data = (base64.b64decode(attachment.data, validate=True) if attachment.base64
                else attachment.data.encode())
    except (binascii.Error, ValueError):
        raise BadRequest("attachment data is not valid base64") from None
    maintype, _, subtype = attachment.content_type.partition("/")
    if not maintype or not subtype:
        raise BadRequest("attachment content_type must be type/subtype")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=attachment.file_name,
                       cid=f"<{attachment.content_id}>" if attachment.content_id else None,
                       disposition="inline" if attachment.content_id else "attachment")


def messages(request: InjectRequest, hostname: str) -> list[tuple[list[str], bytes]]:
    """(envelope recipients, message bytes) pairs to spool."""
    if isinstance(request.content, str):
        return [([r.email for r in request.recipients], raw_message(request.content))]
    return [([r.email], built_message(request.content, r, hostname)) for r in request.recipients]
