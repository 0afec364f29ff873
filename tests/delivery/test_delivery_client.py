"""The outbound SMTP client against a real receiving server on loopback."""

from __future__ import annotations

import asyncio

import pytest
from deliverykit import client_context, message, server_context
from mta_relay.delivery.client import Credentials, HopPolicy, HopUnavailable, TlsMode, open_session, transact
from mta_relay.delivery.mx import Hop
from mta_relay.delivery.outcome import Result
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.router import Deliverer, smarthost_route
from support.smtp_receiver import HANG_UP, SmtpReceiver

HOP = Hop("localhost", "127.0.0.1")


def policy(port: int, tls: TlsMode = TlsMode.NONE, **kw) -> HopPolicy:
    return HopPolicy(helo_name="mta.example.org", port=port, tls=tls, connect_timeout=5,
                     command_timeout=5, **kw)


async def test_plain_transaction_delivers_bytes_and_per_recipient_outcomes() -> None:
    body = b".leading dot\r\n..two dots\r\nlone LF\nlone CR\rend\r\n.\r\nafter a dot line\r\n"
    async with SmtpReceiver() as rx:
        rx.script("rcpt:nobody@example.net", "550 5.1.1 no such user")
        rx.script("rcpt:busy@example.net", "452 4.2.2 mailbox full")
        smtp = await open_session(HOP, policy(rx.port))
        result = await transact(
            smtp, "app@example.com", ["bob@example.net", "nobody@example.net", "busy@example.net"],
            message(body=body), "localhost")
        smtp.close()
    assert [(o.recipient, o.result, o.code) for o in result.outcomes] == [
        ("bob@example.net", Result.DELIVERED, 250), ("nobody@example.net", Result.FAILED, 550),
        ("busy@example.net", Result.DEFERRED, 452)]
    assert result.reusable
    assert not result.lost_at_mail
    [tx] = rx.transactions
    assert tx.rcpt_tos == ("bob@example.net",)
    # Lone CR and LF become CRLF on the wire; dot lines survive dot-stuffing unchanged.
    assert tx.data == message(body=body.replace(b"\nlone CR\r", b"\r\nlone CR\r\n"))


@pytest.mark.parametrize("smuggled", [b"\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nevil\r\n",
                                      b"\r\n.\nMAIL FROM:<evil@x>\r\n", b"\r.\r\nMAIL FROM:<evil@x>\r\n",
                                      b"\r\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n"])
async def test_body_cannot_start_a_second_transaction(smuggled: bytes) -> None:
    async with SmtpReceiver() as rx:
        smtp = await open_session(HOP, policy(rx.port))
        result = await transact(smtp, "app@example.com", ["bob@example.net"],
                                message(body=b"hello" + smuggled + b"bye\r\n"), "localhost")
        smtp.close()
    assert [o.result for o in result.outcomes] == [Result.DELIVERED]
    assert len(rx.transactions) == 1
    assert rx.mail_commands() == 1
    assert b"bye" in rx.transactions[0].data


@pytest.mark.parametrize(("stage", "lost_at_mail"), [("mail", True), ("rcpt", False), ("data", False)])
async def test_result_says_whether_the_connection_was_lost_at_mail(stage: str, lost_at_mail: bool) -> None:
    async with SmtpReceiver() as rx:
        rx.script(stage, HANG_UP)
        smtp = await open_session(HOP, policy(rx.port))
        result = await transact(smtp, "app@example.com", ["bob@example.net"], message(), "localhost")
    assert [(o.result, o.code) for o in result.outcomes] == [(Result.DEFERRED, 451)]
    assert result.lost_at_mail is lost_at_mail
    assert not result.reusable
    assert not smtp.is_connected


async def test_required_starttls_verified_and_auth() -> None:
    async with SmtpReceiver(tls=server_context("localhost"), require_tls=True,
                            users={"relay": "s3cret"}) as rx:
        good = policy(rx.port, TlsMode.REQUIRED, verify_context=client_context(),
                      credentials=Credentials("relay", "s3cret"))
        smtp = await open_session(HOP, good)
        result = await transact(smtp, "app@example.com", ["bob@example.net"], message(), "localhost")
        smtp.close()
        assert [o.result for o in result.outcomes] == [Result.DELIVERED]
        assert rx.transactions[0].tls
        assert rx.transactions[0].login == "relay"

        with pytest.raises(HopUnavailable) as bad_password:
            await open_session(HOP, policy(rx.port, TlsMode.REQUIRED, verify_context=client_context(),
                                           credentials=Credentials("relay", "wrong")))
        assert bad_password.value.code == 451
        assert "535" in bad_password.value.text
        assert "wrong" not in str(bad_password.value)
        with pytest.raises(HopUnavailable):  # certificate from a CA we do not trust
            await open_session(HOP, policy(rx.port, TlsMode.REQUIRED))


async def test_required_starttls_refuses_plaintext_server() -> None:
    async with SmtpReceiver() as rx:
        with pytest.raises(HopUnavailable, match="STARTTLS"):
            await open_session(HOP, policy(rx.port, TlsMode.REQUIRED, verify_context=client_context()))
    assert rx.mail_commands() == 0


async def test_opportunistic_tls_uses_tls_when_offered_without_verifying() -> None:
    async with SmtpReceiver(tls=server_context("mx.other.test")) as tls_rx, SmtpReceiver() as plain_rx:
        for rx in (tls_rx, plain_rx):
            smtp = await open_session(HOP, policy(rx.port, TlsMode.OPPORTUNISTIC))
            await transact(smtp, "a@example.com", ["b@example.net"], message(), "localhost")
            smtp.close()
    assert tls_rx.transactions[0].tls
    assert not plain_rx.transactions[0].tls


async def test_unreachable_smarthost_defers() -> None:
    deliverer = Deliverer(smarthost_route("127.0.0.1", policy(1)), ConnectionPool())
    [result] = await deliverer.deliver("a@example.com", ["b@example.net"], message())
    assert result.result is Result.DEFERRED
    assert result.text.startswith("4.4.1")


async def test_wire_check_sees_smuggling_by_a_careless_client() -> None:
    """The check above can fail: raw bytes with a bare-LF end of data count as two transactions."""
    async with SmtpReceiver() as rx:
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.port)
        writer.write(b"EHLO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhi\n.\r\n"
                     b"MAIL FROM:<evil@x>\r\n.\r\nQUIT\r\n")
        await writer.drain()
        await reader.read()  # until the server closes after QUIT
        writer.close()
    assert rx.mail_commands() == 2
