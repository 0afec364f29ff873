"""Several SMTP serving processes in one relay (``mta_relay.workers``), with the real ``mta-relay`` and a
real receiving server: both processes take connections on the same ports and every message they accept
is delivered once; the quota and the AUTH throttle count the pod's processes together; a killed serving
process is started again and its spool range is recovered; /metrics sums them; SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import signal
import smtplib
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from deliverykit import message
from relayproc import PASSWORD, USERNAME, RelayProcess
from support.smtp_receiver import SmtpReceiver

WORKERS = 2


@pytest.fixture
async def receiver() -> AsyncIterator[SmtpReceiver]:
    async with SmtpReceiver() as rx:
        yield rx


async def until(condition, within: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return bool(condition())


def serving_pids(relay: RelayProcess) -> list[int]:
    """The relay's extra SMTP serving processes."""
    return relay.children(b"mta_relay.workers.process")


def log_lines(relay: RelayProcess) -> list[dict]:
    lines = []
    for line in relay.log.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def accepted_by(relay: RelayProcess) -> dict[int, int]:
    """Accepted messages per serving process (0: the first) from the relay's log."""
    counts: dict[int, int] = {}
    for line in log_lines(relay):
        if line.get("event") == "accepted":
            counts[line.get("worker", 0)] = counts.get(line.get("worker", 0), 0) + 1
    return counts


def send_one(relay: RelayProcess, subject: str) -> str:
    """One connection, one message: the final reply code and enhanced code."""
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=relay.client_tls)
        smtp.login(USERNAME, PASSWORD)
        try:
            smtp.sendmail("app@example.com", ["bob@example.net"], message(subject=subject))
        except smtplib.SMTPRecipientsRefused as error:
            code, text = next(iter(error.recipients.values()))
            return f"{code} {text.decode()[:5]}"
        except smtplib.SMTPSenderRefused as error:
            return f"{error.smtp_code} {error.smtp_error.decode()[:5]}"
        except smtplib.SMTPDataError as error:
            return f"{error.smtp_code} {error.smtp_error.decode()[:5]}"
    return "250"


def send_many(relay: RelayProcess, count: int, prefix: str, clients: int = 16) -> list[str]:
    """``count`` messages, one per connection, ``clients`` at a time: the kernel hands the connections to
    whichever serving process accepts first."""
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda n: send_one(relay, f"{prefix}-{n}"), range(count)))


def subjects(receiver: SmtpReceiver) -> list[str]:
    found = []
    for transaction in receiver.transactions:
        for line in transaction.data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                found.append(line[9:].decode())
    return found


def metrics(relay: RelayProcess) -> str:
    with urllib.request.urlopen(f"https://127.0.0.1:{relay.http_port}/metrics",
                                context=relay.client_tls, timeout=10) as answer:
        return str(answer.read().decode())


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def closed_by_the_relay(smtp: smtplib.SMTP) -> bool:
    """The relay said 421 (shutting down) and closed the session."""
    try:
        code, _ = smtp.noop()
    except smtplib.SMTPServerDisconnected:
        return True
    return code == 421


async def started(relay: RelayProcess, workers: int = WORKERS) -> RelayProcess:
    await asyncio.to_thread(relay.start)
    assert await until(lambda: len(serving_pids(relay)) == workers - 1
                       and sum(1 for line in log_lines(relay) if line.get("event") == "smtp_worker_ready")
                       >= relay.starts * (workers - 1))
    return relay


async def test_both_processes_serve_the_ports_and_every_message_is_delivered_once(
        tmp_path: Path, receiver: SmtpReceiver) -> None:
    relay = await started(RelayProcess(tmp_path, receiver.port, workers=WORKERS))
    try:
        replies = await asyncio.to_thread(send_many, relay, 80, "w")
        assert replies == ["250"] * 80
        assert await until(lambda: len(receiver.transactions) >= 80)
        await asyncio.sleep(0.5)  # a duplicate would arrive meanwhile
        assert sorted(subjects(receiver)) == sorted(f"w-{n}" for n in range(80))
        by_process = accepted_by(relay)
        assert set(by_process) == {0, 1}, by_process  # both took connections
        text = await asyncio.to_thread(metrics, relay)
        assert sample(text, 'mta_messages_accepted_total{source="smtp"}') == 80
        assert sample(text, "mta_smtp_serving_processes") == WORKERS
        assert sample(text, "mta_spool_entries_written") == 80
        assert await until(lambda: relay.spool_entries() == [])  # every slot emptied, in both ranges
    finally:
        relay.stop()


async def test_a_quota_holds_exactly_across_the_processes(tmp_path: Path, receiver: SmtpReceiver) -> None:
    relay = RelayProcess(tmp_path, receiver.port, workers=WORKERS)
    table = relay.dir / "credentials" / "credentials-000.json"
    shard = json.loads(table.read_text())
    shard["credentials"][0]["quota"] = {"messages": 25, "period": "Day"}
    table.write_text(json.dumps(shard))
    await started(relay)
    try:
        replies = await asyncio.to_thread(send_many, relay, 60, "q")
        assert replies.count("250") == 25, replies
        assert set(replies) == {"250", "452 4.7.1"}, set(replies)
        assert len(accepted_by(relay)) == 2  # both processes accepted some of the 25
    finally:
        relay.stop()


async def test_auth_failures_are_counted_for_the_pod(tmp_path: Path, receiver: SmtpReceiver) -> None:
    relay = RelayProcess(tmp_path, receiver.port, workers=WORKERS)
    path = relay.dir / "relay.yaml"
    settings = yaml.safe_load(path.read_text())
    settings["limits"].update(authFailuresBeforeDelay=100, authFailuresBeforeDisconnect=4)
    path.write_text(yaml.safe_dump(settings))
    await started(relay)

    def attempt() -> int:
        with smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=30) as smtp:
            smtp.starttls(context=relay.client_tls)
            smtp.ehlo()
            blob = base64.b64encode(f"\0{USERNAME}\0wrong-{PASSWORD}".encode()).decode()
            try:
                code, _ = smtp.docmd("AUTH", f"PLAIN {blob}")  # one attempt (login() tries each mechanism)
            except smtplib.SMTPServerDisconnected:
                return 421
            return int(code)

    try:
        first = [await asyncio.to_thread(attempt) for _ in range(4)]
        assert first == [535] * 4
        await asyncio.sleep(0.3)  # the failures reach the other process
        later = [await asyncio.to_thread(attempt) for _ in range(8)]
        assert later == [421] * 8, later  # whichever process the connection reached
        refusing = {line.get("worker", 0) for line in log_lines(relay)
                    if line.get("event") == "auth_refused" and line.get("reason") == "auth_throttled"}
        assert refusing == {0, 1}
    finally:
        relay.stop()


async def test_a_killed_serving_process_comes_back_and_its_range_is_recovered(
        tmp_path: Path, receiver: SmtpReceiver) -> None:
    relay = RelayProcess(tmp_path, receiver.port, workers=WORKERS)
    path = relay.dir / "relay.yaml"
    settings = yaml.safe_load(path.read_text())
    settings["delivery"]["mode"] = "Hold"  # keep what is accepted in the spool for now (deferred)
    settings["queue"].update(minRetryIntervalSeconds=1, maxRetryIntervalSeconds=1)
    path.write_text(yaml.safe_dump(settings))
    await started(relay)
    try:
        replies = await asyncio.to_thread(send_many, relay, 40, "k")
        assert replies == ["250"] * 40
        assert len(accepted_by(relay)) == 2
        held = relay.spool_entries()
        assert len(held) == 40
        assert any(int(name) >= 10_000_000 for name in held)  # the second process's range
        [victim] = serving_pids(relay)
        os.kill(victim, signal.SIGKILL)
        assert await until(lambda: serving_pids(relay) not in ([], [victim]))
        assert await until(lambda: sum(1 for line in log_lines(relay)
                                       if line.get("event") == "smtp_worker_ready") == 2)
        replies = await asyncio.to_thread(send_many, relay, 20, "after")
        assert replies == ["250"] * 20
        settings["delivery"]["mode"] = "Smarthost"
        path.write_text(yaml.safe_dump(settings))
        assert await until(lambda: len(receiver.transactions) >= 60, within=60)
        await asyncio.sleep(0.5)
        expected = [f"k-{n}" for n in range(40)] + [f"after-{n}" for n in range(20)]
        assert sorted(subjects(receiver)) == sorted(expected)
        assert await until(lambda: relay.spool_entries() == [])
        exited = [line for line in log_lines(relay) if line.get("event") == "smtp_worker_exited"]
        assert len(exited) == 1
        assert exited[0]["exit_code"] == -signal.SIGKILL
    finally:
        relay.stop()


async def test_sigterm_drains_every_process(tmp_path: Path, receiver: SmtpReceiver) -> None:
    relay = await started(RelayProcess(tmp_path, receiver.port, workers=WORKERS, grace=5.0))
    try:
        pids = serving_pids(relay)
        # Open sessions on both processes, idle after AUTH: the drain sends them 421 and closes them.
        sessions = []
        for _ in range(6):
            smtp = smtplib.SMTP("127.0.0.1", relay.smtp_port, timeout=30)
            smtp.starttls(context=relay.client_tls)
            smtp.login(USERNAME, PASSWORD)
            sessions.append(smtp)
        started_at = time.monotonic()
        assert await asyncio.to_thread(relay.terminate, 15) == 0
        assert time.monotonic() - started_at < 5.0 + 2.0  # within the grace time (delivery drains to it)
        assert await until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), within=5)
        assert all(closed_by_the_relay(smtp) for smtp in sessions)
    finally:
        relay.stop()
