"""The local backend's file helpers (airflow_neo.local.files)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest

from airflow_neo.local.files import atomic_copy, atomic_file, atomic_write_json, blake2b_file, flocked, split_s3_url


def test_blake2b_file_is_the_api_digest(tmp_path):
    path = tmp_path / "a.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # several chunks and a partial one
    path.write_bytes(data)
    assert blake2b_file(path) == hashlib.blake2b(data).hexdigest()
    assert len(blake2b_file(path)) == 128


def test_atomic_copy_and_json(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 5000)
    target = tmp_path / "deep" / "er" / "out.bin"
    atomic_copy(source, target)
    assert target.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    atomic_write_json(tmp_path / "v.json", {"b": 1, "a": Path("/p")})
    assert (tmp_path / "v.json").read_text() == '{"a": "/p", "b": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "src.bin", "v.json"]  # no temporary file left


def test_a_failed_atomic_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def _hold_lock(path: str, seconds: float, started) -> None:
    with flocked(path, exclusive=True):
        started.set()
        time.sleep(seconds)


def test_flocked_excludes_other_processes(tmp_path):
    lock = tmp_path / "sub" / ".lock"  # its directory is made
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(lock), 1.0, started))
    proc.start()
    assert started.wait(30)
    began = time.monotonic()
    with flocked(lock, exclusive=False):
        waited = time.monotonic() - began
    proc.join(10)
    assert waited > 0.3  # the shared lock waited for the exclusive one
    with flocked(lock, exclusive=False), flocked(lock, exclusive=False):
        pass  # shared locks do not exclude each other


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("s3://bucket/models/net.tar.gz", ("bucket", "models/net.tar.gz")),
        ("s3://bucket/prefix/", ("bucket", "prefix/")),
        ("s3://bucket", ("bucket", "")),
    ],
)
def test_split_s3_url(url, parts):
    assert split_s3_url(url) == parts


def test_temporary_files_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    from airflow_neo.local.files import _host_tag

    target = tmp_path / "model.tar.gz"
    dead_pid = 2**22 + 12345  # above any pid_max: never a live process
    dead = tmp_path / f".model.tar.gz.{_host_tag()}.{dead_pid}.abc_12.partial"  # a writer killed mid-copy
    live = tmp_path / f".model.tar.gz.{_host_tag()}.{os.getpid()}.xyz.partial"  # a writer still at work
    remote = tmp_path / f".model.tar.gz.otherhost-1.{dead_pid}.abc.partial"  # another host's (a shared directory)
    other = tmp_path / f".other.tar.gz.{_host_tag()}.{dead_pid}.abc.partial"  # another target's
    for path in (dead, live, remote, other):
        path.write_bytes(b"half")
    with atomic_file(target) as handle:
        handle.write(b"whole")
    assert target.read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, remote.name, other.name])
