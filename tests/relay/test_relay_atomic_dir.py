"""Kubelet's ``..data`` layout (``mta_relay.atomic_dir``): one swap per generation, readers never see a
mix, names come and go, old snapshots are removed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from mta_relay.atomic_dir import DATA, holds, publish, snapshot

pytestmark = pytest.mark.unit


def _snapshots(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith("..") and p.is_dir() and not p.is_symlink()]


def test_publish_swaps_data_and_links_each_top_level_name(tmp_path: Path) -> None:
    one = publish(tmp_path, {"credentials-000.json": b"{}"})
    two = publish(tmp_path, {"credentials-000.json": b"[]"})
    assert (tmp_path / DATA).resolve() == two == snapshot(tmp_path)
    assert not one.exists()
    assert os.readlink(tmp_path / "credentials-000.json") == f"{DATA}/credentials-000.json"
    assert (tmp_path / "credentials-000.json").read_bytes() == b"[]"
    assert sorted(p.name for p in tmp_path.iterdir() if p not in _snapshots(tmp_path)) == [
        DATA, "credentials-000.json"]


def test_names_added_and_removed_with_subdirectories(tmp_path: Path) -> None:
    publish(tmp_path, {"relay.yaml": b"a", "tls/tls.crt": b"cert", "dkim/x.test.pem": b"k"})
    assert (tmp_path / "tls" / "tls.crt").read_bytes() == b"cert"
    assert (tmp_path / "dkim" / "x.test.pem").read_bytes() == b"k"
    publish(tmp_path, {"relay.yaml": b"b", "tls/tls.crt": b"cert2", "new.txt": b"n"})
    assert (tmp_path / "tls" / "tls.crt").read_bytes() == b"cert2"
    assert (tmp_path / "new.txt").read_bytes() == b"n"
    assert not (tmp_path / "dkim").exists()
    assert not (tmp_path / "dkim").is_symlink()
    assert len(_snapshots(tmp_path)) == 1


def test_old_and_abandoned_snapshots_are_removed_other_entries_kept(tmp_path: Path) -> None:
    (tmp_path / "..2020_01_01_00_00_00.crashed").mkdir()  # a writer that died before its swap
    (tmp_path / "credentials").mkdir()  # a nested volume in the same directory
    publish(tmp_path, {"relay.yaml": b"a"})
    publish(tmp_path, {"relay.yaml": b"b"})
    assert _snapshots(tmp_path) == [snapshot(tmp_path)]
    assert (tmp_path / "credentials").is_dir()


def test_modes_and_readable_directories(tmp_path: Path) -> None:
    new = publish(tmp_path, {"a": b"1", "sub/b": b"2"}, {"a": 0o600})
    assert (new / "a").stat().st_mode & 0o777 == 0o600
    assert new.stat().st_mode & 0o777 == 0o755
    assert (new / "sub").stat().st_mode & 0o777 == 0o755


def test_holds_compares_the_published_generation(tmp_path: Path) -> None:
    assert not holds(tmp_path, {})
    publish(tmp_path, {"a": b"1", "sub/b": b"2"})
    assert holds(tmp_path, {"a": b"1", "sub/b": b"2"})
    assert not holds(tmp_path, {"a": b"1"})
    assert not holds(tmp_path, {"a": b"1", "sub/b": b"3"})


def test_plain_directory_is_its_own_snapshot(tmp_path: Path) -> None:
    assert snapshot(tmp_path) == tmp_path


@pytest.mark.parametrize("name", ["..data", "../x", "/abs", "a/../b"])
def test_names_outside_the_layout_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="published name"):
        publish(tmp_path, {name: b""})


def test_a_reader_never_sees_a_mix_of_generations(tmp_path: Path) -> None:
    names = [f"f{i}" for i in range(8)]
    publish(tmp_path, dict.fromkeys(names, b"0"))
    stop = threading.Event()

    def writer() -> None:
        generation = 0
        while not stop.is_set():
            generation += 1
            publish(tmp_path, dict.fromkeys(names, str(generation).encode()))

    thread = threading.Thread(target=writer)
    thread.start()
    seen, mixed = 0, []
    try:
        while seen < 300:
            try:
                snap = snapshot(tmp_path)
                values = {(snap / name).read_bytes() for name in names}
            except FileNotFoundError:
                continue  # the snapshot was removed while being read: read again, as the loader does
            seen += 1
            if len(values) != 1:
                mixed.append(values)
    finally:
        stop.set()
        thread.join()
    assert not mixed
