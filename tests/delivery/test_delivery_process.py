"""Delivery in its own process (mta_relay.delivery.process/worker), with the real ``mta-relay``: it dies
with the front door, comes back when it dies alone, bounces through the front door's spool, and its
metrics are served at the front door's /metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from deliverykit import message
from mta_relay.delivery.worker import NICENESS
from relayproc import RelayProcess
from support.smtp_receiver import SmtpReceiver


@pytest.fixture
async def receiver() -> AsyncIterator[SmtpReceiver]:
    async with SmtpReceiver() as rx:
        yield rx


def delivery_pids(relay: RelayProcess) -> list[int]:
    """The relay's child processes (its delivery process)."""
    return relay.children(b"mta_relay.delivery.worker")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def until(condition, within: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def started(relay: RelayProcess) -> RelayProcess:
    await asyncio.to_thread(relay.start)
    assert await until(lambda: len(delivery_pids(relay)) == 1)
    return relay


def submit(relay: RelayProcess, subject: str, rcpt: str = "bob@example.net") -> None:
    relay.submit("app@example.com", [rcpt], message(subject=subject))


async def test_kill_9_of_the_relay_takes_its_delivery_process_along(tmp_path: Path,
                                                                    receiver: SmtpReceiver) -> None:
    relay = await started(RelayProcess(tmp_path, receiver.port))
    [worker] = delivery_pids(relay)
    try:
        await asyncio.to_thread(submit, relay, "proves the delivery process is up")
        await receiver.wait_for(1)
        # Stopped, it cannot notice its channel closing: only the kernel's parent-death signal ends it.
        os.kill(worker, signal.SIGSTOP)
        relay.kill()
        assert await until(lambda: not alive(worker), within=5)
    finally:
        relay.stop()
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


async def test_a_delivery_process_that_dies_is_started_again_and_delivers_what_waited(
        tmp_path: Path, receiver: SmtpReceiver) -> None:
    relay = await started(RelayProcess(tmp_path, receiver.port))
    try:
        [first] = delivery_pids(relay)
        os.kill(first, signal.SIGKILL)
        assert await until(lambda: not alive(first))
        await asyncio.to_thread(submit, relay, "accepted while delivery was down")
        assert await until(lambda: [p for p in delivery_pids(relay) if p != first and alive(p)])
        await asyncio.to_thread(submit, relay, "accepted after the restart")
        transactions = await receiver.wait_for(2, within=15)
    finally:
        relay.stop()
    subjects = sorted(line for tx in transactions for line in tx.data.split(b"\r\n")
                      if line.startswith(b"Subject:"))
    assert subjects == [b"Subject: accepted after the restart", b"Subject: accepted while delivery was down"]
    assert "delivery_process_exited" in relay.log.read_text()


async def test_a_refused_recipient_bounces_through_the_front_door_spool(tmp_path: Path,
                                                                        receiver: SmtpReceiver) -> None:
    receiver.script("rcpt:gone@example.net", "550 5.1.1 no such user")
    relay = await started(RelayProcess(tmp_path, receiver.port))
    try:
        await asyncio.to_thread(submit, relay, "to a missing user", "gone@example.net")
        [dsn] = await receiver.wait_for(1, within=15)
        assert await until(lambda: relay.spool_entries() == [])  # the DSN, too, was removed when sent
    finally:
        relay.stop()
    assert dsn.mail_from == "<>"  # as the receiver records the null sender
    assert dsn.rcpt_tos == ("app@example.com",)
    assert b"gone@example.net" in dsn.data
    assert b"550 5.1.1" in dsn.data


async def test_metrics_carry_the_delivery_process_figures_once(tmp_path: Path,
                                                               receiver: SmtpReceiver) -> None:
    relay = await started(RelayProcess(tmp_path, receiver.port))
    try:
        await asyncio.to_thread(submit, relay, "counted")
        await receiver.wait_for(1)
        await asyncio.sleep(0.3)  # the outcome is counted right after the receiver's 250
        url = f"https://127.0.0.1:{relay.http_port}/metrics"
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=10, context=relay.client_tls).read().decode())
    finally:
        relay.stop()
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert 'mta_messages_accepted_total{source="smtp"} 1.0' in samples  # the front door's
    assert any(line.startswith('mta_delivery_results_total{') and line.endswith(" 1.0") for line in samples)
    help_lines = [line for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(help_lines) == len(set(help_lines))


async def test_a_relay_whose_delivery_cannot_start_refuses_to_start(tmp_path: Path,
                                                                     receiver: SmtpReceiver) -> None:
    relay = RelayProcess(tmp_path, receiver.port, dkim_pem=b"placeholder")
    (tmp_path / "dkim.pem").unlink()  # the DKIM key file the settings name is not there
    with pytest.raises(AssertionError, match="exited with 2"):
        await asyncio.to_thread(relay.start)
    refused = [line for line in relay.log.read_text().splitlines() if "delivery_config_refused" in line]
    assert refused
    assert "dkim.pem" in refused[0]


def niceness(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2:].split()[16])


async def test_delivery_runs_below_the_front_door_s_cpu_priority(tmp_path: Path,
                                                                 receiver: SmtpReceiver) -> None:
    relay = await started(RelayProcess(tmp_path, receiver.port))
    try:
        [worker] = delivery_pids(relay)
        assert relay.proc is not None
        assert await until(lambda: niceness(worker) == niceness(relay.proc.pid) + NICENESS)
    finally:
        relay.stop()
