"""The image built without Docker (``make image``): its config is the Dockerfile's final stage, and
containerd's own ``ctr import`` (what ``kind load image-archive`` runs) names it and runs it as UID
10001 on a read-only root, with the project's bytecode compiled in."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from image import dockerfile
from image.build import Image


def _skopeo(archive: Path, *args: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", *args, f"oci-archive:{archive}"], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_image_config_is_the_dockerfiles_final_stage(oci_image: Image) -> None:
    facts = dockerfile.facts()
    config = _skopeo(oci_image.archive, "--config")["config"]
    assert config["User"] == f"{facts.uid}:{facts.gid}"
    assert config["Entrypoint"] == facts.entrypoint
    assert dict(e.split("=", 1) for e in config["Env"]) == facts.env
    layers = _skopeo(oci_image.archive)["Layers"]
    assert len(layers) == 2  # the cached base (Debian, Python, dependencies) and the project's own


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[list[str]]:
    """A containerd of this test's own (its root, state and socket in tmp_path); yields ``ctr``'s argv."""
    for tool in ("containerd", "ctr"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required (apt-get install containerd)", pytrace=False)
    sock = tmp_path / "containerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
                      f'[grpc]\n  address = "{sock}"\n'
                      'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
    log = (tmp_path / "containerd.log").open("wb")
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    ctr = ["ctr", "--address", str(sock), "--namespace", "test"]
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*ctr, "version"], capture_output=True, check=False).returncode != 0:
            assert time.monotonic() < deadline, (tmp_path / "containerd.log").read_text()[-2000:]
            time.sleep(0.2)
        yield ctr
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(tmp_path / "state")], capture_output=True, check=False)


def test_ctr_import_names_it_and_runs_it_as_10001_read_only(oci_image: Image, containerd: list[str]
                                                             ) -> None:
    subprocess.run([*containerd, "images", "import", str(oci_image.archive)], check=True,
                   capture_output=True)
    names = subprocess.run([*containerd, "images", "ls", "-q"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert oci_image.ref in names  # named by the archive itself, no --base-name
    probe = ("import os, mta_relay, mta_operator.cli;"
             "print(os.getuid(), os.getgid(), os.path.exists(mta_relay.__cached__));"
             "open('/probe', 'w')")
    run = subprocess.run([*containerd, "run", "--rm", "--read-only", oci_image.ref, "probe",
                          "/opt/mta/bin/python", "-c", probe], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.stdout.split() == ["10001", "10001", "True"], run.stdout + run.stderr
    assert "Read-only file system" in run.stderr
