"""File helpers of the local backend, written once: digests, atomic writes, locks, S3 URLs.

Invariants:

* :func:`blake2b_file` is the one BLAKE2b (64-byte, hex) of a file: the API's ModelDigests, the
  compile cache's artifact and archive digests and the compiler's ``input_archive_blake2b`` agree.
* A file written with :func:`atomic_file` (and so :func:`atomic_copy`, :func:`atomic_write_json`)
  is either absent, its old version or complete: it is written to a hidden temporary file in the
  target's directory, flushed to disk, given mode 0644, then renamed over the target (and the
  directory entry flushed). On any error the temporary file is removed and the target is untouched.
  A writer killed mid-write (``kill -9``) cannot remove its temporary file: the name holds the
  writer's host, PID namespace and pid (``.<target>.<host>-<ns>.<pid>.<random>.partial``), and the next
  :func:`atomic_file` of the same target removes those of this host whose writer is gone
  (:func:`remove_dead_partials`). A temporary file is never at the target's name.
* :func:`flocked` holds an advisory ``flock`` on a lock file (shared for readers, exclusive for
  writers) for the duration of the ``with`` block; its directory is made first.
* :func:`split_s3_url` is the one reading of ``s3://bucket/key``.

Pure: nothing here imports Airflow or TVM.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["CHUNK", "atomic_copy", "atomic_file", "atomic_write_json", "blake2b_file", "flocked", "split_s3_url"]

#: bytes read or copied at a time
CHUNK = 1 << 20


def blake2b_file(path: str | os.PathLike) -> str:
    """BLAKE2b (64-byte digest, hex) of a file's bytes, as in the API's ModelDigests."""
    digest = hashlib.blake2b()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``target`` for writing; on a clean exit of the ``with`` block
    it replaces ``target`` at once (see the module docstring), else it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{_host_tag()}.{os.getpid()}.", suffix=".partial",
                                    dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def _host_tag() -> str:
    """This host's name and PID namespace as they may appear in a temporary file's name (no dots)."""
    host = re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname())[:64] or "host"
    try:  # two containers may share a host name but not their pids
        return f"{host}-{re.sub(r'[^0-9]', '', os.readlink('/proc/self/ns/pid'))}"
    except OSError:
        return host


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def remove_dead_partials(target: str | os.PathLike) -> list[str]:
    """Remove the temporary files of :func:`atomic_file` writes of ``target`` left by writers on this
    host that are gone (killed mid-write); returns their names. Those of other hosts (a shared
    directory) and of live writers are left alone."""
    target = Path(target)
    pattern = re.compile(re.escape(f".{target.name}.{_host_tag()}.") + r"(\d+)\.[^.]+\.partial$")
    removed = []
    try:
        names = os.listdir(target.parent)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match and _pid_gone(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(target.parent / name)
                removed.append(name)
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy ``source`` to ``target`` all at once (:func:`atomic_file`)."""
    with atomic_file(target) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, CHUNK)


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """Write ``value`` as JSON (sorted keys) to ``path`` all at once (:func:`atomic_file`)."""
    with atomic_file(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, sort_keys=True, default=str)


@contextlib.contextmanager
def flocked(lock_path: str | os.PathLike, *, exclusive: bool) -> Iterator[None]:
    """Hold a ``flock`` on ``lock_path`` (created, with its directory, when missing)."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def split_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key`` (the key as written: strip slashes for a prefix)."""
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key
