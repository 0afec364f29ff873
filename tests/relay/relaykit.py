"""Helpers for relay tests: kubelet-style config volumes and credential factories."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mta_relay import atomic_dir, event_loop
from mta_relay.passwords import fast_verifier
from mta_relay.server import RelayServer
from support.ports import free_port as free_port  # re-exported for the tests


def write_volume(volume: Path, files: dict[str, str]) -> None:
    """Write ``files`` the way kubelet updates a ConfigMap/Secret volume (``atomic_dir``)."""
    atomic_dir.publish(volume, {name: text.encode() for name, text in files.items()})


def password_credential(username: str, password: str, **extra: Any) -> dict[str, Any]:
    cred: dict[str, Any] = {"username": username, "passwordVerifier": fast_verifier(password),
                            "domains": {"mode": "Specific", "names": ["example.com"]}}
    cred.update(extra)
    return cred


def settings(smtp_ports: list[int], http_port: int, cert: Path, key: Path, spool: Path,
             **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1, "hostname": "mta.test.example",
        "smtpListeners": [{"port": p, "address": "127.0.0.1"} for p in smtp_ports],
        "http": {"enabled": True, "port": http_port, "address": "127.0.0.1"},
        "tls": {"certFile": str(cert), "keyFile": str(key)},
        "queue": {"path": str(spool)},
        "domains": [{"domain": "example.com"}, {"domain": "example.org"}],
    }
    data.update(extra)
    return data


def write_config(config_dir: Path, relay_settings: dict[str, Any], credentials: list[dict[str, Any]]) -> None:
    """The settings volume (relay.yaml) and the credentials volume (one shard), both kubelet-style."""
    write_volume(config_dir, {"relay.yaml": yaml.safe_dump(relay_settings)})
    write_volume(config_dir / "credentials",
                 {"credentials-000.json": json.dumps({"version": 1, "credentials": credentials})})


# --- a relay to talk to --------------------------------------------------------------------------------
PASSWORD = "Pw-" + "x" * 29  # a 32-character password like the generated ones
CANARY = "CANARY-pw-6f1b2c9d0e8a7f3b5c4d2e1f"


@dataclass
class RelayThread:
    """An in-process relay on its own event loop in a thread, so tests can use blocking clients."""

    config_dir: Path
    server: RelayServer = field(init=False)
    loop: asyncio.AbstractEventLoop = field(init=False)
    _thread: threading.Thread = field(init=False)

    def start(self) -> RelayThread:
        self.loop = event_loop.new_event_loop()  # the kind the relay's processes run on
        ready = threading.Event()
        self.server = RelayServer(self.config_dir)
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.server.start())
            except BaseException as error:  # handed to the starting thread
                failure.append(error)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    @property
    def relay(self):
        return self.server.relay

    @property
    def ports(self) -> list[int]:
        return self.server.smtp_ports

    @property
    def http_url(self) -> str:
        return f"https://127.0.0.1:{self.server.http_port}"

    def call(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self.call(self.server.shutdown())
        self.call(_cancel_remaining_tasks())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _cancel_remaining_tasks() -> None:
    """What asyncio.run does at exit, for a loop we stop by hand (e.g. TLS sessions still closing)."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class RawSmtp:
    """A byte-level SMTP client: exact bytes out, replies in; STARTTLS on demand."""

    def __init__(self, port: int, host: str = "127.0.0.1", source: str | None = None) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=10, source_address=(source, 0) if source else None)
        self._buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """One (possibly multi-line) reply, as text; "" when the server closed the connection."""
        lines = []
        while True:
            while b"\r\n" not in self._buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return "\n".join(lines)
                self._buf += chunk
            line, self._buf = self._buf.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def cmd(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def starttls(self, context: ssl.SSLContext, ehlo: bool = True) -> None:
        if ehlo:
            assert self.cmd("EHLO client.example").startswith("250")
        assert self.cmd("STARTTLS").startswith("220")
        self.sock = context.wrap_socket(self.sock, server_hostname="mta.test.example")
        if ehlo:
            assert self.cmd("EHLO client.example").startswith("250")

    def auth_plain(self, username: str, password: str) -> str:
        blob = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {blob}")

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()


def https(port: int, tls: ssl.SSLContext, path: str, *, method: str = "GET", body: bytes | None = None,
          headers: dict[str, str] | None = None, user: str | None = None,
          password: str | None = None, source: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTPS request to the relay's HTTP port: (status, headers, body)."""
    all_headers = dict(headers or {})
    if user is not None:
        all_headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if body is not None:
        all_headers.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=10,
                                             source_address=(source, 0) if source else None)
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()
