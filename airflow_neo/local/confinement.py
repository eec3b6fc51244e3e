"""Which local files a local job may read and write: the roots of ``[neo] local_allowed_paths``.

A local job reads its model (``InputConfig.S3Uri``) and sample inputs (``verify_inputs``) and
writes its artifact (``OutputConfig.S3OutputLocation``) on the worker's file system, with the
worker's rights. A ``file://`` URI or absolute path there is accepted only when it lies under one
of the allowed roots: by default ``$AIRFLOW_HOME`` and the system temp dir
(``tempfile.gettempdir()``), else the directories configured, or everything with ``*``.

Invariants:

* a path is judged by where it really is: :func:`resolve` is ``os.path.realpath`` (symlinks
  followed, ``..`` collapsed; for a path that does not exist yet, its nearest existing parent is
  resolved and the rest is taken as written), and the roots are resolved the same way, so neither
  a symlink nor ``..`` leads outside a root;
* a refusal is a :class:`PathNotAllowed` (a ValueError) naming the field, the location as given,
  the resolved path, the allowed roots and the option to change;
* ``s3://`` (and any non-local location) is not judged here;
* pure: nothing here imports Airflow; the roots are given, never read from a configuration.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence

__all__ = [
    "ALLOW_ALL",
    "OPTION",
    "PathNotAllowed",
    "check_allowed_paths",
    "confine",
    "default_roots",
    "is_allowed",
    "parse_allowed_paths",
    "resolve",
]

#: the option that sets the roots (named in every refusal)
OPTION = "[neo] local_allowed_paths"
#: the one root that allows every path (the explicit opt-out)
ALLOW_ALL = "*"


class PathNotAllowed(ValueError):
    """A local path outside the allowed roots."""

    def __init__(self, field: str, location: str, resolved: str, roots: Sequence[str]):
        self.field, self.location, self.resolved, self.roots = field, location, resolved, tuple(roots)
        #: the refusal without the field and location
        self.detail = (f"resolves to {resolved}, outside {OPTION} ({', '.join(roots)}); "
                       "add its directory to local_allowed_paths")
        super().__init__(f"{field} {location} {self.detail}")


def default_roots(airflow_home: str | None = None) -> tuple[str, ...]:
    """``airflow_home`` (default ``$AIRFLOW_HOME``, else ``~/airflow``) and the system temp dir."""
    home = airflow_home or os.environ.get("AIRFLOW_HOME") or "~/airflow"
    return _unique([os.path.abspath(os.path.expanduser(home)), os.path.abspath(tempfile.gettempdir())])


def parse_allowed_paths(value: str | None, *, airflow_home: str | None = None) -> tuple[str, ...]:
    """The roots of an option value: empty -> :func:`default_roots`; ``*`` -> everything; else a
    comma-separated list of absolute directories (``~`` expanded). A ValueError names the option,
    the value and what is allowed."""
    text = (value or "").strip()
    if not text:
        return default_roots(airflow_home)
    items = [item.strip() for item in text.split(",") if item.strip()]
    return check_allowed_paths([os.path.expanduser(item) for item in items], what=f"{OPTION} {value!r}")


def check_allowed_paths(roots: Iterable[str], *, what: str = "allowed_paths") -> tuple[str, ...]:
    """``roots`` as a tuple when each is ``*`` or an absolute path and there is at least one."""
    if isinstance(roots, str):
        raise ValueError(f"{what}: give a list of directories, not one string; got {roots!r}")
    found = tuple(roots)
    if not found:
        raise ValueError(f"{what}: give at least one absolute directory, or * to allow every path")
    for root in found:
        if not isinstance(root, str) or (root != ALLOW_ALL and not os.path.isabs(root)):
            raise ValueError(f"{what}: {root!r} is not an absolute directory; give absolute directories "
                             "separated by commas, or * to allow every path")
    if ALLOW_ALL in found and len(found) > 1:
        raise ValueError(f"{what}: * allows every path; give it alone, not with directories")
    return found


def resolve(path: str) -> str:
    """Where ``path`` really is: symlinks of its existing part followed, ``..`` collapsed."""
    return os.path.realpath(os.path.abspath(path))


def is_allowed(resolved: str, roots: Sequence[str]) -> bool:
    """Whether the resolved path lies in (or is) one of ``roots``."""
    if ALLOW_ALL in roots:
        return True
    for root in roots:
        real_root = resolve(root)
        if resolved == real_root or os.path.commonpath([resolved, real_root]) == real_root:
            return True
    return False


def confine(field: str, location: str, path: str, roots: Sequence[str]) -> str:
    """The resolved ``path`` (what the local ``location`` of ``field`` names) when it lies under
    ``roots``; else :class:`PathNotAllowed`. Use the returned path for the read or write."""
    resolved = resolve(path)
    if not is_allowed(resolved, roots):
        raise PathNotAllowed(field, location, resolved, roots)
    return resolved


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
