"""The Dockerfile read as data: the one definition of the image, which ``image.build`` follows.

The Dockerfile stays the source of truth for a Docker build; the Docker-free build reads from it the
facts that define the image (the Python minor, the build context, the venv, the user, the environment,
the entrypoint, that bytecode is compiled) and fails on a Dockerfile it does not understand, so that
the two builds cannot drift apart silently.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
# The PATH of the python:*-slim base images, against which the Dockerfile's ``$PATH`` expands.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerfileError(ValueError):
    pass


@dataclass(frozen=True)
class Facts:
    python: str  # "3.11": the minor of the python:X.Y-slim base
    context: tuple[str, ...]  # what the build stage copies in (pyproject.toml, README.md, operator, mta)
    venv: str  # where the build stage installs this pyproject
    lock: str  # the hash-checked requirements file the build stage installs the dependencies from
    compiled: bool  # bytecode compiled at build time (nothing writes under a read-only root)
    uid: int
    gid: int
    user_name: str
    home: str
    shell: str
    env: dict[str, str]
    entrypoint: list[str]


def stages(text: str) -> list[str]:
    joined = text.replace("\\\n", " ")  # continuation lines joined
    return re.split(r"^FROM ", joined, flags=re.M)[1:]


def instructions(stage: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", stage, re.M)]


def _one(pattern: str, text: str, what: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise DockerfileError(f"Dockerfile: {what} not found (pattern {pattern!r})")
    return match.group(1)


def facts(path: Path = DOCKERFILE) -> Facts:
    build, final = (lambda s: (s[0], s[-1]))(stages(path.read_text()))
    python = _one(r"^python:(\d+\.\d+)-slim\b", final, "the python:X.Y-slim base")
    if _one(r"^python:(\d+\.\d+)-slim\b", build, "the build stage's base") != python:
        raise DockerfileError("Dockerfile: the build and final stages use different Pythons")
    context = tuple(src.rstrip("/") for c in instructions(build, "COPY") for src in shlex.split(c)[:-1])
    run = " ".join(instructions(build, "RUN"))
    venv = _one(r"python -m venv (\S+)", run, "the venv")
    lock = _one(rf"{re.escape(venv)}/bin/pip install --require-hashes -r (\S+)", run,
                "the dependencies installed with `pip install --require-hashes -r LOCK`")
    if lock not in context:
        raise DockerfileError(f"Dockerfile: the lock {lock} is not copied into the build stage")
    if not re.search(rf"{re.escape(venv)}/bin/pip install --no-deps \.(\s|$)", run):
        raise DockerfileError("Dockerfile: the build stage must `pip install --no-deps .` into its venv")
    users = " ".join(instructions(final, "RUN"))
    env: dict[str, str] = {}
    for line in instructions(final, "ENV"):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            env[key] = value.replace("$PATH", BASE_PATH)
    (user,) = instructions(final, "USER")
    uid, _, gid = user.partition(":")
    (entrypoint,) = instructions(final, "ENTRYPOINT")
    result = Facts(
        python=python, context=context, venv=venv, lock=lock,
        compiled=bool(re.search(rf"python -m compileall -q {re.escape(venv)}", run)),
        uid=int(uid), gid=int(gid or uid),
        user_name=_one(r"useradd .*?(\S+)$", users, "the user's name"),
        home=_one(r"--home-dir (\S+)", users, "the user's home"),
        shell=_one(r"--shell (\S+)", users, "the user's shell"),
        env=env, entrypoint=json.loads(entrypoint))
    if int(_one(r"useradd .*--uid (\d+)", users, "useradd --uid")) != result.uid or int(
            _one(r"groupadd .*--gid (\d+)", users, "groupadd --gid")) != result.gid:
        raise DockerfileError("Dockerfile: USER and the useradd/groupadd ids differ")
    return result


def dockerignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore's rule: the last pattern matching the path or one of its parent directories wins."""
    parts = path.split("/")
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*") + "$"
        if any(re.match(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def ignore_patterns(repo: Path = REPO) -> list[str]:
    return [line.strip() for line in (repo / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
