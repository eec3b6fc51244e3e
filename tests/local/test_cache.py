"""The local backend's compile cache (airflow_neo.local.cache) and its use by the runner.

The fake compile functions are module-level so that the ``spawn`` compile child can import them by
reference; each compile appends a line to the file named by the job's ``counter`` tag, so a test
can tell a compile from a cache hit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tarfile
from pathlib import Path

import pytest

from airflow_neo.core import status as st
from airflow_neo.local import runner, tuning_db
from airflow_neo.local.cache import CompileCache, base_key, compiler_id, normalized_request
from airflow_neo.local.settings import CompileSettings
from airflow_neo.local.store import JobStore

POLL = 0.1
VERSIONS = {"tvm": "0.27.0", "tvm_ffi": "0.1.14", "airflow_neo": "0.2.0"}


# ----------------------------------------------------------------------------- fakes and helpers


def _tag(request, key: str) -> str | None:
    """A tag of the job (``request`` is the ValidatedRequest the runner gives compile functions)."""
    for tag in request.payload.get("Tags", []):
        if tag["Key"] == key:
            return tag["Value"]
    return None


def _tar_gz(path: str | Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def counting_compile(request, archive_path, artifact_path, *, log=print, **_):
    """A fake compiler whose artifact depends on the archive and the compiler options."""
    counter = _tag(request, "counter")
    if counter:
        with open(counter, "a") as handle:
            handle.write(request.name + "\n")
    options = request.output_config.get("CompilerOptions", "")
    model = Path(archive_path).read_bytes()
    _tar_gz(artifact_path, {"model.so": hashlib.sha256(model + options.encode()).hexdigest().encode()})
    log("compiled")
    return {"framework": "ONNX", "compiled_at": "2026-01-01T00:00:00+00:00", "inputs": [
        {"name": "input0", "shape": [1, 3, 8, 8], "dtype": "float32"}]}


def compiles(counter: Path) -> list[str]:
    return counter.read_text().split() if counter.exists() else []


def make_request(name, archive, out, *, counter=None, options=None, platform=None) -> dict:
    output = {"S3OutputLocation": f"file://{out}"}
    if platform:
        output["TargetPlatform"] = platform
    else:
        output["TargetDevice"] = "ml_c5"
    if options is not None:
        output["CompilerOptions"] = json.dumps(options)
    request = {
        "CompilationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {"S3Uri": f"file://{archive}", "DataInputConfig": '{"input0": [1, 3, 8, 8]}',
                        "Framework": "ONNX"},
        "OutputConfig": output,
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
    }
    if counter:
        request["Tags"] = [{"Key": "counter", "Value": str(counter)}]
    return request


def blake2b(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes()).hexdigest()


@pytest.fixture
def archive(tmp_path) -> Path:
    path = tmp_path / "models" / "net.tar.gz"
    path.parent.mkdir()
    _tar_gz(path, {"model.onnx": b"weights" * 1000})
    return path


@pytest.fixture
def env(tmp_path):
    """A SQLite store and cache settings private to the test (verification off: counting_compile
    verifies nothing, and a cached artifact without the verification a job asks for is not a hit)."""
    store_path = tmp_path / "state" / "jobs.db"
    settings = CompileSettings(
        tuning_trials=0, tuning_database=str(tmp_path / "tuning"), cache_dir=str(tmp_path / "cache"),
        cache_max_bytes=10 * 1024**2, verify="off",
    )
    return JobStore(store_path), store_path, settings


def run(store_path, name, settings, fn=counting_compile) -> str:
    return runner.run_job(store_path, name, compile_fn=fn, poll_interval=POLL, settings=settings)


# ----------------------------------------------------------------------------- keys


def _key(request, digest="a" * 128, **kwargs):
    args = {"compiler": "c:f", "tuning_trials": 0, "tuning_database": "/db", "versions": VERSIONS, **kwargs}
    return base_key(digest, request, **args)


def test_key_ignores_formatting_and_job_identity(tmp_path):
    a = make_request("job-a", "/m/net.tar.gz", tmp_path / "a", options={"mcpu": "znver3", "dtype": "float32"})
    b = make_request("job-b", "/other/net.tar.gz", tmp_path / "b", options={"dtype": "float32", "mcpu": "znver3"})
    b["InputConfig"]["DataInputConfig"] = {"input0": [1, 3, 8, 8]}  # a dict instead of a JSON string
    b["Tags"] = [{"Key": "team", "Value": "x"}]
    b["StoppingCondition"] = {"MaxRuntimeInSeconds": 60}
    assert normalized_request(a) == normalized_request(b)
    assert _key(a) == _key(b)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r, k: (r, {**k, "digest": "b" * 128}), id="archive-bytes"),
        pytest.param(lambda r, k: ({**r, "OutputConfig": {**r["OutputConfig"], "CompilerOptions": '{"mcpu": "x86-64"}'}}, k),
                     id="compiler-option"),
        pytest.param(lambda r, k: ({**r, "OutputConfig": {**r["OutputConfig"], "TargetDevice": "ml_m5"}}, k), id="target"),
        pytest.param(lambda r, k: ({**r, "InputConfig": {**r["InputConfig"], "DataInputConfig": '{"input0": [2, 3, 8, 8]}'}}, k),
                     id="data-input-config"),
        pytest.param(lambda r, k: (r, {**k, "versions": {**VERSIONS, "tvm": "0.28.0"}}), id="tvm-version"),
        pytest.param(lambda r, k: (r, {**k, "versions": {**VERSIONS, "tvm_ffi": "0.1.15"}}), id="tvm-ffi-version"),
        pytest.param(lambda r, k: (r, {**k, "tuning_trials": 64}), id="tuning-budget"),
        pytest.param(lambda r, k: (r, {**k, "compiler": "other:fn"}), id="compile-function"),
    ],
)
def test_key_changes_with_what_shapes_the_artifact(tmp_path, change):
    request = make_request("job", "/m/net.tar.gz", tmp_path, options={"mcpu": "znver3"})
    kwargs = {"digest": "a" * 128}
    changed_request, changed_kwargs = change(request, kwargs)
    assert _key(changed_request, **changed_kwargs) != _key(request, **kwargs)


def test_compiler_id_names_functions_and_strings():
    assert compiler_id(counting_compile) == "tests.local.test_cache:counting_compile"
    assert compiler_id("airflow_neo.local.compiler:compile_model") == "airflow_neo.local.compiler:compile_model"


# ----------------------------------------------------------------------------- the cache on its own


def _artifact(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / "artifacts" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_store_then_lookup_is_a_hit_with_the_same_bytes(tmp_path):
    cache = CompileCache(tmp_path / "cache", 1024**2)
    artifact = _artifact(tmp_path, "a.tar.gz", 1000)
    assert cache.lookup("base-1", tmp_path / "copy" / "x.tar.gz") is None  # never compiled: miss
    key = cache.store("base-1", artifact, {"framework": "ONNX"})
    hit = cache.lookup("base-1", tmp_path / "copy" / "x.tar.gz")
    assert hit is not None and hit.key == key
    assert hit.artifact.read_bytes() == artifact.read_bytes()
    assert hit.digest == blake2b(artifact)
    assert hit.metadata == {"framework": "ONNX"}
    assert cache.lookup("base-2", tmp_path / "copy" / "y.tar.gz") is None


def _workload_line(shash: str) -> str:
    return json.dumps([shash, "bW9kdWxl"])


def _record_line(index: int, secs: float, trace: str = "t") -> str:
    return json.dumps([index, [[trace], [secs], {"kind": "llvm"}, [["TENSOR", "float32", [1]]]]])


def _write_db(db: Path, workloads: list[str], records: list[str]) -> None:
    db.mkdir(parents=True, exist_ok=True)
    (db / tuning_db.WORKLOAD_FILE).write_text("".join(line + "\n" for line in workloads))
    (db / tuning_db.RECORD_FILE).write_text("".join(line + "\n" for line in records))


def test_a_better_tuning_record_invalidates_a_worse_one_does_not(tmp_path):
    db = tmp_path / "tuning" / "target"
    _write_db(db, [_workload_line("111"), _workload_line("222")], [_record_line(0, 2e-3), _record_line(1, 5e-3)])
    cache = CompileCache(tmp_path / "cache", 1024**2)
    metadata = {"tuning": {"database": str(db), "workloads": ["111"]}}
    cache.store("base", _artifact(tmp_path, "a", 100), metadata)
    assert cache.lookup("base", tmp_path / "c1") is not None
    # a worse record for our workload, or a better one for another model's: same records used
    with open(db / tuning_db.RECORD_FILE, "a") as handle:
        handle.write(_record_line(0, 9e-3, "worse") + "\n" + _record_line(1, 1e-4, "other") + "\n")
    assert cache.lookup("base", tmp_path / "c2") is not None
    # a better record for our workload: a recompile would build different code
    with open(db / tuning_db.RECORD_FILE, "a") as handle:
        handle.write(_record_line(0, 1e-3, "better") + "\n")
    assert cache.lookup("base", tmp_path / "c3") is None


def test_size_cap_evicts_the_least_recently_used(tmp_path):
    cache = CompileCache(tmp_path / "cache", 2500)
    key_a = cache.store("a", _artifact(tmp_path, "a", 1000), {})
    key_b = cache.store("b", _artifact(tmp_path, "b", 1000), {})
    # a was stored first but used last
    os.utime(cache.entries_dir / key_a / "entry.json", (2_000_000_000, 2_000_000_000))
    os.utime(cache.entries_dir / key_b / "entry.json", (1_000_000_000, 1_000_000_000))
    key_c = cache.store("c", _artifact(tmp_path, "c", 1000), {})
    assert {entry["key"] for entry in cache.entries()} == {key_a, key_c}
    assert cache.total_bytes() == 2000
    assert cache.lookup("b", tmp_path / "x") is None
    assert not (cache.index_dir / "b.json").exists()  # its index went with it
    assert cache.lookup("a", tmp_path / "y") is not None


def test_lookup_refreshes_last_use(tmp_path):
    cache = CompileCache(tmp_path / "cache", 2500)
    key_a = cache.store("a", _artifact(tmp_path, "a", 1000), {})
    key_b = cache.store("b", _artifact(tmp_path, "b", 1000), {})
    for key, when in ((key_a, 1_000_000_000), (key_b, 1_500_000_000)):
        os.utime(cache.entries_dir / key / "entry.json", (when, when))
    assert cache.lookup("a", tmp_path / "x") is not None  # a is now the most recently used
    cache.store("c", _artifact(tmp_path, "c", 1000), {})
    assert {entry["key"] for entry in cache.entries()} == {key_a, cache.key_for("c")}


def test_artifact_over_the_cap_is_not_stored_and_zero_turns_it_off(tmp_path):
    assert CompileCache(tmp_path / "small", 500).store("a", _artifact(tmp_path, "a", 1000), {}) is None
    off = CompileCache(tmp_path / "off", 0)
    assert off.store("a", _artifact(tmp_path, "b", 10), {}) is None
    assert off.lookup("a", tmp_path / "x") is None


def test_corrupt_entry_is_a_miss_and_removed(tmp_path):
    cache = CompileCache(tmp_path / "cache", 1024**2)
    key = cache.store("a", _artifact(tmp_path, "a", 100), {})
    (cache.entries_dir / key / "model.tar.gz").write_bytes(b"bit rot")
    assert cache.lookup("a", tmp_path / "x") is None
    assert not (cache.entries_dir / key).exists()


# ----------------------------------------------------------------------------- through the runner


def test_second_job_is_a_cache_hit(env, archive, tmp_path):
    store, store_path, settings = env
    counter = tmp_path / "compiles.txt"
    store.create(make_request("first", archive, tmp_path / "out1", counter=counter))
    assert run(store_path, "first", settings) == st.COMPLETED
    store.create(make_request("second", archive, tmp_path / "out2", counter=counter))
    assert run(store_path, "second", settings) == st.COMPLETED
    assert compiles(counter) == ["first"]  # the second job did not compile

    first, second = store.describe("first"), store.describe("second")
    assert set(first) == set(second)  # same payload shape
    published = tmp_path / "out2" / "net-ml_c5.tar.gz"
    assert second["ModelArtifacts"] == {"S3ModelArtifacts": f"file://{published}"}
    assert published.read_bytes() == (tmp_path / "out1" / "net-ml_c5.tar.gz").read_bytes()
    assert second["ModelDigests"] == {"ArtifactDigest": blake2b(published)} == first["ModelDigests"]
    assert second["DerivedInformation"] == first["DerivedInformation"]
    log_text = store.log_path("second").read_text()
    assert "compile cache hit" in log_text and "phase compile" not in log_text
    assert "compile cache miss" in store.log_path("first").read_text()
    assert store.compile_metadata("second")["cache"]["hit"] is True


def test_changed_compiler_option_is_a_miss(env, archive, tmp_path):
    store, store_path, settings = env
    counter = tmp_path / "compiles.txt"
    store.create(make_request("plain", archive, tmp_path / "o1", counter=counter, options={"mcpu": "skylake-avx512"}))
    assert run(store_path, "plain", settings) == st.COMPLETED
    store.create(make_request("other", archive, tmp_path / "o2", counter=counter, options={"mcpu": "x86-64"}))
    assert run(store_path, "other", settings) == st.COMPLETED
    assert compiles(counter) == ["plain", "other"]
    assert "compile cache miss" in store.log_path("other").read_text()
    assert blake2b(tmp_path / "o1" / "net-ml_c5.tar.gz") != blake2b(tmp_path / "o2" / "net-ml_c5.tar.gz")
    # and back to the first option: a hit on the first job's entry
    store.create(make_request("again", archive, tmp_path / "o3", counter=counter, options={"mcpu": "skylake-avx512"}))
    assert run(store_path, "again", settings) == st.COMPLETED
    assert compiles(counter) == ["plain", "other"]
    assert blake2b(tmp_path / "o3" / "net-ml_c5.tar.gz") == blake2b(tmp_path / "o1" / "net-ml_c5.tar.gz")


def test_changed_archive_bytes_is_a_miss(env, archive, tmp_path):
    store, store_path, settings = env
    counter = tmp_path / "compiles.txt"
    store.create(make_request("v1", archive, tmp_path / "o1", counter=counter))
    assert run(store_path, "v1", settings) == st.COMPLETED
    _tar_gz(archive, {"model.onnx": b"retrained weights" * 1000})  # same path, new bytes
    store.create(make_request("v2", archive, tmp_path / "o2", counter=counter))
    assert run(store_path, "v2", settings) == st.COMPLETED
    assert compiles(counter) == ["v1", "v2"]


def test_cache_off_compiles_every_time(env, archive, tmp_path):
    store, store_path, settings = env
    off = CompileSettings(cache_dir=settings.cache_dir, cache_max_bytes=0, tuning_trials=0, verify="off")
    counter = tmp_path / "compiles.txt"
    for name in ("one", "two"):
        store.create(make_request(name, archive, tmp_path / name, counter=counter))
        assert run(store_path, name, off) == st.COMPLETED
    assert compiles(counter) == ["one", "two"]
    assert not Path(settings.cache_dir).exists()


def test_cache_defaults_next_to_the_store(tmp_path, archive, monkeypatch):
    for var in ("AIRFLOW_NEO_CACHE_DIR", "AIRFLOW_NEO_CACHE_MAX_BYTES"):
        monkeypatch.delenv(var, raising=False)
    store_path = tmp_path / "state" / "jobs.db"
    store = JobStore(store_path)
    store.create(make_request("d1", archive, tmp_path / "o1"))
    assert runner.run_job(store_path, "d1", compile_fn=counting_compile, poll_interval=POLL) == st.COMPLETED
    assert len(CompileCache(store.root / "cache", 1).entries()) == 1


def test_real_compile_then_cache_hit(env, tmp_path):
    """The TVM compiler end to end: the second job publishes the first job's artifact."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("builds for LINUX/X86_64 and runs the artifact here")
    pytest.importorskip("tvm")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input0", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input0"], ["output0"])], "tiny", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    archive = tmp_path / "tiny.tar.gz"
    _tar_gz(archive, {"model.onnx": model.SerializeToString()})
    store, store_path, settings = env
    store.create(make_request("real-1", archive, tmp_path / "r1", platform={"Os": "LINUX", "Arch": "X86_64"}))
    assert runner.run_job(store_path, "real-1", poll_interval=POLL, settings=settings) == st.COMPLETED
    store.create(make_request("real-2", archive, tmp_path / "r2", platform={"Os": "LINUX", "Arch": "X86_64"}))
    assert runner.run_job(store_path, "real-2", poll_interval=POLL, settings=settings) == st.COMPLETED
    assert "compile cache hit" in store.log_path("real-2").read_text()
    first = store.compile_metadata("real-1")
    assert first["tuning"]["new_trials"] == 0 and first["tuning"]["workloads"]
    published = tmp_path / "r2" / "tiny-linux-x86_64.tar.gz"
    assert store.describe("real-2")["ModelDigests"]["ArtifactDigest"] == blake2b(published)
    from airflow_neo import runtime

    import numpy as np

    data = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    np.testing.assert_allclose(runtime.load(published).run({"input0": data})[0], np.maximum(data, 0))
