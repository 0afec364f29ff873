"""What survives a restart of the real ``mta-relay`` (kill -9, then started again on the same spool): the
retry schedule and attempt count of deferred mail, the delivery rate window, and credentials' quota
counts. Each test shows the restarted relay carries on where the killed one stopped, where a fresh start
would behave differently (deliver at once, send a fresh batch, accept a fresh quota)."""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from deliverykit import message
from mta_relay import state_files
from mta_relay.spool import RetryState, Spool
from relayproc import RelayProcess
from support.smtp_receiver import SmtpReceiver

# Clock tolerance between this process's wall clock and the relay's monotonic-to-wall conversion.
SLACK = 0.1


@pytest.fixture
async def receiver() -> AsyncIterator[SmtpReceiver]:
    async with SmtpReceiver() as rx:
        yield rx


async def until(condition, within: float = 20.0, step: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := condition():
            return result
        await asyncio.sleep(step)
    return condition()


def retry_state(relay: RelayProcess, attempts: int) -> RetryState | None:
    """The one entry's retry record once it shows ``attempts``, read through the spool's own parser."""
    names = [p.stem for p in (relay.spool / "outcomes").glob("*.out")]
    if len(names) != 1:
        return None
    state = Spool(relay.spool).retry_state(names[0])
    return state if state is not None and state.attempts == attempts else None


def submit(relay: RelayProcess, subject: str) -> None:
    relay.submit("app@example.com", ["bob@example.net"], message(subject=subject))


async def test_a_deferred_message_is_tried_at_its_recorded_time_after_kill_9_and_its_backoff_continues(
        tmp_path: Path, receiver: SmtpReceiver) -> None:
    receiver.script("rcpt", "451 4.3.0 try again later", times=3)
    # Backoff 8 s doubling to 32 s, half of each step random: delays [4, 8], [8, 16], then [16, 32] s:
    # a restart on a loaded machine takes seconds, and it must end well before the recorded attempt.
    relay = RelayProcess(tmp_path, receiver.port,
                         queue={"path": str(tmp_path / "spool"), "minRetryIntervalSeconds": 8,
                                "maxRetryIntervalSeconds": 32})
    try:
        await asyncio.to_thread(relay.start)
        await asyncio.to_thread(submit, relay, "deferred three times")
        second = await until(lambda: retry_state(relay, 2), within=30)
        assert second is not None, "the message was not deferred twice"
        relay.kill()
        seen = receiver.mail_commands()
        assert seen == 2
        await asyncio.to_thread(relay.start)
        restarted = time.time()
        # A fresh schedule would try at once; the recorded one is seconds away still.
        assert second.next_at - restarted > 1.0, "the restart took too long for this test to show anything"
        assert await until(lambda: receiver.mail_commands() > seen, within=30)
        tried = time.time()
        third = await until(lambda: retry_state(relay, 3), within=10)
        # The log line follows the durable record: wait for it before the relay is stopped.
        await until(lambda: 3 in deferred_attempts(relay), within=10)
    finally:
        relay.stop()
    assert tried >= second.next_at - SLACK
    assert third is not None, "the third attempt's deferral was not recorded as attempt 3"
    assert third.at >= second.next_at - SLACK
    # Attempt 3's backoff step is 32 s: at least 16 s; a count started over would give 4 to 8 s.
    assert third.next_at - third.at >= 16 - SLACK
    # kill -9 may have cut off attempt 2's log line: the last one is attempt 3's.
    assert deferred_attempts(relay)[-1] == 3


def deferred_attempts(relay: RelayProcess) -> list[int]:
    records = [json.loads(line) for line in relay.log.read_text().splitlines() if line.startswith("{")]
    return [r["attempt"] for r in records if r.get("event") == "deferred"]


async def test_a_restarted_relay_does_not_get_a_fresh_rate_window(tmp_path: Path,
                                                                   receiver: SmtpReceiver) -> None:
    period = 20  # long enough that the window outlives a restart on a loaded machine
    relay = RelayProcess(tmp_path, receiver.port, rateLimit={"messages": 3, "periodSeconds": period})
    window_file = state_files.rate_window_path(relay.spool)
    try:
        await asyncio.to_thread(relay.start)
        for n in range(6):
            await asyncio.to_thread(submit, relay, f"message {n}")
        await receiver.wait_for(3)
        starts = await until(lambda: len(state_files.load(window_file, state_files.decode_rate_window, []))
                             == 3 and state_files.load(window_file, state_files.decode_rate_window, []))
        assert starts, "the rate window was not saved"
        relay.kill()
        await asyncio.to_thread(relay.start)
        window_end = min(starts) + period
        assert window_end - time.time() > 1.0, "the restart took too long for this test to show anything"
        # Until the first saved start leaves the window, the restarted relay may send nothing more.
        while time.time() < window_end - 0.3:
            assert len(receiver.transactions) == 3, "the restarted relay sent over the limit"
            await asyncio.sleep(0.05)
        await receiver.wait_for(6, within=period + 10)  # held, not lost: sent as the window moves on
    finally:
        relay.stop()
    assert len(receiver.transactions) == 6
    sent = [tx.at for tx in receiver.transactions]
    assert max(sent) - min(sent) >= period - SLACK  # the last three waited for the first three to age out


def with_quota(relay: RelayProcess, messages: int) -> None:
    """Give the test credential a monthly quota (a period boundary could only fall in the test at midnight
    UTC on the first of a month)."""
    path = relay.dir / "credentials" / "credentials-000.json"
    table = json.loads(path.read_text())
    table["credentials"][0]["quota"] = {"messages": messages, "period": "Month"}
    path.write_text(json.dumps(table))


def quota_count(relay: RelayProcess) -> int | None:
    own, _ = state_files.load(state_files.quota_path(relay.spool), state_files.decode_quota, ({}, {}))
    return own["app"].sent if "app" in own else None


@pytest.mark.parametrize("stop", ["kill -9 after the save", "SIGTERM right after the last message"])
async def test_a_restarted_relay_keeps_what_a_credential_used_of_its_quota(
        tmp_path: Path, receiver: SmtpReceiver, stop: str) -> None:
    relay = RelayProcess(tmp_path, receiver.port)
    with_quota(relay, 5)
    try:
        await asyncio.to_thread(relay.start)
        for n in range(3):
            await asyncio.to_thread(submit, relay, f"before the restart {n}")
        if stop.startswith("kill"):
            assert await until(lambda: quota_count(relay) == 3), "the quota counts were not saved"
            relay.kill()
        else:
            assert await asyncio.to_thread(relay.terminate, 30) == 0
            assert quota_count(relay) == 3
        await asyncio.to_thread(relay.start)
        for n in range(2):
            await asyncio.to_thread(submit, relay, f"after the restart {n}")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            await asyncio.to_thread(submit, relay, "over the quota")
    finally:
        relay.stop()
    assert refused.value.smtp_code == 452
    assert refused.value.smtp_error.startswith(b"4.7.1")
    saved = (state_files.quota_path(relay.spool)).read_text()
    assert "Pw-" not in saved  # usernames and counts only
    assert state_files.quota_path(relay.spool).stat().st_mode & 0o777 == 0o600
    assert state_files.state_dir(relay.spool).stat().st_mode & 0o777 == 0o700
