"""safe_extract and find_model_file: pure Python, no TVM."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from airflow_neo.core.exceptions import NeoError
from airflow_neo.local.archive import ModelArchiveError, find_model_file, safe_extract
from airflow_neo.local.errors import UnsupportedFrameworkError
from tests.local.models import write_archive


def _tar(path, members):
    """members: list of TarInfo-like tuples (name, type, data, linkname)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, data, linkname in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = linkname or ""
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def test_extracts_files_and_dirs(tmp_path):
    archive = write_archive(tmp_path, {"model.onnx": b"onnx", "code/inference.py": b"print(1)\n", "./top.txt": b"t"})
    files = safe_extract(archive, tmp_path / "out")
    assert files == ["code/inference.py", "model.onnx", "top.txt"]
    assert (tmp_path / "out" / "code" / "inference.py").read_bytes() == b"print(1)\n"


def test_plain_tar_is_accepted(tmp_path):
    path = tmp_path / "model.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("model.tflite")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"TFL3"))
    assert safe_extract(path, tmp_path / "out") == ["model.tflite"]


def test_error_is_a_neo_error():
    assert issubclass(ModelArchiveError, NeoError)


@pytest.mark.parametrize(
    "content",
    [b"this is not an archive at all", gzip.compress(b"gzip but not a tar" * 50), b""],
    ids=["garbage", "gzip-not-tar", "empty"],
)
def test_corrupt_archive(tmp_path, content):
    path = tmp_path / "model.tar.gz"
    path.write_bytes(content)
    with pytest.raises(ModelArchiveError, match="not a valid .tar.gz"):
        safe_extract(path, tmp_path / "out")


def test_truncated_archive(tmp_path):
    archive = write_archive(tmp_path, {"model.onnx": bytes(range(256)) * 4000})
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelArchiveError, match="not a valid .tar.gz"):
        safe_extract(archive, tmp_path / "out")


def test_missing_archive(tmp_path):
    with pytest.raises(ModelArchiveError, match="does not exist"):
        safe_extract(tmp_path / "nope.tar.gz", tmp_path / "out")


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "ok/../../../evil.txt"])
def test_traversal_is_rejected(tmp_path, name):
    archive = _tar(tmp_path / "m.tar.gz", [("model.onnx", tarfile.REGTYPE, b"x", None), (name, tarfile.REGTYPE, b"evil", None)])
    with pytest.raises(ModelArchiveError, match=r"leaves the extraction directory"):
        safe_extract(archive, tmp_path / "deep" / "out")
    assert not (tmp_path / "deep" / "out").exists(), "nothing may be written before every member is checked"
    assert not list(tmp_path.rglob("evil.txt"))


def test_absolute_path_is_rejected(tmp_path):
    archive = _tar(tmp_path / "m.tar.gz", [("/tmp/evil.txt", tarfile.REGTYPE, b"evil", None)])
    with pytest.raises(ModelArchiveError, match="absolute path"):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize(
    "kind, word",
    [(tarfile.SYMTYPE, "symbolic link"), (tarfile.LNKTYPE, "hard link")],
)
def test_links_are_rejected(tmp_path, kind, word):
    archive = _tar(
        tmp_path / "m.tar.gz", [("model.onnx", tarfile.REGTYPE, b"x", None), ("link.onnx", kind, b"", "/etc/passwd")]
    )
    with pytest.raises(ModelArchiveError, match=word):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize(
    "kind, word",
    [(tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block device"), (tarfile.FIFOTYPE, "FIFO")],
)
def test_special_files_are_rejected(tmp_path, kind, word):
    archive = _tar(tmp_path / "m.tar.gz", [("dev", kind, b"", None)])
    with pytest.raises(ModelArchiveError, match=word):
        safe_extract(archive, tmp_path / "out")


def test_member_count_limit(tmp_path):
    archive = write_archive(tmp_path, {f"f{i}.txt": b"x" for i in range(5)})
    with pytest.raises(ModelArchiveError, match="more than 4 members"):
        safe_extract(archive, tmp_path / "out", max_members=4)
    assert len(safe_extract(archive, tmp_path / "out2", max_members=5)) == 5


def test_total_size_limit(tmp_path):
    archive = write_archive(tmp_path, {"a.bin": b"x" * 600, "b.bin": b"y" * 600})
    with pytest.raises(ModelArchiveError, match="expands to more than 1 KiB"):
        safe_extract(archive, tmp_path / "out", max_total_bytes=1024)


def test_file_and_directory_clash(tmp_path):
    archive = write_archive(tmp_path, {"model": b"file", "model/inner.onnx": b"x"})
    with pytest.raises(ModelArchiveError, match="which is a file"):
        safe_extract(archive, tmp_path / "out")


# -- find_model_file ------------------------------------------------------------------------


def _extracted(tmp_path, files):
    archive = write_archive(tmp_path, files)
    safe_extract(archive, tmp_path / "x")
    return tmp_path / "x"


@pytest.mark.parametrize(
    "framework, filename",
    [
        ("ONNX", "model.onnx"),
        ("PYTORCH", "model.pth"),
        ("PYTORCH", "model.pt"),
        ("PYTORCH", "model.pt2"),
        ("TFLITE", "model.tflite"),
        ("XGBOOST", "model.json"),
        ("XGBOOST", "model.ubj"),
        ("XGBOOST", "booster.model"),
        ("XGBOOST", "xgboost-model"),
        ("onnx", "sub/dir/Net.ONNX"),
    ],
)
def test_find_model_file(tmp_path, framework, filename):
    root = _extracted(tmp_path, {filename: b"m", "README.md": b"r", "code/inference.py": b"c"})
    assert find_model_file(root, framework) == root / filename


def test_find_model_file_ignores_macos_junk(tmp_path):
    root = _extracted(tmp_path, {"model.onnx": b"m", "__MACOSX/._model.onnx": b"j", "._model.onnx": b"j"})
    assert find_model_file(root, "ONNX") == root / "model.onnx"


def test_missing_model_lists_archive_content(tmp_path):
    root = _extracted(tmp_path, {"README.md": b"r", "weights/params.bin": b"w"})
    with pytest.raises(ModelArchiveError) as info:
        find_model_file(root, "ONNX")
    message = str(info.value)
    assert "no ONNX model file (*.onnx)" in message
    assert "README.md" in message and "weights/params.bin" in message


def test_empty_archive_says_so(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(ModelArchiveError, match="no files"):
        find_model_file(root, "TFLITE")


def test_ambiguous_model_lists_candidates(tmp_path):
    root = _extracted(tmp_path, {"a.onnx": b"1", "b/b.onnx": b"2"})
    with pytest.raises(ModelArchiveError, match=r"2 ONNX model files.*a\.onnx.*b/b\.onnx.*exactly one"):
        find_model_file(root, "ONNX")


def test_find_model_file_unsupported_framework(tmp_path):
    with pytest.raises(UnsupportedFrameworkError, match="not supported by the local backend.*ONNX"):
        find_model_file(tmp_path, "SKLEARN")


@pytest.mark.parametrize(
    "framework, files, expected",
    [
        # a SavedModel: TensorFlow writes fingerprint.pb beside saved_model.pb
        ("TENSORFLOW", {"export/saved_model.pb": b"s", "export/fingerprint.pb": b"f",
                        "export/variables/variables.index": b"i"}, "export/saved_model.pb"),
        ("TENSORFLOW", {"frozen_graph.pb": b"g"}, "frozen_graph.pb"),
        ("KERAS", {"model.h5": b"h"}, "model.h5"),
        ("KERAS", {"model.keras": b"k"}, "model.keras"),
        ("DARKNET", {"yolov3-tiny.cfg": b"c", "yolov3-tiny.weights": b"w"}, "yolov3-tiny.cfg"),
        ("MXNET", {"resnet-symbol.json": b"{}", "resnet-0000.params": b"p"}, "resnet-symbol.json"),
    ],
)
def test_converted_frameworks_model_files(tmp_path, framework, files, expected):
    root = _extracted(tmp_path, files)
    assert find_model_file(root, framework) == root / expected


def test_two_frozen_graphs_are_ambiguous(tmp_path):
    root = _extracted(tmp_path, {"a.pb": b"1", "b.pb": b"2"})
    with pytest.raises(ModelArchiveError, match=r"2 TENSORFLOW model files \(\*\.pb or \*\.pbtxt\).*exactly one"):
        find_model_file(root, "TENSORFLOW")
