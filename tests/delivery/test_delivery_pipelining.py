"""RFC 2920 pipelining in the outbound client, against a real receiving server (aiosmtpd) that offers
PIPELINING or not: what goes out in one write, how each reply lands on its recipient, and that the
connection is left ready for the next transaction whatever the replies were."""

from __future__ import annotations

import pytest
from deliverykit import client_context, message, server_context
from mta_relay.delivery.client import HopPolicy, TlsMode, open_session, transact
from mta_relay.delivery.mx import Hop
from mta_relay.delivery.outcome import Result
from support.smtp_receiver import HANG_UP, SmtpReceiver, ThenHangUp

HOP = Hop("localhost", "127.0.0.1")
RCPTS = ["bob@example.net", "nobody@example.net", "busy@example.net"]


def policy(port: int, tls: TlsMode = TlsMode.NONE) -> HopPolicy:
    return HopPolicy(helo_name="mta.example.org", port=port, tls=tls, connect_timeout=5, command_timeout=5,
                     verify_context=client_context() if tls is TlsMode.REQUIRED else None)


@pytest.mark.parametrize("tls", [TlsMode.NONE, TlsMode.REQUIRED])
async def test_mail_rcpt_and_data_go_out_in_one_write_and_each_reply_lands_on_its_recipient(
        tls: TlsMode) -> None:
    tls_context = server_context("localhost") if tls is TlsMode.REQUIRED else None
    async with SmtpReceiver(tls=tls_context) as rx:
        rx.script("rcpt:nobody@example.net", "550 5.1.1 no such user")
        rx.script("rcpt:busy@example.net", "452 4.2.2 mailbox full")
        smtp = await open_session(HOP, policy(rx.port, tls))
        first = await transact(smtp, "app@example.com", RCPTS, message(), "localhost")
        carol = "carol@example.net"
        second = await transact(smtp, "app@example.com", [carol], message(to=carol), "localhost")
        smtp.close()
    assert [(o.recipient, o.result, o.code) for o in first.outcomes] == [
        ("bob@example.net", Result.DELIVERED, 250), ("nobody@example.net", Result.FAILED, 550),
        ("busy@example.net", Result.DEFERRED, 452)]
    assert first.reusable
    assert second.reusable
    assert [o.result for o in second.outcomes] == [Result.DELIVERED]
    assert [tx.rcpt_tos for tx in rx.transactions] == [("bob@example.net",), ("carol@example.net",)]
    [connection] = rx.connections
    assert connection.read_with("MAIL FROM", "RCPT TO", "DATA")
    assert connection.messages() == 2


async def test_a_server_without_pipelining_gets_one_command_at_a_time() -> None:
    async with SmtpReceiver(pipelining=False) as rx:
        rx.script("rcpt:nobody@example.net", "550 5.1.1 no such user")
        smtp = await open_session(HOP, policy(rx.port))
        result = await transact(smtp, "app@example.com", RCPTS[:2], message(), "localhost")
        smtp.close()
    assert [(o.result, o.code) for o in result.outcomes] == [(Result.DELIVERED, 250), (Result.FAILED, 550)]
    [connection] = rx.connections
    assert not connection.read_with("MAIL FROM", "RCPT TO")
    assert connection.messages() == 1


async def test_no_recipient_taken_sends_no_message_and_the_connection_carries_the_next_one() -> None:
    async with SmtpReceiver() as rx:
        rx.script("rcpt", "550 5.1.1 no such user", times=2)
        smtp = await open_session(HOP, policy(rx.port))
        refused = await transact(smtp, "app@example.com", RCPTS[:2], message(), "localhost")
        after = await transact(smtp, "app@example.com", ["bob@example.net"], message(), "localhost")
        smtp.close()
    assert [(o.result, o.code) for o in refused.outcomes] == [(Result.FAILED, 550)] * 2
    assert refused.reusable
    assert [o.result for o in after.outcomes] == [Result.DELIVERED]
    [connection] = rx.connections
    assert connection.messages() == 1  # only the second transaction's message went out
    assert connection.commands("RSET") >= 1
    assert len(rx.transactions) == 1


@pytest.mark.parametrize(("reply", "result"), [("451 4.3.0 try later", Result.DEFERRED),
                                                ("550 5.7.1 sender refused", Result.FAILED)])
async def test_a_refused_mail_from_answers_for_every_recipient(reply: str, result: Result) -> None:
    async with SmtpReceiver() as rx:
        rx.script("mail", reply)
        smtp = await open_session(HOP, policy(rx.port))
        refused = await transact(smtp, "app@example.com", RCPTS[:2], message(), "localhost")
        after = await transact(smtp, "app@example.com", ["bob@example.net"], message(), "localhost")
        smtp.close()
    code = int(reply[:3])
    assert [(o.result, o.code) for o in refused.outcomes] == [(result, code)] * 2
    assert refused.outcomes[0].text == reply[4:]
    assert refused.reusable
    assert not refused.lost_at_mail
    assert [o.result for o in after.outcomes] == [Result.DELIVERED]
    assert len(rx.transactions) == 1


async def test_a_421_to_mail_from_closes_and_may_run_again_elsewhere() -> None:
    async with SmtpReceiver() as rx:
        rx.script("mail", "421 4.7.0 too many messages on this connection")
        smtp = await open_session(HOP, policy(rx.port))
        result = await transact(smtp, "app@example.com", ["bob@example.net"], message(), "localhost")
    assert [(o.result, o.code) for o in result.outcomes] == [(Result.DEFERRED, 421)]
    assert result.lost_at_mail
    assert not result.reusable
    assert not smtp.is_connected
    assert rx.connections[0].messages() == 0


async def test_the_final_reply_to_the_message_stands_for_every_recipient_taken() -> None:
    async with SmtpReceiver() as rx:
        rx.script("data", "452 4.3.1 insufficient system storage")
        smtp = await open_session(HOP, policy(rx.port))
        result = await transact(smtp, "app@example.com", RCPTS[:2], message(), "localhost")
        after = await transact(smtp, "app@example.com", ["bob@example.net"], message(), "localhost")
        smtp.close()
    assert [(o.result, o.code) for o in result.outcomes] == [(Result.DEFERRED, 452)] * 2
    assert result.reusable
    assert [o.result for o in after.outcomes] == [Result.DELIVERED]


@pytest.mark.parametrize(("stage", "lost_at_mail"), [("mail", True), ("rcpt", False), ("data", False)])
async def test_a_hang_up_part_way_defers_everyone_and_says_whether_the_message_could_have_gone(
        stage: str, lost_at_mail: bool) -> None:
    async with SmtpReceiver() as rx:
        rx.script(stage, HANG_UP)
        smtp = await open_session(HOP, policy(rx.port))
        result = await transact(smtp, "app@example.com", RCPTS[:2], message(), "localhost")
    assert [(o.result, o.code) for o in result.outcomes] == [(Result.DEFERRED, 451)] * 2
    assert result.lost_at_mail is lost_at_mail
    assert not result.reusable
    assert not smtp.is_connected


async def test_a_421_then_close_at_mail_from_keeps_the_421_as_postfix_sends_it() -> None:
    async with SmtpReceiver() as rx:
        rx.script("mail", ThenHangUp("421 4.7.0 closing: too many messages"))
        smtp = await open_session(HOP, policy(rx.port))
        result = await transact(smtp, "app@example.com", RCPTS[:2], message(), "localhost")
    assert [(o.result, o.code, o.text) for o in result.outcomes] == [
        (Result.DEFERRED, 421, "4.7.0 closing: too many messages")] * 2
    assert result.lost_at_mail
    assert not result.reusable
    assert not smtp.is_connected


async def test_a_recipient_refused_before_the_server_closes_keeps_its_refusal() -> None:
    async with SmtpReceiver() as rx:
        rx.script("rcpt:nobody@example.net", ThenHangUp("550 5.1.1 no such user, and goodbye"))
        smtp = await open_session(HOP, policy(rx.port))
        result = await transact(smtp, "app@example.com", RCPTS, message(), "localhost")
    assert [(o.recipient, o.result, o.code) for o in result.outcomes] == [
        ("bob@example.net", Result.DEFERRED, 451), ("nobody@example.net", Result.FAILED, 550),
        ("busy@example.net", Result.DEFERRED, 451)]
    assert not result.lost_at_mail
    assert rx.connections[0].messages() == 0
