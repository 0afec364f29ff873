"""The relay peer: ``mta-relay --config DIR`` with a config directory written here through the relay's own
config model (``mta_relay.config``, version 1), so the format is the documented one by construction:
SMTP and HTTP on loopback, TLS from the bench CA, one credential with a generated 32-character password
(the fast verifier the operator renders for generated passwords) that may send from example.com, the
spool under the bench's temp dir, delivery by smarthost to the bench's null sink.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from mta_relay import config, passwords
from mta_relay.spool import slot_files

from bench.frontdoor.certs import CertFiles
from bench.frontdoor.children import free_port, spawn, wait_for_port
from bench.frontdoor.cpulimit import CpuGroup
from bench.frontdoor.peers import RELAY, Peer, wait_drained

USERNAME = "bench"
SENDER_DOMAIN = "example.com"
# All the load comes from 127.0.0.1: the per-IP connection limit must not be what is measured (Postfix
# exempts $mynetworks from its per-client limits the same way).
MAX_CONNECTIONS_PER_IP = 500


def available() -> str | None:
    """Why the relay cannot be benchmarked yet, or None when it can."""
    if importlib.util.find_spec("mta_relay.cli") is None:
        return "mta_relay.cli is not there yet"
    if _executable() is None:
        return "the mta-relay console script is not installed (pip install -e .)"
    return None


@functools.cache
def takes_workers() -> bool:
    """Whether this mta-relay has ``--workers`` (serving processes sharing the SMTP sockets): asked of its
    ``--help``, since relays before it refuse the option."""
    executable = _executable()
    if executable is None:
        return False
    done = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=60, check=False)
    return "--workers" in done.stdout


def write_config(config_dir: Path, *, smtp_port: int, http_port: int, certs: CertFiles, spool: Path,
                 sink_port: int, password: str, events: config.Events | None = None) -> None:
    """``events``: the ``events`` section (webhooks); None: the default, no webhooks."""
    settings = config.RelaySettings(
        hostname="relay.bench.localhost",
        smtp_listeners=[config.SmtpListener(port=smtp_port, address="127.0.0.1")],
        http=config.HttpListener(port=http_port, address="127.0.0.1"),
        tls=config.TlsFiles(cert_file=str(certs.cert_chain), key_file=str(certs.key)),
        domains=[config.SendingDomain(domain=SENDER_DOMAIN)],
        limits=config.Limits(max_connections_per_ip=MAX_CONNECTIONS_PER_IP),
        delivery=config.Delivery(mode="Smarthost",
                                 smarthost=config.Smarthost(host="127.0.0.1", port=sink_port, tls="None")),
        queue=config.Queue(path=str(spool)),
        **({"events": events} if events is not None else {}),
    )
    credential = config.Credential(username=USERNAME, password_verifier=passwords.fast_verifier(password),
                                   domains=config.Domains(mode="Specific", names=[SENDER_DOMAIN]))
    config_dir.mkdir(parents=True)
    (config_dir / "relay.json").write_text(settings.model_dump_json(by_alias=True))
    shard_dir = config_dir / settings.credentials_dir
    shard_dir.mkdir()
    shard = shard_dir / "credentials-000.json"
    shard.write_text(config.CredentialShard(credentials=[credential]).model_dump_json(by_alias=True))
    shard.chmod(0o600)


def generated_password() -> str:
    return passwords.generate_password(32)


def start(workdir: Path, certs: CertFiles, sink_port: int, password: str, *, traced: bool = False,
          name: str = "relay", peer_name: str = RELAY, events: config.Events | None = None,
          cpu_group: CpuGroup | None = None, workers: int | None = None) -> Peer:
    """``name``: prefix of the config and spool directories in ``workdir`` (a second start needs its own);
    ``peer_name``: the peer's name in results; ``events``: as in ``write_config``; ``cpu_group``: the
    relay starts in it (its automatic worker count follows that limit); ``workers``: ``--workers N``,
    None to leave the count to the relay (the caller checks ``takes_workers`` first)."""
    port = free_port()
    config_dir, spool = workdir / f"{name}-config", workdir / f"{name}-spool"
    write_config(config_dir, smtp_port=port, http_port=free_port(), certs=certs, spool=spool,
                 sink_port=sink_port, password=password, events=events)
    executable = _executable()
    assert executable is not None  # checked by available()
    argv = [executable, "--config", str(config_dir), "--log-level", "INFO"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    child = spawn(name, argv, workdir, traced=traced, cpu_group=cpu_group)
    wait_for_port(child, port)
    # Non-empty slot files are accepted mail not yet delivered to the sink (mta_relay.spool).
    return Peer(peer_name, port, USERNAME, password, [child],
                settle=lambda: wait_drained(lambda: _spooled(spool)), cpu_group=cpu_group)


def _spooled(spool: Path) -> int:
    slots = spool / "slots"
    return sum(1 for p in slot_files(slots) if _size(p)) if slots.exists() else 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # removed (not kept as a free slot) while we looked
        return 0


def _executable() -> str | None:
    beside = Path(sys.executable).parent / "mta-relay"
    return str(beside) if beside.exists() else shutil.which("mta-relay")
