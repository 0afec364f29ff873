"""The Postfix peer: a private Postfix instance (its own config dir, queue and logs under the bench's temp
dir; nothing of the machine's mail system is touched) with Dovecot SASL, STARTTLS required, AUTH
required to relay, Postfix's normal fsync'd queue, relaying every message to the bench's null sink.

Debian's postfix and dovecot-core packages; master and dovecot run in the foreground as children of the
bench (under strace), so stopping them is a signal to a known pid.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import pwd
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.frontdoor.certs import CertFiles
from bench.frontdoor.children import free_port, spawn, wait_for_port
from bench.frontdoor.cpulimit import CpuGroup
from bench.frontdoor.peers import POSTFIX, Peer, wait_drained

MASTER = "/usr/lib/postfix/sbin/master"
QUEUE_DIRS = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private",
              "saved", "trace")
# Debian's master.cf services, chroot off (the instance lives in a temp dir), plus our smtpd listener.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""
MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.localhost
mydomain = bench.localhost
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions =
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_security_options = noanonymous
smtp_tls_security_level = none
maillog_file = {root}/log/postfix.log
maillog_file_prefixes = {root}
biff = no
"""
# Dovecot as Postfix's SASL server only: no mail protocols, passwords as salted SHA-512 (a fast salted
# hash, like the relay's verifier for generated passwords), no auth cache.
DOVECOT_CONF = """\
base_dir = {root}/dovecot/run
state_dir = {root}/dovecot/state
log_path = {root}/log/dovecot.log
protocols =
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 0
passdb {{
  driver = passwd-file
  args = scheme=SSHA512 {root}/dovecot/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener {root}/queue/private/auth {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""


def ssha512(password: str) -> str:
    """Dovecot's {SSHA512} scheme: base64(sha512(password + salt) + salt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


@dataclass(frozen=True)
class PostfixPeer:
    root: Path
    port: int
    sink_port: int
    certs: CertFiles
    username: str
    password: str

    def prepare(self) -> None:
        """Writes the instance: config, queue tree with Postfix's ownership and modes, Dovecot users."""
        postfix, postdrop = pwd.getpwnam("postfix"), grp.getgrnam("postdrop")
        self.root.chmod(0o755)  # the postfix user walks into its queue under here
        for sub in ("etc", "log", "dovecot/run", "dovecot/state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        values = {"root": self.root, "port": self.port, "sink_port": self.sink_port,
                  "cert": self.certs.cert_chain, "key": self.certs.key}
        (self.root / "etc/main.cf").write_text(MAIN_CF.format(**values))
        (self.root / "etc/master.cf").write_text(MASTER_CF.format(**values))
        (self.root / "etc/dovecot.conf").write_text(DOVECOT_CONF.format(**values))
        users = self.root / "dovecot/users"
        users.write_text(f"{self.username}:{ssha512(self.password)}\n")
        users.chmod(0o640)
        os.chown(users, 0, grp.getgrnam("dovecot").gr_gid)  # Dovecot's auth process reads it as "dovecot"
        queue = self.root / "queue"
        queue.mkdir(mode=0o755)
        (queue / "pid").mkdir(mode=0o755)
        for name in QUEUE_DIRS:
            _own_dir(queue / name, 0o700, postfix.pw_uid, 0)
        _own_dir(queue / "maildrop", 0o730, postfix.pw_uid, postdrop.gr_gid)
        _own_dir(queue / "public", 0o710, postfix.pw_uid, postdrop.gr_gid)
        _own_dir(self.root / "data", 0o700, postfix.pw_uid, postfix.pw_gid)

    def dovecot_argv(self) -> list[str]:
        return [_which("dovecot"), "-F", "-c", str(self.root / "etc/dovecot.conf")]

    def master_argv(self) -> list[str]:
        return [MASTER, "-d", "-c", str(self.root / "etc")]

    def queued(self) -> int:
        """Messages still in Postfix's queue (accepted but not yet relayed to the sink)."""
        queue = self.root / "queue"
        return sum(len(files) for name in ("incoming", "active", "deferred")
                   for _, _, files in os.walk(queue / name))


def _own_dir(path: Path, mode: int, uid: int, gid: int) -> None:
    path.mkdir(mode=mode, exist_ok=True)
    os.chown(path, uid, gid)
    path.chmod(mode)


def _which(program: str) -> str:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if not found:
        raise FileNotFoundError(f"{program} not found: install the Debian packages in bench/README.md")
    return found


def start(workdir: Path, certs: CertFiles, sink_port: int, password: str, *, traced: bool = False,
          name: str = "postfix", cpu_group: CpuGroup | None = None) -> Peer:
    """``name``: the instance's directory under ``workdir`` (a second start needs its own); ``cpu_group``:
    Dovecot and Postfix's master start in it, so the whole instance shares one limit, as the relay's
    processes do."""
    instance = PostfixPeer(workdir / name, free_port(), sink_port, certs, "bench", password)
    instance.root.mkdir()
    instance.prepare()
    dovecot = spawn(f"{name}-dovecot", instance.dovecot_argv(), workdir, traced=traced, cpu_group=cpu_group)
    _wait_for(lambda: (instance.root / "queue/private/auth").exists(), 20, "Dovecot's auth socket")
    master = spawn(name, instance.master_argv(), workdir, traced=traced, cpu_group=cpu_group)
    peer = Peer(POSTFIX, instance.port, instance.username, password, [dovecot, master],
                settle=lambda: wait_drained(instance.queued), cpu_group=cpu_group)
    wait_for_port(master, instance.port)
    return peer


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)
