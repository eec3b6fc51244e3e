"""Tuning records and compiled artifacts shared through S3 (airflow_neo.local.shared), on moto.

Two "workers" are two local directories (mirrors, local cache tiers) over one moto bucket; the
real compiles across worker processes are in tests/local/test_shared_store.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from airflow_neo.local import tuning_db
from airflow_neo.local.cache import CompileCache
from airflow_neo.local.config import LocalJobConfig
from airflow_neo.local.settings import CompileSettings
from airflow_neo.local.shared import SharedCompileCache, SharedTuningDatabase

BUCKET = "neo-shared"
TUNING_URL = f"s3://{BUCKET}/team/tuning"
CACHE_URL = f"s3://{BUCKET}/team/cache"
DB = "znver3-x86_64-2c-abcdef123456"


@pytest.fixture
def s3(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _workload(shash: str) -> str:
    return json.dumps([shash, "bW9kdWxl"])


def _record(index: int, secs: float, trace: str) -> str:
    return json.dumps([index, [[trace], [secs], {"kind": "llvm"}, [["TENSOR", "float32", [1]]]]])


def _tune(mirror: Path, records: list[tuple[str, float, str]], granted: dict[str, int]) -> int:
    """What a compile does to its tuning database: snapshot, add records privately, merge."""
    snap = tuning_db.snapshot(mirror / DB, mirror.parent / f".private-{os.urandom(4).hex()}")
    workloads = tuning_db._lines(snap.directory / tuning_db.WORKLOAD_FILE)
    new_workloads, new_records = [], []
    for shash, secs, trace in records:
        line = _workload(shash)
        if line not in workloads:
            workloads.append(line)
            new_workloads.append(line)
        new_records.append(_record(workloads.index(line), secs, trace))
    with open(snap.directory / tuning_db.WORKLOAD_FILE, "a") as handle:
        handle.write("".join(line + "\n" for line in new_workloads))
    with open(snap.directory / tuning_db.RECORD_FILE, "a") as handle:
        handle.write("".join(line + "\n" for line in new_records))
    return tuning_db.merge(snap, granted)


def _best(mirror: Path, keys: list[str]) -> dict[str, tuple[int, str | None]]:
    return {key: (stats.records, stats.best_record) for key, stats in tuning_db.scan(mirror / DB, keys).items()}


def _batch_keys(s3) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="team/tuning/").get("Contents", []))


# ----------------------------------------------------------------------------- tuning records


def test_records_tuned_on_one_worker_reach_the_other(s3, tmp_path):
    a = SharedTuningDatabase(TUNING_URL, tmp_path / "a", s3)
    b = SharedTuningDatabase(TUNING_URL, tmp_path / "b", s3)
    a.prepare()
    assert _tune(a.mirror, [("111", 2e-3, "x"), ("111", 1e-3, "best"), ("222", 4e-3, "y")], {"111": 16, "222": 8}) == 3
    assert len(tuning_db.outbox(a.mirror / DB)) == 1
    assert a.push() == {"pushed": 1}
    assert tuning_db.outbox(a.mirror / DB) == []
    [key] = _batch_keys(s3)
    assert key.startswith(f"team/tuning/{DB}/batches/") and key.endswith(".json")

    report = b.pull()
    assert report == {"pushed": 0, "pulled": 1, "records": 3, "skipped": 0}
    assert _best(b.mirror, ["111", "222"]) == _best(a.mirror, ["111", "222"])
    assert '"best"' in _best(b.mirror, ["111"])["111"][1]
    assert tuning_db.read_ledger(b.mirror / DB) == {"111": 16, "222": 8}  # B will not re-tune them
    assert tuning_db.records_digest(b.mirror / DB, ["111", "222"]) == tuning_db.records_digest(a.mirror / DB, ["111", "222"])

    # Nothing is applied twice: not B's second pull, not A's own batch coming back.
    assert b.pull()["pulled"] == 0
    assert a.pull()["pulled"] == 0
    assert _best(a.mirror, ["111"])["111"][0] == 2 and _best(b.mirror, ["111"])["111"][0] == 2


def test_concurrent_tuning_on_two_workers_loses_no_record(s3, tmp_path):
    a = SharedTuningDatabase(TUNING_URL, tmp_path / "a", s3)
    b = SharedTuningDatabase(TUNING_URL, tmp_path / "b", s3)
    a.prepare(), b.prepare()
    _tune(a.mirror, [("111", 3e-3, "a1"), ("333", 1e-3, "a3")], {"111": 8})
    _tune(b.mirror, [("111", 2e-3, "b1"), ("222", 5e-3, "b2")], {"111": 8, "222": 8})
    a.push(), b.push()
    assert len(_batch_keys(s3)) == 2  # immutable objects: neither overwrote the other
    a.pull(), b.pull()
    keys = ["111", "222", "333"]
    assert _best(a.mirror, keys) == _best(b.mirror, keys)
    assert _best(a.mirror, keys)["111"][0] == 2 and '"b1"' in _best(a.mirror, keys)["111"][1]
    assert tuning_db.read_ledger(a.mirror / DB) == tuning_db.read_ledger(b.mirror / DB) == {"111": 16, "222": 8}


def test_schedule_configs_travel_with_the_records(s3, tmp_path):
    """A's config for a workload reaches B, and both workers' records digests (cache keys) agree."""
    from airflow_neo.local.configs import ConfigRecord, JsonConfigStore
    from airflow_neo.local.configs.knobs import Knobs

    a = SharedTuningDatabase(TUNING_URL, tmp_path / "a", s3)
    b = SharedTuningDatabase(TUNING_URL, tmp_path / "b", s3)
    a.prepare(), b.prepare()
    record = ConfigRecord("111", Knobs(8, 4, 64), 1e-3, 2e-3, "fused_conv2d", [Knobs(8, 4).to_dict(), Knobs(8, 4, 64).to_dict()])
    JsonConfigStore(a.mirror / DB).merge([record])  # what config tuning writes
    snap = tuning_db.snapshot(a.mirror / DB, tmp_path / ".private")
    tuning_db.merge(snap, {"111": 2}, {"111": record.to_json()})
    a.push(), b.pull()
    got = JsonConfigStore(b.mirror / DB).get("111")
    assert got is not None and got.knobs == Knobs(8, 4, 64) and got.tried == record.tried
    assert tuning_db.records_digest(b.mirror / DB, ["111"]) == tuning_db.records_digest(a.mirror / DB, ["111"])
    assert tuning_db.records_digest(b.mirror / DB, ["111"]) != tuning_db.records_digest(tmp_path / "none", ["111"])
    assert b.pull()["pulled"] == 0 and JsonConfigStore(b.mirror / DB).get("111").tried == record.tried  # once


def test_pull_pushes_pending_batches_first(s3, tmp_path):
    a = SharedTuningDatabase(TUNING_URL, tmp_path / "a", s3)
    a.prepare()
    _tune(a.mirror, [("111", 1e-3, "x")], {"111": 8})
    assert a.pull() == {"pushed": 1, "pulled": 0, "records": 0, "skipped": 0}
    assert len(_batch_keys(s3)) == 1


def test_a_plain_database_writes_no_outbox(tmp_path):
    root = tmp_path / "tuning"  # no mirror marker: a directory database, as before
    (root / DB).mkdir(parents=True)
    _tune(root, [("111", 1e-3, "x")], {"111": 8})
    assert not (root / DB / tuning_db.OUTBOX_DIR).exists()


def test_malformed_or_foreign_batches_are_skipped_and_change_nothing(s3, tmp_path):
    logged: list[str] = []
    b = SharedTuningDatabase(TUNING_URL, tmp_path / "b", s3, log=logged.append)
    prefix = f"team/tuning/{DB}/batches"
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/20260101T000000000000Z-aaaa.json", Body=b"{not json")
    bad_index = {"format": 1, "workloads": [_workload("111")], "records": [_record(5, 1e-3, "x")], "granted": {}}
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/20260101T000000000000Z-bbbb.json", Body=json.dumps(bad_index))
    s3.put_object(Bucket=BUCKET, Key="team/tuning/../batches/x.json", Body=b"{}")  # not a database name
    s3.put_object(Bucket=BUCKET, Key="team/tuning/README.txt", Body=b"not a batch")
    report = b.pull()
    assert report == {"pushed": 0, "pulled": 0, "records": 0, "skipped": 2}
    assert any("not JSON" in line for line in logged) and any("names no workload" in line for line in logged)
    assert tuning_db.scan(b.mirror / DB, ["111"])["111"].records == 0
    assert not (tmp_path / "batches").exists()


def test_apply_batch_refuses_a_path_as_batch_id(tmp_path):
    with pytest.raises(tuning_db.BatchError, match="batch id"):
        tuning_db.apply_batch(tmp_path / DB, "../escape", json.dumps({"format": 1, "workloads": [], "records": []}))


# ----------------------------------------------------------------------------- compile cache


def _mirrored_database(root: Path) -> str:
    """A tuning database with one record, under ``root``; returns its directory as the compiler reports it."""
    db = root / DB
    db.mkdir(parents=True, exist_ok=True)
    (db / tuning_db.WORKLOAD_FILE).write_text(_workload("111") + "\n")
    (db / tuning_db.RECORD_FILE).write_text(_record(0, 1e-3, "best") + "\n")
    return str(db)


def _worker_cache(tmp_path: Path, worker: str, max_bytes: int = 1024**2) -> CompileCache:
    tuning_root = tmp_path / worker / "tuning"
    return CompileCache(tmp_path / worker / "cache", max_bytes, tuning_root=tuning_root)


def test_an_artifact_compiled_on_one_worker_is_a_hit_on_the_other(s3, tmp_path):
    artifact = tmp_path / "model.tar.gz"
    artifact.write_bytes(os.urandom(5000))
    cache_a, cache_b = _worker_cache(tmp_path, "a"), _worker_cache(tmp_path, "b")
    database = _mirrored_database(cache_a.tuning_root)
    _mirrored_database(cache_b.tuning_root)  # B's mirror holds the same records (pulled)
    metadata = {"tuning": {"database": database, "workloads": ["111"]}, "framework": "ONNX"}
    key = cache_a.store("base-1", artifact, metadata)
    shared = SharedCompileCache(CACHE_URL, s3)
    assert shared.publish("base-1", key, cache_a)
    listed = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="team/cache/")["Contents"])
    assert listed == ["team/cache/entries/%s/entry.json" % key, "team/cache/entries/%s/model.tar.gz" % key,
                      "team/cache/index/base-1.json"]

    assert cache_b.lookup("base-1", tmp_path / "b-out" / "1.tar.gz") is None  # not in B's local tier
    hit = shared.fetch("base-1", cache_b, tmp_path / "b-out" / "2.tar.gz")
    assert hit is not None and hit.key == key
    assert hit.artifact.read_bytes() == artifact.read_bytes()
    assert hit.metadata["framework"] == "ONNX"
    # Kept in B's local tier: the next lookup needs no S3.
    local = cache_b.lookup("base-1", tmp_path / "b-out" / "3.tar.gz")
    assert local is not None and local.key == key
    assert [p.name for p in (tmp_path / "b-out").iterdir() if p.name.startswith(".shared-")] == []


def test_other_tuning_records_on_the_second_worker_are_a_miss(s3, tmp_path):
    artifact = tmp_path / "model.tar.gz"
    artifact.write_bytes(os.urandom(500))
    cache_a, cache_b = _worker_cache(tmp_path, "a"), _worker_cache(tmp_path, "b")
    database = _mirrored_database(cache_a.tuning_root)
    shared = SharedCompileCache(CACHE_URL, s3)
    key = cache_a.store("base-1", artifact, {"tuning": {"database": database, "workloads": ["111"]}})
    shared.publish("base-1", key, cache_a)
    # B's mirror lacks the record: a compile there would build other code, so no hit.
    assert shared.fetch("base-1", cache_b, tmp_path / "b.tar.gz") is None
    _mirrored_database(cache_b.tuning_root)
    assert shared.fetch("base-1", cache_b, tmp_path / "b.tar.gz") is not None


def test_a_tampered_shared_artifact_is_refused(s3, tmp_path):
    artifact = tmp_path / "model.tar.gz"
    artifact.write_bytes(os.urandom(500))
    cache_a, cache_b = _worker_cache(tmp_path, "a"), _worker_cache(tmp_path, "b")
    shared = SharedCompileCache(CACHE_URL, s3, log=(logged := []).append)
    key = cache_a.store("base-1", artifact, {})
    shared.publish("base-1", key, cache_a)
    s3.put_object(Bucket=BUCKET, Key=f"team/cache/entries/{key}/model.tar.gz", Body=b"evil")
    assert shared.fetch("base-1", cache_b, tmp_path / "out" / "b.tar.gz") is None
    assert any("does not match" in line for line in logged)
    assert cache_b.read_entry(key) is None and not (tmp_path / "out" / "b.tar.gz").exists()


def test_an_entry_without_its_entry_json_is_a_miss(s3, tmp_path):
    cache_a, cache_b = _worker_cache(tmp_path, "a"), _worker_cache(tmp_path, "b")
    artifact = tmp_path / "model.tar.gz"
    artifact.write_bytes(os.urandom(500))
    key = cache_a.store("base-1", artifact, {})
    shared = SharedCompileCache(CACHE_URL, s3)
    shared.publish("base-1", key, cache_a)
    s3.delete_object(Bucket=BUCKET, Key=f"team/cache/entries/{key}/entry.json")  # an upload cut short
    assert shared.fetch("base-1", cache_b, tmp_path / "b.tar.gz") is None
    assert shared.fetch("never-compiled", cache_b, tmp_path / "c.tar.gz") is None


# ----------------------------------------------------------------------------- settings


def test_s3_locations_resolve_to_local_mirrors(tmp_path):
    settings = CompileSettings(tuning_database=TUNING_URL, cache_dir=CACHE_URL + "/").resolved(tmp_path)
    assert settings.tuning_remote == TUNING_URL and settings.cache_remote == CACHE_URL + "/"
    assert Path(settings.tuning_root).parent == tmp_path / "tuning-s3"
    assert Path(settings.cache_root).parent == tmp_path / "cache-s3"
    unresolved = CompileSettings(tuning_database=TUNING_URL, cache_dir=CACHE_URL + "/")
    carried = LocalJobConfig.from_env(LocalJobConfig(store=str(tmp_path / "jobs.db"), compile=unresolved).to_env())
    assert carried.compile.resolved(tmp_path) == settings  # the runner sees the same
    plain = CompileSettings(tuning_database=str(tmp_path / "t")).resolved(tmp_path)
    assert plain.tuning_remote is None and plain.tuning_root == str(tmp_path / "t")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tuning_database", "gs://bucket/tuning", "the gs:// scheme is not supported"),
        ("cache_dir", "https://example.com/cache", "the https:// scheme is not supported"),
        ("cache_dir", "s3://Bad_Bucket/cache", "'Bad_Bucket' is not an S3 bucket name"),
        ("tuning_database", "s3://bucket/a//b", "empty path segment"),
    ],
)
def test_bad_locations_name_the_option_and_value(field, value, message):
    with pytest.raises(ValueError, match=message) as info:
        CompileSettings(**{field: value})
    assert str(info.value).startswith(f"{field} {value!r}")


# ----------------------------------------------------------------------------- the runner, S3 out of reach


def test_a_job_compiles_while_s3_is_out_of_reach_and_shares_its_records_later(s3, tmp_path):
    """S3 down: the job still completes (warnings in its log), its tuning records wait in the
    outbox; the next job, with S3 back, pushes them first."""
    pytest.importorskip("tvm")
    pytest.importorskip("xgboost")
    from botocore.config import Config

    from airflow_neo.core import status as st
    from airflow_neo.local import runner
    from airflow_neo.local.store import JobStore
    from tests.local.test_tuning import _tiny_cnn_archive, tiny_cnn_request

    archive, _reference = _tiny_cnn_archive(tmp_path / "tiny.tar.gz")
    store_path = tmp_path / "state" / "jobs.db"
    store = JobStore(store_path)
    settings = CompileSettings(tuning_trials=8, tuning_database=TUNING_URL, cache_dir=CACHE_URL)

    def unreachable():
        return boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                            config=Config(retries={"total_max_attempts": 1}, connect_timeout=1))

    def request(name: str) -> dict:
        return tiny_cnn_request(name, archive, tmp_path / name)

    store.create(request("offline"))
    status = runner.run_job(store_path, "offline", poll_interval=0.2, settings=settings, s3_client_factory=unreachable)
    assert status == st.COMPLETED, store.describe("offline")["FailureReason"]
    log = store.log_path("offline").read_text()
    assert f"tuning records: could not pull {TUNING_URL}" in log
    assert "compile cache lookup failed" in log and "could not store the artifact in the compile cache" in log
    tuned = store.compile_metadata("offline")["tuning"]
    assert tuned["new_trials"] > 0
    database = Path(tuned["database"])
    assert len(tuning_db.outbox(database)) == 1  # kept for later
    assert _batch_keys(s3) == []

    # Still out of reach: this machine's own cache serves the next job all the same.
    store.create(request("offline-hit"))
    status = runner.run_job(store_path, "offline-hit", poll_interval=0.2, settings=settings, s3_client_factory=unreachable)
    assert status == st.COMPLETED
    log = store.log_path("offline-hit").read_text()
    assert "compile cache hit (local)" in log and "phase compile" not in log
    assert "could not share the cached artifact" in log

    store.create(request("online"))
    status = runner.run_job(store_path, "online", poll_interval=0.2, settings=settings, s3_client_factory=lambda: s3)
    assert status == st.COMPLETED
    assert "(pushed 1, pulled 0" in store.log_path("online").read_text()
    assert tuning_db.outbox(database) == []
    [key] = _batch_keys(s3)
    assert key.startswith(f"team/tuning/{database.name}/batches/")
    # The artifact, a local hit for this job, went up to the shared cache too.
    cache_key = store.compile_metadata("online")["cache"]["key"]
    assert s3.get_object(Bucket=BUCKET, Key=f"team/cache/entries/{cache_key}/entry.json")["Body"].read()
    # Another worker now gets those records.
    other = SharedTuningDatabase(TUNING_URL, tmp_path / "other-worker", s3)
    assert other.pull()["records"] == tuned["new_trials"]
    assert tuning_db.records_digest(other.mirror / database.name, tuned["workloads"]) == tuned["records_digest"]
