"""Build the image as an OCI archive without Docker: mmdebstrap, pip and umoci, cached by input.

Two layers, each cached under ``$MTA_IMAGE_CACHE`` (default ``~/.cache/mta-operator-image``) by a key
of exactly what goes into it:

- ``base-<key>``: a minimal Debian (bookworm, ``--variant=essential``: dpkg, coreutils, bash and the
  other Essential packages, no apt) with Debian's ``python3.X`` for the Dockerfile's ``python:X.Y``,
  CA certificates, the image's user in /etc/passwd, and the venv with the dependencies of the lock
  (``requirements/runtime.txt``, the Dockerfile's) installed from wheels checked against its hashes and
  compiled. Keyed by the Debian recipe and the lock's bytes; cold it takes minutes (mmdebstrap
  downloads and unpacks ~100 packages), so it changes rarely. Debian's mirror is not a snapshot (none
  is reachable here): the versions a build got are listed in ``contents.txt`` beside the archive.
- the app layer: this pyproject's own wheel installed into that venv (no dependencies) and compiled.
  Keyed by the build context's bytes (the Dockerfile's COPY sources less .dockerignore); seconds.

Why Debian's Python and not the python:3.11-slim one: that image comes from a registry we cannot reach,
and bookworm's ``python3.11`` is the same minor the project supports (requires-python >=3.11; CI runs
3.11). A Dockerfile moved to another minor makes this build look for ``python3.Y`` and fail loudly if
bookworm has none.

The archive is an OCI image layout in a tar (``ctr import``, ``docker load`` and
``kind load image-archive`` take it) whose index names the image both ways: ``io.containerd.image.name``
(the full reference, read by containerd and Docker) and ``org.opencontainers.image.ref.name`` (the tag).
Every timestamp is SOURCE_DATE_EPOCH, so the same inputs and the same Debian mirror state give the
same layers. Needs root (mmdebstrap --mode=root, chroot, umoci unpack).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import dockerfile

CACHE_ENV = "MTA_IMAGE_CACHE"
RECIPE = 1  # bump when the way a layer is made changes without its inputs changing
EPOCH = 1704067200  # 2024-01-01T00:00:00Z: every timestamp in the image (reproducible layers)
SUITE = "bookworm"
# The sources this machine's apt uses (deb.debian.org via the package registry); the security suite
# keeps the base current when its key changes.
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# What a read-only relay needs and nothing for a person: no docs, man pages or translations.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
TOOLS = ("mmdebstrap", "umoci", "skopeo", "chroot")
CONTENTS = "contents.txt"


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Image:
    archive: Path
    ref: str  # docker.io/library/mta-operator:<version>
    seconds: float
    cached: bool


def cache_root() -> Path:
    default = Path.home() / ".cache" / "mta-operator-image"
    return Path(os.environ.get(CACHE_ENV, default)).expanduser()


def project() -> dict:
    return tomllib.loads((dockerfile.REPO / "pyproject.toml").read_text())["project"]


def reference() -> str:
    return f"docker.io/library/{project()['name']}:{project()['version']}"


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def context_files() -> list[str]:
    """The build context Docker would send for the COPY sources: tracked and new files, less .dockerignore."""
    facts = dockerfile.facts()
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--",
                             *facts.context], cwd=dockerfile.REPO, capture_output=True, text=True,
                            check=True).stdout.split()
    patterns = dockerfile.ignore_patterns()
    return sorted(n for n in listed if (dockerfile.REPO / n).is_file()
                  and not dockerfile.dockerignored(n, patterns))


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _recipe_bytes() -> str:
    here = Path(__file__).parent
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(here.glob("*.py")))).hexdigest()


def base_key(facts: dockerfile.Facts) -> str:
    return _digest(RECIPE, SUITE, MIRRORS, DPKG_EXCLUDES, _packages(facts),
                   (dockerfile.REPO / facts.lock).read_text(), facts.venv, facts.uid, facts.gid,
                   facts.user_name, facts.home, facts.shell, EPOCH)


def app_key(facts: dockerfile.Facts, base: str) -> str:
    files = context_files()
    content = hashlib.sha256()
    for name in files:
        content.update(name.encode() + b"\0" + (dockerfile.REPO / name).read_bytes() + b"\0")
    return _digest(base, content.hexdigest(), facts, (dockerfile.DOCKERFILE).read_text(), _recipe_bytes())


def _packages(facts: dockerfile.Facts) -> list[str]:
    return [f"python{facts.python}", "ca-certificates"]


def _run(argv: list[str], log: Path, **kw: object) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(["nice", "-n", "10", *argv], stdout=out, stderr=subprocess.STDOUT,
                              check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise ImageError(f"`{' '.join(argv[:3])} ...` failed (exit {proc.returncode}); log: {log}")


def _env() -> dict[str, str]:
    return {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}


def _wheels(what: list[str], out: Path, log: Path) -> Path:
    """Wheels of ``what`` (pip wheel's arguments) from the package registry, plus pip's own wheel, which
    runs from the wheel file inside the chroot (the image needs no pip)."""
    out.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(out), *what], log, env=_env())
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
          "--dest", str(out), "pip"], log, env=_env())
    return next(out.glob("pip-*.whl"))


def _pip_in_chroot(root: str, python: str, pip: str, *args: str) -> str:
    """pip run from its wheel by the venv's interpreter, so it installs into the venv."""
    return f'chroot "{root}" /usr/bin/env -i PATH=/usr/bin:/bin {python} {pip}/pip {" ".join(args)}'


def _build_base(facts: dockerfile.Facts, key: str, work: Path, log: Path) -> Path:
    """base-<key>/layout: an OCI layout with the base layer, tagged ``base``."""
    target = cache_root() / f"base-{key}"
    if (target / "layout" / "index.json").exists():
        return target / "layout"
    wheels = work / "wheels"
    # Every download checked against the lock's hashes (a package without a wheel is built from its
    # checked sdist).
    pip = _wheels(["--require-hashes", "--no-deps", "-r", str(dockerfile.REPO / facts.lock)], wheels, log)
    deps = sorted(p.name for p in wheels.glob("*.whl") if not p.name.startswith("pip-"))
    (wheels / "requirements.txt").write_text("".join(f"/tmp/wheels/{d}\n" for d in deps))
    user = (f"echo '{facts.user_name}:x:{facts.gid}:' >> \"$1/etc/group\" && echo "
            f"'{facts.user_name}:x:{facts.uid}:{facts.gid}::{facts.home}:{facts.shell}' >> \"$1/etc/passwd\"")
    inside_pip = f"/tmp/wheels/{pip.name}"
    hooks = [
        f'mkdir -p "$1/tmp/wheels" && cp {wheels}/* "$1/tmp/wheels/"',
        f'chroot "$1" python{facts.python} -m venv --without-pip {facts.venv}',
        _pip_in_chroot("$1", f"{facts.venv}/bin/python", inside_pip, "install -q --no-index --no-deps",
                       "--no-compile -r /tmp/wheels/requirements.txt"),
        f'chroot "$1" {facts.venv}/bin/python -m compileall -q {facts.venv}',
        'rm -rf "$1/tmp/wheels"',
        user,
        # What Debian put in (the mirror is not a snapshot: this records the versions this build got).
        f'dpkg-query --admindir="$1/var/lib/dpkg" -W -f=\'${{Package}} ${{Version}}\\n\' > {work}/debian.txt',
    ]
    rootfs = work / "base.tar"
    argv = ["mmdebstrap", "--mode=root", "--variant=essential", f"--include={','.join(_packages(facts))}",
            "--aptopt=APT::Install-Recommends \"false\"",
            *[f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES],
            *[f"--customize-hook={h}" for h in hooks], SUITE, str(rootfs), *MIRRORS]
    _run(argv, log, env=_env())
    layout = work / "layout"
    _run(["umoci", "init", "--layout", str(layout)], log)
    _run(["umoci", "new", "--image", f"{layout}:base"], log)
    _run(["umoci", "raw", "add-layer", "--image", f"{layout}:base", "--history.created", _iso(),
          "--history.created_by", f"mmdebstrap {SUITE} {' '.join(_packages(facts))} + venv", str(rootfs)],
         log)
    (work / "requirements.txt").write_text("".join(f"{d}\n" for d in deps))
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.move(str(layout), tmp / "layout")
    shutil.copy(work / "requirements.txt", tmp / "wheels.txt")
    shutil.copy(work / "debian.txt", tmp / "debian.txt")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target / "layout"


def _context(work: Path) -> Path:
    context = work / "context"
    for name in context_files():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dockerfile.REPO / name, context / name)
    return context


def _iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))


def _build_app(facts: dockerfile.Facts, base: Path, work: Path, log: Path) -> Path:
    """The base layout plus the app layer, configured as the Dockerfile's final stage."""
    pip = _wheels(["--no-deps", str(_context(work))], work / "app-wheels", log)
    name = project()["name"].replace("-", "_")
    (wheel,) = (work / "app-wheels").glob(f"{name}-*.whl")
    layout = work / "image"
    shutil.copytree(base, layout, symlinks=True)
    bundle = work / "bundle"
    _run(["umoci", "unpack", "--image", f"{layout}:base", str(bundle)], log)
    rootfs = bundle / "rootfs"
    inside = rootfs / "tmp" / "app"
    inside.mkdir(parents=True)
    shutil.copy(wheel, inside)
    shutil.copy(pip, inside)
    _run(["chroot", str(rootfs), "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", f"{facts.venv}/bin/python",
          f"/tmp/app/{pip.name}/pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
          f"/tmp/app/{wheel.name}"], log)
    site = f"{facts.venv}/lib/python{facts.python}/site-packages"
    packages = [f"{site}/{p.name}" for p in (rootfs / site.lstrip("/")).iterdir()
                if p.name in {"mta_operator", "mta_relay"}]
    if facts.compiled:
        _run(["chroot", str(rootfs), f"{facts.venv}/bin/python", "-m", "compileall", "-q", *packages],
             log, env=_env())
    shutil.rmtree(inside)
    # Clamp what pip and compileall wrote to the epoch: the layer's bytes then depend on content only.
    _run(["find", str(rootfs), "-newermt", f"@{EPOCH}", "-exec", "touch", "-h", "-d", f"@{EPOCH}", "{}",
          "+"], log)
    tag = project()["version"]
    _run(["umoci", "repack", "--image", f"{layout}:{tag}", "--refresh-bundle", "--history.created", _iso(),
          "--history.created_by", f"pip install {wheel.name}", str(bundle)], log)
    config = ["umoci", "config", "--image", f"{layout}:{tag}", "--created", _iso(),
              "--history.created", _iso(), "--history.created_by", "Dockerfile: final stage",
              "--config.user", f"{facts.uid}:{facts.gid}", "--config.workingdir", "/",
              "--config.label", f"org.opencontainers.image.version={tag}",
              "--config.label", f"org.opencontainers.image.title={project()['name']}",
              *[a for e in sorted(facts.env.items()) for a in ("--config.env", "=".join(e))]]
    for arg in facts.entrypoint:
        config += ["--config.entrypoint", arg]
    _run(config, log)
    _run(["umoci", "rm", "--image", f"{layout}:base"], log)
    _run(["umoci", "gc", "--layout", str(layout)], log)
    index = json.loads((layout / "index.json").read_text())
    for manifest in index["manifests"]:
        manifest["annotations"] = {"io.containerd.image.name": reference(),
                                   "org.opencontainers.image.ref.name": tag}
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
    return layout


def _tar(layout: Path, out: Path) -> None:
    """A deterministic tar of the layout: sorted names, root-owned, every mtime the epoch."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layout.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(layout)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = EPOCH
            info.mode = 0o755 if path.is_dir() else 0o644
            with (path.open("rb") if path.is_file() else contextlib.nullcontext(io.BytesIO())) as data:
                tar.addfile(info, data if path.is_file() else None)


def _contents(base: Path) -> str:
    """What is in the image: Debian's packages and the venv's wheels, with their versions."""
    debian = (base / "debian.txt").read_text()
    wheels = "".join(f"{'-'.join(w.split('-')[:2])}\n" for w in (base / "wheels.txt").read_text().split())
    return f"# Debian {SUITE} packages\n{debian}# Python wheels in the venv\n{wheels}"


def _prune(keep: Path, images: int = 3) -> None:
    """Each source change makes an archive (~80 MiB): keep the newest few, and bases still in use."""
    built = sorted(cache_root().glob("image-*/"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in built if p != keep][images - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def build(out_dir: Path | None = None) -> Image:
    """The image's archive for the current context, from the cache when its key is there."""
    missing = missing_tools()
    if missing:
        raise ImageError(f"missing {', '.join(missing)} (apt-get install mmdebstrap umoci skopeo)")
    if os.geteuid() != 0:
        raise ImageError("the image build needs root (mmdebstrap --mode=root, chroot, umoci unpack)")
    started = time.monotonic()
    facts = dockerfile.facts()
    bkey = base_key(facts)
    key = app_key(facts, bkey)
    target = cache_root() / f"image-{key}"
    archive = target / f"{project()['name']}-{project()['version']}.oci.tar"
    cached = archive.exists()
    if not cached:
        cache_root().mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="image-", dir=cache_root()))
        log = work.with_suffix(".log")
        try:
            base = _build_base(facts, bkey, work / "base", log)
            layout = _build_app(facts, base, work / "app", log)
            target.mkdir(parents=True, exist_ok=True)
            partial = archive.with_suffix(".partial")
            _tar(layout, partial)
            partial.rename(archive)
            (target / CONTENTS).write_text(_contents(base.parent))
            shutil.move(str(log), target / "build.log")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _prune(keep=target)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        copy = out_dir / archive.name
        copy.unlink(missing_ok=True)
        try:
            os.link(archive, copy)
        except OSError:  # another file system
            shutil.copy(archive, copy)
        archive = copy
        (out_dir / f"{project()['name']}-{project()['version']}.{CONTENTS}").write_text(
            (target / CONTENTS).read_text())
    return Image(archive, reference(), time.monotonic() - started, cached)
