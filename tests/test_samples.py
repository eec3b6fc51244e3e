from __future__ import annotations

import tarfile

from airflow_neo.samples import reproducible_tar_gz, write_sample_archive


def test_sample_archive_is_byte_stable(tmp_path):
    """Re-running the quickstart writes the same bytes, so the compile cache hits and digests hold."""
    first = write_sample_archive(tmp_path / "a" / "model.tar.gz").read_bytes()
    second = write_sample_archive(tmp_path / "b" / "model.tar.gz").read_bytes()
    assert first == second
    assert write_sample_archive(tmp_path / "c" / "model.tar.gz", seed=1).read_bytes() != first
    with tarfile.open(tmp_path / "a" / "model.tar.gz") as tar:
        (member,) = tar.getmembers()
        assert member.name == "model.onnx" and member.isfile() and member.mtime == 0 and member.size > 1000
    assert not list(tmp_path.rglob("*.partial"))


def test_reproducible_tar_gz_depends_on_contents_only():
    assert reproducible_tar_gz({"b": b"2", "a": b"1"}) == reproducible_tar_gz({"a": b"1", "b": b"2"})
    assert reproducible_tar_gz({"a": b"1"}) != reproducible_tar_gz({"a": b"2"})
