"""Safe extraction of a model archive and Neo's conventions for finding the model file in it.

Pure Python (tarfile); nothing here imports Airflow, TVM or a framework.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from airflow_neo.local.errors import ModelArchiveError, UnsupportedFrameworkError

__all__ = [
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_TOTAL_BYTES",
    "MODEL_FILENAMES",
    "MODEL_SUFFIXES",
    "PREFERRED_FILENAMES",
    "ModelArchiveError",
    "find_model_file",
    "is_junk",
    "list_files",
    "listing",
    "safe_extract",
]

DEFAULT_MAX_MEMBERS = 10_000
DEFAULT_MAX_TOTAL_BYTES = 4 * 1024**3

#: The model-file suffixes the local backend looks for, per Framework (Neo's conventions):
#: PyTorch ``.pt``/``.pth`` are TorchScript, ``.pt2`` is a ``torch.export`` program.
#: TENSORFLOW is a SavedModel (``saved_model.pb`` beside ``variables/``) or a frozen graph; KERAS an
#: HDF5 or ``.keras`` file; DARKNET the ``.cfg`` (its ``.weights`` lies beside it); MXNET the symbol
#: ``.json`` (its ``.params`` lies beside it). The companion files are the converters' to find
#: (:mod:`airflow_neo.local.convert`).
MODEL_SUFFIXES: dict[str, tuple[str, ...]] = {
    "ONNX": (".onnx",),
    "PYTORCH": (".pt", ".pth", ".pt2"),
    "TFLITE": (".tflite",),
    "XGBOOST": (".model", ".json", ".ubj", ".bst", ".xgb"),
    "TENSORFLOW": (".pb", ".pbtxt"),
    "KERAS": (".h5", ".hdf5", ".keras"),
    "DARKNET": (".cfg",),
    "MXNET": (".json",),
}
#: Exact file names that also count as the model, per Framework (SageMaker's built-in XGBoost
#: algorithm writes ``xgboost-model`` without a suffix).
MODEL_FILENAMES: dict[str, tuple[str, ...]] = {
    "XGBOOST": ("xgboost-model",),
}
#: Exact file names that, when the archive holds exactly one of them, are the model whatever else
#: matches: a SavedModel's ``saved_model.pb`` (TensorFlow writes a ``fingerprint.pb`` beside it).
PREFERRED_FILENAMES: dict[str, tuple[str, ...]] = {
    "TENSORFLOW": ("saved_model.pb", "saved_model.pbtxt"),
}

_COPY_CHUNK = 1024 * 1024
_LISTING_LIMIT = 25
#: The largest extended header (pax records, a GNU long name or link) read; real ones are a few KiB.
MAX_HEADER_BYTES = 1024 * 1024


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo whose extended headers are refused above :data:`MAX_HEADER_BYTES`.

    tarfile reads a pax or GNU long-name header into memory at the size its header declares:
    a few MiB of gzip can declare gigabytes (a memory bomb before any member is seen).
    """

    def _proc_gnulong(self, tarfile):
        _check_header_size(self)
        return super()._proc_gnulong(tarfile)

    def _proc_pax(self, tarfile):
        _check_header_size(self)
        return super()._proc_pax(tarfile)


def _check_header_size(info: tarfile.TarInfo) -> None:
    if info.size > MAX_HEADER_BYTES:
        raise ModelArchiveError(
            f"model archive has an extended header (tar type {info.type!r}) of {_human(info.size)}; "
            f"at most {_human(MAX_HEADER_BYTES)} is allowed: refusing to extract it"
        )


def safe_extract(
    archive_path: str | os.PathLike,
    dest_dir: str | os.PathLike,
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> list[str]:
    """Extract a ``.tar.gz`` (or plain ``.tar``) into ``dest_dir`` after checking every member.

    Rejected, with :class:`ModelArchiveError`: absolute paths, ``..`` components, symbolic and
    hard links, devices, FIFOs and other special members, more than ``max_members`` members,
    more than ``max_total_bytes`` of file data, extended (pax, long-name) headers over
    :data:`MAX_HEADER_BYTES`, and archives that cannot be read. Nothing is
    written before the whole member list has passed the checks. Files are written with mode
    0644, directories 0755; owners and times from the archive are ignored.

    :return: the extracted regular files, as sorted POSIX paths relative to ``dest_dir``, each once.
    """
    archive_path = Path(archive_path)
    dest = Path(dest_dir)
    if not archive_path.is_file():
        raise ModelArchiveError(f"model archive {str(archive_path)!r} does not exist or is not a file")
    try:
        with tarfile.open(archive_path, mode="r:*", tarinfo=_BoundedTarInfo) as tar:
            members = _checked_members(tar, max_members, max_total_bytes)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        # A second, forward-only pass: reading each member right after its header never seeks
        # backwards in the gzip stream (which would decompress from the start again).
        with tarfile.open(archive_path, mode="r:*", tarinfo=_BoundedTarInfo) as tar:
            files = _write_members(tar, members, root, max_total_bytes)
    except ModelArchiveError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError, UnicodeError, ValueError) as err:
        raise ModelArchiveError(f"not a valid .tar.gz: {archive_path.name}: {type(err).__name__}: {err}") from err
    return sorted(set(files))  # a member repeated in the archive is one file (the last copy wins)


def _checked_members(tar: tarfile.TarFile, max_members: int, max_total_bytes: int) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    checked: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
    total = 0
    kinds: dict[PurePosixPath, bool] = {}  # path -> is_dir
    while True:
        member = tar.next()
        if member is None:
            break
        if len(checked) >= max_members:
            raise ModelArchiveError(f"model archive has more than {max_members} members; refusing to extract it")
        rel = _safe_relative_path(member.name)
        if member.issym() or member.islnk():
            kind = "symbolic link" if member.issym() else "hard link"
            raise ModelArchiveError(
                f"model archive member {member.name!r} is a {kind} (to {member.linkname!r}); links are not allowed"
            )
        if member.ischr() or member.isblk() or member.isfifo() or not (member.isfile() or member.isdir()):
            raise ModelArchiveError(
                f"model archive member {member.name!r} is a {_type_name(member)}; only regular files and directories are allowed"
            )
        if rel is None:  # "." or "./": the archive root itself
            if member.isdir():
                continue
            raise ModelArchiveError(f"model archive member {member.name!r} has an empty path")
        is_dir = member.isdir()
        for parent in rel.parents:
            if parent != PurePosixPath(".") and kinds.get(parent) is False:
                raise ModelArchiveError(f"model archive member {member.name!r} lies under {str(parent)!r}, which is a file")
        if rel in kinds and kinds[rel] != is_dir:
            raise ModelArchiveError(f"model archive holds {member.name!r} both as a file and as a directory")
        kinds[rel] = is_dir
        if member.isfile():
            total += member.size
            if total > max_total_bytes:
                raise ModelArchiveError(
                    f"model archive expands to more than {_human(max_total_bytes)}; refusing to extract it"
                )
        checked.append((member, rel))
    return checked


def _safe_relative_path(name: str) -> PurePosixPath | None:
    if not name or "\x00" in name:
        raise ModelArchiveError(f"model archive member {name!r} has an invalid name")
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise ModelArchiveError(f"model archive member {name!r} has an absolute path; only relative paths are allowed")
    parts = [part for part in normalized.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ModelArchiveError(f"model archive member {name!r} leaves the extraction directory ('..'); refusing to extract it")
    if not parts:
        return None
    return PurePosixPath(*parts)


def _write_members(tar: tarfile.TarFile, members, root: Path, max_total_bytes: int) -> list[str]:
    files: list[str] = []
    written = 0
    expected = iter(members)
    for member in iter(tar.next, None):
        if _safe_relative_path(member.name) is None and member.isdir():
            continue
        checked, rel = next(expected, (None, None))
        if checked is None or checked.name != member.name or checked.type != member.type:
            raise ModelArchiveError("model archive changed while it was being extracted")
        target = root.joinpath(*rel.parts)
        # The checks above make this impossible; keep the belt with the braces.
        if root != target and root not in target.parents:
            raise ModelArchiveError(f"model archive member {member.name!r} leaves the extraction directory")
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, 0o755)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - isfile() members always have data
            raise ModelArchiveError(f"model archive member {member.name!r} has no data")
        with source, open(target, "wb") as out:
            while True:
                chunk = source.read(_COPY_CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if written > max_total_bytes:
                    raise ModelArchiveError(
                        f"model archive expands to more than {_human(max_total_bytes)}; refusing to extract it"
                    )
                out.write(chunk)
        os.chmod(target, 0o644)
        files.append(rel.as_posix())
    return files


def _type_name(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "FIFO"
    return f"special member (tar type {member.type!r})"


def _human(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} B"


def is_junk(rel: str | PurePosixPath) -> bool:
    """Files that archiving tools add and that are never the model (macOS resource forks, hidden files)."""
    return any(part == "__MACOSX" or part.startswith(".") for part in PurePosixPath(rel).parts)


def list_files(extracted_dir: str | os.PathLike) -> list[str]:
    """The regular files under ``extracted_dir`` as sorted relative POSIX paths (junk included)."""
    root = Path(extracted_dir)
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            path = Path(dirpath, filename)
            if stat.S_ISREG(path.lstat().st_mode):
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def find_model_file(extracted_dir: str | os.PathLike, framework: str) -> Path:
    """The one model file in an extracted archive, by Neo's suffix conventions for ``framework``.

    Hidden files and ``__MACOSX`` folders are ignored. Raises :class:`ModelArchiveError` when
    no file or more than one file matches (the message lists what the archive holds), and
    :class:`UnsupportedFrameworkError` for a framework the local backend cannot compile.
    """
    framework = str(framework).upper()
    suffixes = MODEL_SUFFIXES.get(framework)
    if suffixes is None:
        raise UnsupportedFrameworkError(
            f"Framework {framework!r} is not supported by the local backend; supported: {sorted(MODEL_SUFFIXES)}"
        )
    root = Path(extracted_dir)
    files = list_files(root)
    names = MODEL_FILENAMES.get(framework, ())
    candidates = [
        rel
        for rel in files
        if not is_junk(rel)
        and (PurePosixPath(rel).suffix.lower() in suffixes or PurePosixPath(rel).name in names)
    ]
    wanted = " or ".join([f"*{suffix}" for suffix in suffixes] + list(names))
    preferred = [rel for rel in candidates if PurePosixPath(rel).name in PREFERRED_FILENAMES.get(framework, ())]
    if len(preferred) == 1:
        return root / preferred[0]
    if len(candidates) == 1:
        return root / candidates[0]
    if not candidates:
        raise ModelArchiveError(
            f"no {framework} model file ({wanted}) in the model archive; it holds {_listing(files)}"
        )
    raise ModelArchiveError(
        f"the model archive holds {len(candidates)} {framework} model files ({wanted}): {_listing(candidates)}; "
        "it must hold exactly one"
    )


def listing(extracted_dir: str | os.PathLike) -> str:
    """What an extracted archive holds, for error messages: ``N file(s): a, b ... and K more``."""
    return _listing(list_files(extracted_dir))


def _listing(files: list[str]) -> str:
    if not files:
        return "no files"
    shown = ", ".join(files[:_LISTING_LIMIT])
    more = f" and {len(files) - _LISTING_LIMIT} more" if len(files) > _LISTING_LIMIT else ""
    return f"{len(files)} file(s): {shown}{more}"


def remove_tree(path: str | os.PathLike) -> None:
    """Remove an extraction directory, ignoring errors."""
    shutil.rmtree(path, ignore_errors=True)
