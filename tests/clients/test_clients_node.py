"""Nodemailer (npm, version pinned in tests/clients/node/package-lock.json), driven by
tests/clients/node/send.js: STARTTLS with ``secure: false`` + ``requireTLS: true``, implicit TLS with
``secure: true``, the test CA trusted through ``tls.ca``.

A message given as ``raw`` goes on the wire as it is (Nodemailer dot-stuffs it); one Nodemailer composes
itself (``streamTransport`` gives the bytes it would send, with its own Message-ID and Date) is sent as
``raw`` the same way, so what arrives is compared with exactly what Nodemailer produced.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from clientkit import (
    APP_PASSWORD,
    APP_USER,
    ATTACHMENT,
    SENDER,
    TEXT_PART,
    arrival,
    assert_arrived_intact,
    field_name,
    header_fields,
    message,
    program,
    run,
)

pytestmark = pytest.mark.node
NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def nodemailer() -> Path:
    """``send.js`` with its node_modules installed by ``npm ci`` from the lock file (kept between runs
    while the installed Nodemailer is the locked one; node_modules is git-ignored)."""
    node = program("node", "nodejs (node >= 20)")
    npm = program("npm", "npm")
    pinned = json.loads((NODE_DIR / "package-lock.json").read_text())["packages"]["node_modules/nodemailer"]
    installed = NODE_DIR / "node_modules" / "nodemailer" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != pinned["version"]:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--fetch-retries=0"], cwd=NODE_DIR,
                              capture_output=True, timeout=300, check=False)
        if done.returncode != 0:
            pytest.fail(f"`npm ci` in {NODE_DIR} failed (exit {done.returncode}): the npm registry must be "
                        "reachable, or run `npm ci --prefix tests/clients/node` before the suite (the "
                        "test bed's network namespace reaches no registry)\n"
                        f"{done.stderr.decode(errors='replace')[-2000:]}", pytrace=False)
    return Path(node)


def send(node: Path, job: dict) -> dict:
    done = run([str(node), str(NODE_DIR / "send.js")], input=json.dumps(job).encode(), timeout=120)
    return json.loads(done.stdout)


def job(relay, recipient: str, *, implicit: bool) -> dict:
    return {"host": "127.0.0.1", "port": relay.implicit_port if implicit else relay.submission_port,
            "secure": implicit, "requireTLS": not implicit, "caFile": str(relay.ca_file),
            "name": "client.example", "user": APP_USER, "pass": APP_PASSWORD, "from": SENDER,
            "to": recipient}


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
def test_nodemailer_raw(nodemailer, relay, receiver, dns_server, recipient, token, workdir, implicit) -> None:
    submitted = message(token, recipient, date_and_id=False)
    (workdir / "message.eml").write_bytes(submitted)
    result = send(nodemailer, {**job(relay, recipient, implicit=implicit),
                               "rawFile": str(workdir / "message.eml")})
    assert result["accepted"] == [recipient], result
    assert_arrived_intact(arrival(receiver, recipient), submitted, dns_server)


def test_nodemailer_composed(nodemailer, relay, receiver, dns_server, recipient, token, workdir) -> None:
    (workdir / "blob.bin").write_bytes(ATTACHMENT)
    result = send(nodemailer, {
        **job(relay, recipient, implicit=False), "outFile": str(workdir / "composed.eml"),
        "compose": {"from": f"App <{SENDER}>", "to": recipient, "subject": f"Grüße {token}",
                    "text": TEXT_PART,
                    "attachment": {"filename": "blob.bin", "file": str(workdir / "blob.bin")}}})
    assert result["accepted"] == [recipient], result
    composed = (workdir / "composed.eml").read_bytes()
    names = [field_name(f) for f in header_fields(composed)[0]]
    assert "message-id" in names, names  # Nodemailer's own: the relay adds neither
    assert "date" in names, names
    arrived = assert_arrived_intact(arrival(receiver, recipient), composed, dns_server)
    assert arrived.appended == {}
