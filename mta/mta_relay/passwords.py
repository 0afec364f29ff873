"""Password verifiers and their checking, without stalling the event loop.

Two verifier kinds, chosen by the operator when it renders a credential:
- ``hmac-sha256$<salt>$<digest>`` for generated passwords (32 random characters, ~190 bits). No
  dictionary or brute force reaches that, so a slow hash would buy nothing and cost CPU on every AUTH;
  a salted HMAC is checked inline in microseconds.
- argon2id (PHC string) for user-supplied passwords, which may be weak: memory-hard, so a stolen
  credential table is expensive to attack. A check takes tens of milliseconds, so it runs in a small
  dedicated thread pool (it cannot starve the spool's threads), and successes are cached for a few
  minutes under a keyed hash of (verifier, password) so a busy app does not pay it per connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

FAST_SCHEME = "hmac-sha256"
_hasher = PasswordHasher()


def generate_password(length: int = 32) -> str:
    """An operator-style generated password: letters and digits only, so it survives any client."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def fast_verifier(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hmac.new(salt, password.encode(), hashlib.sha256).digest()
    return f"{FAST_SCHEME}${_b64(salt)}${_b64(digest)}"


def argon2_verifier(password: str) -> str:
    return _hasher.hash(password)


def verify_fast(verifier: str, password: bytes) -> bool:
    try:
        scheme, salt, digest = verifier.split("$")
        expected = base64.b64decode(digest, validate=True)
        key = base64.b64decode(salt, validate=True)
    except ValueError:
        return False
    return scheme == FAST_SCHEME and hmac.compare_digest(hmac.new(key, password, hashlib.sha256).digest(),
                                                         expected)


def _verify_argon2(verifier: str, password: bytes) -> bool:
    try:
        return _hasher.verify(verifier, password)
    except (VerificationError, InvalidHashError):
        return False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class PasswordChecker:
    """Checks a password against a verifier; argon2id off the loop, with a verified-credential cache."""

    def __init__(self, cache_seconds: float = 300, cache_entries: int = 10_000, threads: int = 2) -> None:
        self._cache_seconds = cache_seconds
        self._cache_entries = cache_entries
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._cache_key = secrets.token_bytes(32)  # per process: cache keys are useless elsewhere
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")

    async def check(self, verifier: str, password: bytes) -> bool:
        if verifier.startswith(FAST_SCHEME + "$"):
            return verify_fast(verifier, password)
        key = hmac.new(self._cache_key, verifier.encode() + b"\0" + password, hashlib.sha256).digest()
        now = time.monotonic()
        expiry = self._cache.get(key)
        if expiry is not None and expiry > now:
            return True
        ok = await asyncio.get_running_loop().run_in_executor(self._pool, _verify_argon2, verifier, password)
        if ok:
            self._cache[key] = now + self._cache_seconds
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        return ok

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
