"""Fuzzing safe_extract and find_model_file (airflow_neo/local/archive.py) with hostile archives.

Archives are written header by header (``TarInfo.tobuf``) so sizes, types and link targets can
lie, then compressed (gzip, bzip2, xz or none) and optionally damaged (truncated, bytes flipped,
replaced by random bytes). Generated: random bytes, truncated gzip, size and member-count bombs
(against small limits), tar-in-tar, deep, long and unicode paths, absolute paths and ``..``,
symbolic and hard links pointing outside, sparse and contiguous members, unknown member types,
duplicate members, devices and FIFOs.

Property: either a clean extraction (only regular files and directories, all inside the target
directory, the returned list matching what is on disk) or :class:`ModelArchiveError` with a
message; never another exception; nothing written outside the target directory (a sentinel
tree next to it, the working directory and the temp directory are checked after every example).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from airflow_neo.local.archive import (
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_TOTAL_BYTES,
    MAX_HEADER_BYTES,
    find_model_file,
    safe_extract,
)
from airflow_neo.local.errors import ModelArchiveError, UnsupportedFrameworkError
from tests.fuzz import examples

# ----------------------------------------------------------------------------------------------
# strategies

_SEGMENT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12)
_HOSTILE_NAMES = [
    "..", "../model.onnx", "../../outside/sentinel.txt", "a/../../escape", "/etc/passwd", "/tmp/x.onnx", "//x",
    "C:\\model.onnx", "c:model.onnx", "..\\..\\escape", "a\\..\\..\\b", ".", "./", "./model.onnx", "model.onnx/",
    "a/./b/../c", " ", "\u202emodel.onnx", "mod\u00e9l.onnx", "\u6a21\u578b.onnx", "\U0001f600/\U0001f600.onnx",
    "__MACOSX/._model.onnx", ".hidden.onnx", "model.ONNX", "x" * 300 + ".onnx", "model.onnx\x00.txt",
]
NAMES = st.one_of(
    st.sampled_from(["model.onnx", "model.pt", "model.tflite", "xgboost-model", "code/inference.py", "dir", "dir/a"]),
    st.sampled_from(_HOSTILE_NAMES),
    st.lists(_SEGMENT, min_size=1, max_size=6).map("/".join),
    st.builds(lambda n, leaf: "/".join(["d"] * n + [leaf]), st.integers(1, 300), st.sampled_from(["m.onnx", "x"])),
    st.builds(lambda k, rest: "../" * k + rest, st.integers(1, 5), st.sampled_from(["outside/sentinel.txt", "x"])),
)
LINK_TARGETS = st.one_of(
    st.sampled_from(["../outside/sentinel.txt", "/etc/passwd", "model.onnx", ".", "..", "/", "dir", "a/../../.."]),
    NAMES,
)
#: pax records that change what a member is (path, link, size, sparse maps) and ones that must be ignored.
PAX_KEYS = ["path", "linkpath", "size", "uid", "mtime", "hdrcharset", "GNU.sparse.map", "GNU.sparse.size",
            "GNU.sparse.realsize", "GNU.sparse.major", "GNU.sparse.minor", "GNU.sparse.name", "GNU.sparse.numblocks",
            "GNU.sparse.offset", "GNU.sparse.numbytes", "SCHILY.xattr.user.x", "comment"]
PAX_VALUES = st.one_of(
    st.sampled_from(["0", "1", "-1", "99999999999999999999", "1.0", "0,1,2", "0,0", "1,0,1", "BINARY", "../x", "/etc/passwd", ""]),
    st.integers(0, 2**40).map(str),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
)
KINDS = {
    "file": tarfile.REGTYPE, "oldfile": tarfile.AREGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
    "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE,
    "contig": tarfile.CONTTYPE, "sparse": tarfile.GNUTYPE_SPARSE, "unknown": b"Z", "digit": b"9",
    "pax_global": tarfile.XGLTYPE,
}


@st.composite
def members(draw):
    kind = draw(st.sampled_from(sorted(KINDS)) | st.just("file") | st.just("dir"))
    data = draw(st.binary(max_size=64) | st.builds(lambda n, b: b * n, st.integers(0, 200_000), st.sampled_from([b"\0", b"x"])))
    # The declared size can lie (a header that claims more or less than the data that follows).
    size = draw(st.one_of(st.just(len(data)), st.integers(0, 2**33 - 1), st.just(0)))
    return {
        "kind": kind, "name": draw(NAMES), "linkname": draw(LINK_TARGETS) if kind in ("sym", "hard") else "",
        "data": data, "size": size, "mode": draw(st.sampled_from([0o644, 0o777, 0o4755, 0, 0o7777])),
        "pax": draw(st.dictionaries(st.sampled_from(PAX_KEYS), PAX_VALUES, max_size=3)),
    }


def _raw_tar(specs, fmt) -> bytes:
    out = io.BytesIO()
    for spec in specs:
        info = tarfile.TarInfo(spec["name"])
        info.type = KINDS[spec["kind"]]
        info.linkname = spec["linkname"]
        info.size = spec["size"]
        info.mode = spec["mode"]
        info.pax_headers = dict(spec.get("pax", {}))
        out.write(info.tobuf(fmt, "utf-8", "surrogateescape"))
        data = spec["data"]
        out.write(data + b"\0" * (-len(data) % tarfile.BLOCKSIZE))
    out.write(b"\0" * (2 * tarfile.BLOCKSIZE))
    return out.getvalue()


def _compress(raw: bytes, compression: str) -> bytes:
    if compression == "gz":
        return gzip.compress(raw, compresslevel=1)
    if compression == "bz2":
        return bz2.compress(raw, compresslevel=1)
    if compression == "xz":
        return lzma.compress(raw, preset=0)
    return raw


@st.composite
def archives(draw):
    """(archive bytes, a description) of a tar built from hostile members, compressed, maybe damaged."""
    specs = draw(st.lists(members(), min_size=0, max_size=8))
    if draw(st.booleans()):  # duplicates: a member repeated, as the same or another kind
        specs += [dict(spec, kind=draw(st.sampled_from(["file", "dir", "sym"]))) for spec in draw(st.lists(st.sampled_from(specs), max_size=3))] if specs else []
    if draw(st.integers(0, 9)) == 0:  # member-count bomb
        specs += [{"kind": "file", "name": f"f{i}", "linkname": "", "data": b"", "size": 0, "mode": 0o644}
                  for i in range(draw(st.integers(10, 400)))]
    if draw(st.integers(0, 9)) == 0:  # tar in tar: a whole archive as one member's data
        inner = _compress(_raw_tar(specs[:3], tarfile.GNU_FORMAT), "gz")
        specs.append({"kind": "file", "name": draw(st.sampled_from(["inner.tar.gz", "model.onnx", "inner/model.tar"])),
                      "linkname": "", "data": inner, "size": len(inner), "mode": 0o644})
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    try:
        raw = _raw_tar(specs, fmt)
    except (ValueError, UnicodeError, OverflowError):  # the tar format cannot even express it
        assume(False)
    data = _compress(raw, draw(st.sampled_from(["gz", "gz", "", "bz2", "xz"])))
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "random", "gzip-random", "empty"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif damage == "flip":
        buffer = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(buffer) - 1))
            buffer[position] = draw(st.integers(0, 255))
        data = bytes(buffer)
    elif damage == "random":
        data = draw(st.binary(max_size=4096))
    elif damage == "gzip-random":
        data = gzip.compress(draw(st.binary(max_size=4096)))
    elif damage == "empty":
        data = b""
    return data


LIMITS = st.tuples(
    st.sampled_from([DEFAULT_MAX_MEMBERS, 1, 5, 50]),
    st.sampled_from([DEFAULT_MAX_TOTAL_BYTES, 0, 100, 64 * 1024, 1024 * 1024]),
)

# ----------------------------------------------------------------------------------------------
# the property


def _tree(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every path under ``root`` (symlinks not followed): relative path -> (mode, content or link)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                detail = path.read_bytes() if info.st_size < 4096 else f"{info.st_size} bytes"
            else:
                detail = ""
            found[path.relative_to(root).as_posix()] = (stat.S_IFMT(info.st_mode), detail)
    return found


def check_extraction(data: bytes, max_members: int, max_total_bytes: int, framework: str = "ONNX") -> str:
    """Extract ``data`` in a sandbox and assert the property; return the outcome's name."""
    with tempfile.TemporaryDirectory(prefix="neo-fuzz-") as sandbox_name:
        sandbox = Path(sandbox_name)
        (sandbox / "outside").mkdir()
        (sandbox / "outside" / "sentinel.txt").write_bytes(b"sentinel")
        (sandbox / "work").mkdir()
        (sandbox / "cwd").mkdir()
        (sandbox / "tmp").mkdir()
        archive = sandbox / "work" / "model.tar.gz"
        archive.write_bytes(data)
        dest = sandbox / "work" / "model"
        before = _tree(sandbox)
        old_cwd, old_tempdir = os.getcwd(), tempfile.tempdir
        os.chdir(sandbox / "cwd")
        tempfile.tempdir = str(sandbox / "tmp")
        try:
            files = safe_extract(archive, dest, max_members=max_members, max_total_bytes=max_total_bytes)
        except ModelArchiveError as err:
            assert str(err).strip(), "a ModelArchiveError without a message"
            files = None
            outcome = "ModelArchiveError"
        finally:
            os.chdir(old_cwd)
            tempfile.tempdir = old_tempdir
        after = _tree(sandbox)
        outside = {path: value for path, value in after.items() if path != "work/model" and not path.startswith("work/model/")}
        assert outside == before, f"written outside the target directory: {sorted(set(outside.items()) ^ set(before.items()))[:5]}"
        if files is None:
            return outcome
        inside = {path[len("work/model/"):]: value for path, value in after.items() if path.startswith("work/model/")}
        assert all(kind in (stat.S_IFREG, stat.S_IFDIR) for kind, _ in inside.values()), f"special files extracted: {inside}"
        assert files == sorted(path for path, (kind, _) in inside.items() if kind == stat.S_IFREG)
        assert all(stat.S_IMODE((dest / path).lstat().st_mode) == 0o644 for path in files)
        try:
            model = find_model_file(dest, framework)
        except (ModelArchiveError, UnsupportedFrameworkError) as err:
            assert str(err).strip()
            return "extracted, no single model file"
        assert model.resolve().is_relative_to(dest.resolve()) and model.is_file()
        return "extracted, model found"


# ----------------------------------------------------------------------------------------------
# tests


@settings(max_examples=examples(250, 4000))
@given(data=archives(), limits=LIMITS, framework=st.sampled_from(["ONNX", "PYTORCH", "TFLITE", "XGBOOST", "MXNET", "TENSORFLOW", "SKLEARN", "onnx"]))
def test_hostile_archives_extract_cleanly_or_fail_with_model_archive_error(data, limits, framework, tally):
    tally(check_extraction(data, *limits, framework))


@settings(max_examples=examples(200, 2000))
@given(data=st.binary(max_size=2048), compression=st.sampled_from(["", "gz", "bz2", "xz"]))
def test_random_bytes_are_model_archive_errors(data, compression, tally):
    tally(check_extraction(_compress(data, compression), DEFAULT_MAX_MEMBERS, DEFAULT_MAX_TOTAL_BYTES))


@settings(max_examples=examples(60, 400))
@given(size=st.integers(1, 2 * 1024 * 1024), limit=st.integers(0, 2 * 1024 * 1024), members=st.integers(1, 3))
def test_size_bombs_stop_at_the_limit(size, limit, members, tally):
    """Zeros compress ~1000:1: the archive stays small, its contents pass the limit or not."""
    specs = [{"kind": "file", "name": f"m{i}.onnx", "linkname": "", "data": b"\0" * size, "size": size, "mode": 0o644}
             for i in range(members)]
    outcome = check_extraction(_compress(_raw_tar(specs, tarfile.GNU_FORMAT), "gz"), DEFAULT_MAX_MEMBERS, limit)
    assert (outcome == "ModelArchiveError") == (size * members > limit)
    tally(outcome)


@settings(max_examples=examples(30, 200))
@given(count=st.integers(1, 3000), limit=st.integers(1, 2000))
def test_member_count_bombs_stop_at_the_limit(count, limit, tally):
    specs = [{"kind": "file", "name": f"f{i}", "linkname": "", "data": b"", "size": 0, "mode": 0o644} for i in range(count)]
    outcome = check_extraction(_compress(_raw_tar(specs, tarfile.GNU_FORMAT), "gz"), limit, DEFAULT_MAX_TOTAL_BYTES)
    assert (outcome == "ModelArchiveError") == (count > limit)
    tally(outcome)


def _zeros_gz(header: bytes, size: int) -> bytes:
    """``header`` then ``size`` zero bytes and the end blocks, gzip-compressed chunk by chunk."""
    import zlib

    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [compressor.compress(header)]
    chunk = bytes(1 << 20)
    for _ in range(size >> 20):
        parts.append(compressor.compress(chunk))
    parts.append(compressor.compress(bytes(size % (1 << 20) + 2 * tarfile.BLOCKSIZE)))
    parts.append(compressor.flush())
    return b"".join(parts)


@example(kind=tarfile.XHDTYPE, size=3 * 1024**3)  # 3 GiB read into memory (MemoryError under the child's cap) before the fix
@example(kind=tarfile.GNUTYPE_LONGNAME, size=8 * 1024**2)
@settings(max_examples=examples(3, 20))
@given(kind=st.sampled_from([tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK]),
       size=st.integers(MAX_HEADER_BYTES + 1, 8 * 1024**2))
def test_extended_header_bombs_are_refused_before_they_are_read(kind, size, tmp_path, tally):
    """A pax or GNU long-name header declaring gigabytes is refused before tarfile reads it into memory."""
    info = tarfile.TarInfo("././@LongLink" if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) else "pax")
    info.type, info.size = kind, size
    header = info.tobuf(tarfile.GNU_FORMAT)
    # The big one holds only its first MiB: the refusal must come before the data is read.
    data = _zeros_gz(header, size) if size <= 8 * 1024**2 else gzip.compress(header + bytes(1 << 20))
    archive = tmp_path / f"bomb-{kind.decode()}-{size}.tar.gz"
    archive.write_bytes(data)
    with pytest.raises(ModelArchiveError, match="extended header"):
        safe_extract(archive, tmp_path / f"out-{kind.decode()}-{size}")
    assert not (tmp_path / f"out-{kind.decode()}-{size}").exists()
    tally("ModelArchiveError")


@settings(max_examples=examples(20, 200))
@given(real_size=st.integers(0, 2**40), stored=st.binary(max_size=1024), limit=st.sampled_from([4096, 1024 * 1024]))
def test_sparse_members_count_their_real_size(real_size, stored, limit, tally):
    """A GNU sparse member expands to its real size (holes are zeros): that size is what the limit counts."""
    info = tarfile.TarInfo("model.onnx")
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = len(stored)
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    # GNU old sparse header: four (offset, numbytes) pairs at 386, isextended at 482, realsize at 483.
    header[386:398] = tarfile.itn(max(real_size - len(stored), 0), 12, tarfile.GNU_FORMAT)
    header[398:410] = tarfile.itn(len(stored), 12, tarfile.GNU_FORMAT)
    header[483:495] = tarfile.itn(max(real_size, len(stored)), 12, tarfile.GNU_FORMAT)
    header[148:156] = b" " * 8
    header[148:155] = b"%06o\0" % sum(header)
    raw = bytes(header) + stored + bytes(-len(stored) % tarfile.BLOCKSIZE) + bytes(2 * tarfile.BLOCKSIZE)
    outcome = check_extraction(gzip.compress(raw), DEFAULT_MAX_MEMBERS, limit)
    if max(real_size, len(stored)) > limit:
        assert outcome == "ModelArchiveError"
    tally(outcome)


def test_a_repeated_member_is_listed_once_and_the_last_copy_wins(tmp_path):
    """Found by the soak run: safe_extract listed a member the archive holds twice twice."""
    specs = [{"kind": "file", "name": name, "linkname": "", "data": data, "size": len(data), "mode": 0o644}
             for name, data in (("model.onnx", b"first"), ("f0", b""), ("./model.onnx", b"second"))]
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(_compress(_raw_tar(specs, tarfile.GNU_FORMAT), "gz"))
    assert safe_extract(archive, tmp_path / "out") == ["f0", "model.onnx"]
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"second"
    assert check_extraction(archive.read_bytes(), DEFAULT_MAX_MEMBERS, DEFAULT_MAX_TOTAL_BYTES) == "extracted, model found"
