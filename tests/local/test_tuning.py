"""MetaSchedule tuning of the local backend: the trial plan, the shared database, records reused.

Only ``test_tuned_compile_then_records_reused`` runs TVM's tuner, on a tiny model with a 16-trial
budget; everything else is pure Python.
"""

from __future__ import annotations

import json
import multiprocessing
import platform
import re
import tarfile
from pathlib import Path

import pytest

from airflow_neo.local import tuning_db
from airflow_neo.local.configs import JsonConfigStore
from airflow_neo.local.config import ENV_JOB_CONFIG, LocalJobConfig
from airflow_neo.local.settings import CompileSettings
from airflow_neo.local.tuning import TaskInfo, first_round_plan, latency_share_plan

# ----------------------------------------------------------------------------- the plan


def _tasks() -> list[TaskInfo]:
    return [
        TaskInfo("conv-big", "conv_big", weight=2, flops=2e8),
        TaskInfo("conv-small", "conv_small", weight=1, flops=1e8),
        TaskInfo("dense", "dense", weight=1, flops=1e6),
        TaskInfo("reshape", "reshape", weight=1, flops=1),
    ]


def test_first_round_goes_to_the_biggest_kernels_first():
    plan = first_round_plan(_tasks(), remaining=20, first_round=8)
    assert plan == {"conv-big": 8, "conv-small": 8, "dense": 4}


def test_first_round_skips_kernels_already_granted():
    tasks = _tasks()
    tasks[0].granted = 8
    tasks[1].granted = 3
    assert first_round_plan(tasks, remaining=100, first_round=8) == {"conv-small": 5, "dense": 8, "reshape": 8}


def test_later_rounds_follow_the_latency_share():
    tasks = _tasks()
    for task, secs in zip(tasks, (4e-3, 2e-3, 1e-3, 1e-6)):
        task.best_secs = secs
    # weighted times 8, 2, 1, ~0 ms: 8 rounds of 16 split about 8:2:1
    plan = latency_share_plan(tasks, remaining=128, round_size=16)
    assert sum(plan.values()) == 128
    assert plan["conv-big"] > plan["conv-small"] >= plan.get("dense", 0) >= 0
    assert "reshape" not in plan
    assert all(trials % 16 == 0 for trials in plan.values())


def test_leftover_trials_go_to_the_slowest_kernel():
    tasks = _tasks()
    for task, secs in zip(tasks, (4e-3, 2e-3, 1e-3, 1e-6)):
        task.best_secs = secs
    assert latency_share_plan(tasks, remaining=10, round_size=16) == {"conv-big": 10}
    assert latency_share_plan(tasks, remaining=0) == {}


def test_unmeasured_kernels_count_as_the_slowest():
    tasks = _tasks()[:2]
    tasks[0].best_secs = 1e-3
    plan = latency_share_plan(tasks, remaining=64, round_size=16)
    assert plan["conv-small"] >= 16  # weight 1 x the slowest known time


def test_exhausted_and_unmeasurable_kernels_get_no_more_trials():
    tasks = _tasks()
    for task, secs in zip(tasks, (4e-3, 2e-3, 1e-3, 1e-6)):
        task.best_secs, task.granted = secs, 8
    tasks[0].exhausted = True  # its search space ran out
    tasks[2].best_secs = None  # tried, never measured (e.g. a gather with random indices)
    plan = latency_share_plan(tasks, remaining=64, round_size=16)
    assert set(plan) == {"conv-small"} and plan["conv-small"] == 64


# ----------------------------------------------------------------------------- the shared database


def _workload(shash: str, body: str = "bW9k") -> str:
    return json.dumps([shash, body])


def _record(index: int, secs: float, trace: str = "t") -> str:
    return json.dumps([index, [[trace], [secs], {"kind": "llvm"}, []]])


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


def test_target_database_dir_is_per_target_and_core_count(tmp_path):
    target = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver3"}
    a = tuning_db.target_database_dir(tmp_path, target, 2)
    assert a == tuning_db.target_database_dir(tmp_path, dict(reversed(list(target.items()))), 2)
    assert a.name.startswith("znver3-x86_64-2c-")
    assert a != tuning_db.target_database_dir(tmp_path, target, 4)
    assert a != tuning_db.target_database_dir(tmp_path, {**target, "mcpu": "skylake-avx512"}, 2)


def test_scan_counts_trials_and_finds_the_best_valid_record(tmp_path):
    db = tmp_path / "db"
    _write(db / tuning_db.WORKLOAD_FILE, [_workload("111"), _workload("222"), _workload("111")])
    _write(db / tuning_db.RECORD_FILE, [
        _record(0, 3e-3), _record(2, 1e-3, "best"), _record(0, 1e10, "failed"), _record(1, 5e-3),
    ])
    stats = tuning_db.scan(db, ["111", "333"])
    assert stats["111"].records == 3 and stats["111"].best_secs == pytest.approx(1e-3)
    assert '"best"' in stats["111"].best_record
    assert stats["333"].records == 0 and stats["333"].best_secs is None
    assert "222" not in stats


def test_torn_last_line_is_ignored(tmp_path):
    db = tmp_path / "db"
    _write(db / tuning_db.WORKLOAD_FILE, [_workload("111")])
    (db / tuning_db.RECORD_FILE).write_text(_record(0, 2e-3) + "\n" + _record(0, 1e-3)[:25])
    assert tuning_db.scan(db, ["111"])["111"].records == 1


def test_merge_after_a_torn_write_keeps_every_line_whole(tmp_path):
    shared = tmp_path / "shared"
    _write(shared / tuning_db.WORKLOAD_FILE, [_workload("111")])
    (shared / tuning_db.WORKLOAD_FILE).write_text(_workload("111") + "\n" + _workload("999")[:12])  # died mid-write
    (shared / tuning_db.RECORD_FILE).write_text(_record(0, 2e-3))  # whole, but its newline never written
    snap = tuning_db.snapshot(shared, tmp_path / "private")
    with open(snap.directory / tuning_db.WORKLOAD_FILE, "a") as handle:
        handle.write(_workload("222") + "\n")
    with open(snap.directory / tuning_db.RECORD_FILE, "a") as handle:
        handle.write(_record(1, 4e-3, "mine-222") + "\n")
    assert tuning_db.merge(snap) == 1
    workloads = _lines(shared / tuning_db.WORKLOAD_FILE)
    records = _lines(shared / tuning_db.RECORD_FILE)
    assert [tuning_db._workload_hash(line) for line in workloads] == ["111", "222"]
    assert [json.loads(line)[0] for line in records] == [0, 1]
    assert tuning_db.scan(shared)["222"].records == 1


def test_records_digest_follows_only_the_best_records(tmp_path):
    db = tmp_path / "db"
    _write(db / tuning_db.WORKLOAD_FILE, [_workload("111")])
    _write(db / tuning_db.RECORD_FILE, [_record(0, 2e-3)])
    first = tuning_db.records_digest(db, ["111"])
    with open(db / tuning_db.RECORD_FILE, "a") as handle:
        handle.write(_record(0, 5e-3, "worse") + "\n")
    assert tuning_db.records_digest(db, ["111"]) == first
    with open(db / tuning_db.RECORD_FILE, "a") as handle:
        handle.write(_record(0, 1e-3, "better") + "\n")
    assert tuning_db.records_digest(db, ["111"]) != first
    assert tuning_db.records_digest(None, ["111"]) == tuning_db.records_digest(tmp_path / "none", ["111"])


def test_merge_renumbers_workloads_other_jobs_added_meanwhile(tmp_path):
    shared = tmp_path / "shared"
    _write(shared / tuning_db.WORKLOAD_FILE, [_workload("111")])
    _write(shared / tuning_db.RECORD_FILE, [_record(0, 2e-3)])
    snap = tuning_db.snapshot(shared, tmp_path / "private")
    assert snap.workload_lines == 1 and snap.record_lines == 1
    # this job (in its copy) adds workload 222 at index 1 and records for 111 and 222
    with open(snap.directory / tuning_db.WORKLOAD_FILE, "a") as handle:
        handle.write(_workload("222") + "\n")
    with open(snap.directory / tuning_db.RECORD_FILE, "a") as handle:
        handle.write(_record(1, 4e-3, "mine-222") + "\n" + _record(0, 1e-3, "mine-111") + "\n")
    # meanwhile another job merged workload 333 at index 1 of the shared file
    with open(shared / tuning_db.WORKLOAD_FILE, "a") as handle:
        handle.write(_workload("333") + "\n")
    with open(shared / tuning_db.RECORD_FILE, "a") as handle:
        handle.write(_record(1, 7e-3, "theirs") + "\n")
    assert tuning_db.merge(snap, {"111": 8, "222": 8}) == 2
    assert [tuning_db._workload_hash(line) for line in _lines(shared / tuning_db.WORKLOAD_FILE)] == ["111", "333", "222"]
    stats = tuning_db.scan(shared)
    assert stats["222"].records == 1 and '"mine-222"' in stats["222"].best_record
    assert stats["111"].records == 2 and '"mine-111"' in stats["111"].best_record
    assert stats["333"].records == 1
    assert tuning_db.read_ledger(shared) == {"111": 8, "222": 8}
    tuning_db.merge(tuning_db.snapshot(shared, tmp_path / "again"), {"111": 8})
    assert tuning_db.read_ledger(shared) == {"111": 16, "222": 8}


def _merge_many(shared: str, private: str, shash: str, count: int) -> None:
    for i in range(count):
        snap = tuning_db.snapshot(shared, f"{private}-{i}")
        with open(snap.directory / tuning_db.WORKLOAD_FILE, "a") as handle:
            handle.write(_workload(shash) + "\n")
        index = len(_lines(snap.directory / tuning_db.WORKLOAD_FILE)) - 1
        with open(snap.directory / tuning_db.RECORD_FILE, "a") as handle:
            handle.write(_record(index, 1e-3 * (i + 1), f"{shash}-{i}") + "\n")
        tuning_db.merge(snap, {shash: 1})


def test_concurrent_jobs_do_not_corrupt_the_database(tmp_path):
    shared = tmp_path / "shared"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_merge_many, args=(str(shared), str(tmp_path / f"p{n}"), f"{n}00", 10)) for n in range(1, 4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    stats = tuning_db.scan(shared)
    assert {key: entry.records for key, entry in stats.items()} == {"100": 10, "200": 10, "300": 10}
    assert tuning_db.read_ledger(shared) == {"100": 10, "200": 10, "300": 10}
    for line in _lines(shared / tuning_db.RECORD_FILE):  # every line whole, every index in range
        index = json.loads(line)[0]
        assert 0 <= index < len(_lines(shared / tuning_db.WORKLOAD_FILE))


# ----------------------------------------------------------------------------- settings and plumbing


def test_settings_round_trip_through_the_environment(tmp_path):
    settings = CompileSettings(tuning_trials=64, tuning_database=str(tmp_path / "t"), cache_dir=None, cache_max_bytes=5)
    config = LocalJobConfig(store=str(tmp_path / "jobs.db"), compile=settings)
    assert LocalJobConfig.from_env(config.to_env()).compile == settings
    resolved = CompileSettings().resolved(tmp_path)
    assert resolved.tuning_database == str(tmp_path / "tuning") and resolved.cache_dir == str(tmp_path / "cache")
    lots = json.loads(config.to_json())
    lots["compile"]["tuning_trials"] = "lots"
    with pytest.raises(ValueError, match="tuning_trials"):
        LocalJobConfig.from_env({ENV_JOB_CONFIG: json.dumps(lots)})
    with pytest.raises(ValueError):
        CompileSettings(tuning_trials=-1)


def test_hook_hands_tuning_and_cache_settings_to_the_runner(tmp_path, monkeypatch):
    from airflow_neo.hooks import local as local_hook
    from airflow_neo.local import runner

    monkeypatch.setenv("AIRFLOW__NEO__TUNING_TRIALS", "96")
    monkeypatch.setenv("AIRFLOW__NEO__TUNING_DATABASE", str(tmp_path / "tuning"))
    monkeypatch.setenv("AIRFLOW__NEO__CACHE_MAX_BYTES", "12345")
    seen = {}

    def fake_launch(store, name, **kwargs):
        seen.update(kwargs["config"].to_env())
        return 4242

    monkeypatch.setattr(runner, "launch_detached", fake_launch)
    request = {
        "CompilationJobName": "tuned-job",
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {"S3Uri": _existing_file(tmp_path / "m.tar.gz"), "DataInputConfig": '{"x": [1, 4]}', "Framework": "ONNX"},
        "OutputConfig": {"S3OutputLocation": f"file://{tmp_path}/out", "TargetDevice": "ml_c5"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    hook = local_hook.LocalNeoHook(store_path=str(tmp_path / "jobs.db"))
    hook.create_compilation_job(request)
    assert LocalJobConfig.from_env(seen).compile == CompileSettings(
        tuning_trials=96, tuning_database=str(tmp_path / "tuning"), cache_dir=None, cache_max_bytes=12345
    )
    hook = local_hook.LocalNeoHook(store_path=str(tmp_path / "jobs.db"))
    hook.create_compilation_job({**request, "CompilationJobName": "tuned-job-2"}, tuning_trials=7)
    assert LocalJobConfig.from_env(seen).compile.tuning_trials == 7
    with pytest.raises(ValueError):
        local_hook.LocalNeoHook(store_path=str(tmp_path / "jobs.db")).create_compilation_job(
            {**request, "CompilationJobName": "tuned-job-3"}, tuning_trials=-3
        )


def test_operator_passes_tuning_trials_to_the_local_hook(tmp_path):
    from airflow_neo.operators.neo import NeoCompilationOperator

    op = NeoCompilationOperator(task_id="compile", config={}, backend="local", local_store=str(tmp_path / "j.db"),
                                tuning_trials=32)
    assert op.tuning_trials == 32
    with pytest.raises(ValueError, match="tuning_trials"):
        NeoCompilationOperator(task_id="bad", config={}, backend="local", tuning_trials=-1)


def test_provider_declares_the_options():
    from airflow_neo.get_provider_info import get_provider_info

    options = get_provider_info()["config"]["neo"]["options"]
    for name in ("tuning_trials", "tuning_database", "cache_dir", "cache_max_bytes"):
        assert options[name]["description"] and "default" in options[name]
    assert int(options["tuning_trials"]["default"]) == CompileSettings().tuning_trials
    assert int(options["cache_max_bytes"]["default"]) == CompileSettings().cache_max_bytes


# ----------------------------------------------------------------------------- real tuning (TVM)


def _host_platform() -> dict:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return {"Os": "LINUX", "Arch": "X86_64"}
    if machine in ("aarch64", "arm64"):
        return {"Os": "LINUX", "Arch": "ARM64"}
    pytest.skip(f"no local-backend platform for {machine}")


def _tiny_cnn_archive(path: Path) -> tuple[Path, object]:
    """A conv-relu-dense ONNX model (two tunable kernels) and its numpy reference."""
    np = pytest.importorskip("numpy")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype("float32")
    fc = rng.standard_normal((8 * 8 * 8, 4)).astype("float32")
    x = helper.make_tensor_value_info("input0", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("Conv", ["input0", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["output0"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    import io

    with tarfile.open(path, "w:gz") as tar:
        data = model.SerializeToString()
        info = tarfile.TarInfo("model.onnx")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    def reference(data):
        import torch

        out = torch.nn.functional.conv2d(torch.from_numpy(data), torch.from_numpy(w), padding=1).relu()
        return out.reshape(1, -1).numpy() @ fc

    return path, reference


def tiny_cnn_request(name: str, archive: Path, output: Path) -> dict:
    """A local-backend request to compile the tiny CNN of :func:`_tiny_cnn_archive` for this host."""
    return {
        "CompilationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {"S3Uri": str(archive), "DataInputConfig": '{"input0": [1, 3, 8, 8]}', "Framework": "ONNX"},
        "OutputConfig": {"S3OutputLocation": str(output), "TargetPlatform": _host_platform()},
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }


def test_tuned_compile_then_records_reused(tmp_path):
    """Job 1 tunes (16 trials, progress in the job log) and fills the database; job 2, same model,
    cache off: zero new trials, the records applied; job 3: a cache hit."""
    pytest.importorskip("tvm")
    pytest.importorskip("xgboost")
    np = pytest.importorskip("numpy")
    from airflow_neo import runtime
    from airflow_neo.core import status as st
    from airflow_neo.local import runner
    from airflow_neo.local.store import JobStore

    archive, reference = _tiny_cnn_archive(tmp_path / "tiny.tar.gz")
    store_path = tmp_path / "state" / "jobs.db"
    store = JobStore(store_path)
    tuned = CompileSettings(tuning_trials=16, tuning_database=str(tmp_path / "tuning"),
                            cache_dir=str(tmp_path / "cache"))

    def request(name: str) -> dict:
        return tiny_cnn_request(name, archive, tmp_path / name)

    store.create(request("tune-1"))
    assert runner.run_job(store_path, "tune-1", poll_interval=0.2, settings=tuned) == st.COMPLETED, store.describe("tune-1")
    first = store.compile_metadata("tune-1")["tuning"]
    assert 0 < first["new_trials"] <= 16
    database = Path(first["database"])
    assert database.parent == tmp_path / "tuning"
    records = tuning_db.scan(database, first["workloads"])
    assert sum(entry.records for entry in records.values()) == first["new_trials"]
    # a record applies only where it beats the kernel's default schedule (measured once, here)
    assert first["applied"] == sum(entry["used"] == "tuned" for entry in first["kernels"].values())
    assert all(entry["default_secs"] for entry in first["kernels"].values())
    assert sum("measured the default schedules" in line for line in store.log_path("tune-1").read_text().splitlines()) == 1
    log_one = store.log_path("tune-1").read_text()
    assert "tuning [first round 1/" in log_one and "best" in log_one
    assert re.search(r"tuning: \d+ config candidates and \d+ search trials in \d+ s; \d+ records added to ", log_one)
    # config tuning came first: the default plan and its variants of each conv kernel, measured
    assert 0 < first["config_trials"] <= 8 and "tuning [configs] " in log_one
    configs = JsonConfigStore(database)
    measured = {key: configs.get(key) for key in first["workloads"] if configs.get(key) is not None}
    assert measured and all(record.tried and record.default_secs for record in measured.values())
    ledger = tuning_db.read_ledger(database)
    assert all(ledger.get(key, 0) >= len(record.tried) for key, record in measured.items())
    # the artifact used a config exactly where one was faster than the default plan
    schedules = store.compile_metadata("tune-1")["schedules"]
    by_kernel = {schedules["keys"][name]: origin for name, origin in schedules["origin"].items()}
    for key, record in measured.items():
        if key in by_kernel and by_kernel[key] != "record":
            assert by_kernel[key] == ("tuned" if record.useful() else "default"), (key, record)

    no_cache = CompileSettings(tuning_trials=16, tuning_database=tuned.tuning_database, cache_max_bytes=0)
    store.create(request("tune-2"))
    assert runner.run_job(store_path, "tune-2", poll_interval=0.2, settings=no_cache) == st.COMPLETED
    second = store.compile_metadata("tune-2")["tuning"]
    assert second["new_trials"] == 0
    assert second["records_digest"] == first["records_digest"]
    assert second["applied"] == first["applied"]
    assert {k: e["default_secs"] for k, e in second["kernels"].items()} == {
        k: e["default_secs"] for k, e in first["kernels"].items()}  # the stored baselines, not measured again
    after = tuning_db.scan(database, first["workloads"])
    assert {k: v.records for k, v in after.items()} == {k: v.records for k, v in records.items()}  # nothing measured
    assert re.search(r"budget 16 trials, (1[6-9]|[2-9]\d) already in the database .*, 0 to run",
                     store.log_path("tune-2").read_text())

    store.create(request("tune-3"))
    assert runner.run_job(store_path, "tune-3", poll_interval=0.2, settings=tuned) == st.COMPLETED
    assert "compile cache hit" in store.log_path("tune-3").read_text()

    data = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype("float32")
    for name in ("tune-1", "tune-2", "tune-3"):
        artifact = store.describe(name)["ModelArtifacts"]["S3ModelArtifacts"]
        got = runtime.load(artifact).run({"input0": data})[0]
        np.testing.assert_allclose(got, reference(data), rtol=1e-4, atol=1e-4)


def _existing_file(path) -> str:
    """A file:// URI of a file that exists (create refuses a model file that does not)."""
    path.write_bytes(b"model")
    return path.as_uri()


# ----------------------------------------------------------------------------- records versus default schedules


def test_latency_share_counts_the_faster_of_default_schedule_and_record():
    tasks = _tasks()[:2]
    tasks[0].best_secs, tasks[0].default_secs = 4e-3, 1e-4  # the default schedule is far better
    tasks[1].best_secs, tasks[1].default_secs = 2e-3, 3e-3
    plan = latency_share_plan(tasks, remaining=64, round_size=16)
    assert plan["conv-small"] > plan.get("conv-big", 0)


def test_a_record_applies_only_when_it_beats_the_default_by_the_margin():
    from airflow_neo.local.tuning_baseline import MARGIN, choose

    assert choose(1e-3, 2e-3, measured_here=True) == "tuned"
    assert choose(1e-3 * (1 - MARGIN / 2), 1e-3, measured_here=True) == "default"
    assert choose(2e-3, 1e-3, measured_here=True) == "default"
    assert choose(None, 1e-3, measured_here=True) == "default"
    assert choose(2e-3, None, measured_here=True) == "tuned"  # the default could not be measured
    assert choose(2e-3, None, measured_here=False) == "tuned"  # cross compile: records apply
    assert choose(None, None, measured_here=False) is None


def test_filtered_database_keeps_only_the_best_record_of_the_kept_workloads(tmp_path):
    from airflow_neo.local.tuning_baseline import filtered_database

    db = tmp_path / "db"
    _write(db / tuning_db.WORKLOAD_FILE, [_workload("111"), _workload("222")])
    _write(db / tuning_db.RECORD_FILE, [_record(0, 3e-3), _record(1, 1e-3), _record(0, 2e-3, "best")])
    out = filtered_database(db, tmp_path / "out", ["111"])
    assert [tuning_db._workload_hash(line) for line in _lines(out / tuning_db.WORKLOAD_FILE)] == ["111"]
    stats = tuning_db.scan(out)
    assert set(stats) == {"111"} and stats["111"].records == 1 and '"best"' in stats["111"].best_record


def test_baselines_are_kept_per_schedules_version(tmp_path):
    from airflow_neo.local import tuning_baseline as tb

    tb.store_baselines(tmp_path, "v1", {"111": 1e-3, "222": None})
    tb.store_baselines(tmp_path, "v1", {"333": 2e-3})
    assert tb.read_baselines(tmp_path, "v1") == {"111": 1e-3, "222": None, "333": 2e-3}
    tb.store_baselines(tmp_path, "v2", {"111": 5e-4})
    assert tb.read_baselines(tmp_path, "v2") == {"111": 5e-4}
    assert tb.read_baselines(tmp_path, "v1") == {}
    assert len(tb.schedules_version()) == 16


class _Target:
    """The part of a ResolvedTarget that optimize() uses."""

    def __init__(self, target: dict, here: bool = True):
        self.target, self._here = target, here

    def runs_here(self) -> bool:
        return self._here


def _dense_module():
    """A fused Relax module with one tunable dense kernel (1x256 @ 256x64) and its weights."""
    np = pytest.importorskip("numpy")
    tvm = pytest.importorskip("tvm")
    from tvm import relax
    from tvm.target import codegen

    weights = np.random.default_rng(0).standard_normal((256, 64)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 256), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, relax.const(weights)))
        bb.emit_func_output(out)
    target = {"kind": "llvm", "mcpu": str(codegen.llvm_get_system_cpu())}
    with tvm.target.Target(target):
        mod = relax.get_pipeline("zero")(bb.get())
    return mod, target, weights


def _run_dense(mod, target, weights, log) -> None:
    import numpy as np
    import tvm
    from tvm import relax

    from airflow_neo.local.schedules import compile_with_default_schedules

    executable, _ = compile_with_default_schedules(mod, tvm.target.Target(target), log=log)
    data = np.random.default_rng(1).standard_normal((1, 256)).astype("float32")
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    np.testing.assert_allclose(got, data @ weights, rtol=1e-4, atol=1e-4)


def _set_record_secs(db_dir: Path, secs: float) -> None:
    """Every record of the database now says it ran in ``secs`` (a deliberately slow or fast record)."""
    lines = []
    for line in _lines(db_dir / tuning_db.RECORD_FILE):
        index, record = json.loads(line)
        record[1] = [secs]
        lines.append(json.dumps([index, record]))
    _write(db_dir / tuning_db.RECORD_FILE, lines)


@pytest.fixture(scope="module")
def tuned_dense(tmp_path_factory):
    """The dense module tuned with 2 trials (its default schedule measured on the way)."""
    pytest.importorskip("tvm")
    from airflow_neo.local.tuning import optimize

    mod, target, weights = _dense_module()
    root = tmp_path_factory.mktemp("tuning")
    lines: list[str] = []
    _, report = optimize(mod, _Target(target), trials=2, database_root=root, log=lines.append)
    return mod, target, weights, root, report, lines


def test_default_schedule_is_measured_once_and_a_slow_record_is_not_applied(tuned_dense):
    from airflow_neo.local.tuning import optimize

    mod, target, weights, root, first, lines = tuned_dense
    assert first["new_trials"] > 0 and sum("measured the default schedules" in line for line in lines) == 1
    (key, entry), = ((k, e) for k, e in first["kernels"].items() if e["name"].startswith("matmul"))
    assert entry["default_secs"] and entry["record_secs"]
    assert entry["used"] == ("tuned" if entry["record_secs"] < entry["default_secs"] * 0.97 else "default")

    _set_record_secs(Path(first["database"]), entry["default_secs"] * 10)  # a record far slower than the default
    again: list[str] = []
    tuned, report = optimize(mod, _Target(target), trials=2, database_root=root, log=again.append)
    assert report["new_trials"] == 0
    assert not any("measured the default schedules" in line for line in again)  # the stored baseline
    assert report["kernels"][key]["default_secs"] == entry["default_secs"]
    assert report["kernels"][key]["used"] == "default" and report["applied"] == 0
    assert tuned is mod  # nothing applied: every kernel is left for the default schedules
    _run_dense(tuned, target, weights, again.append)


def test_a_record_faster_than_the_default_is_applied_and_cross_compiles_apply_records(tuned_dense):
    from airflow_neo.local.tuning import optimize

    mod, target, weights, root, first, _ = tuned_dense
    key = next(k for k, e in first["kernels"].items() if e["name"].startswith("matmul"))
    _set_record_secs(Path(first["database"]), first["kernels"][key]["default_secs"] / 10)
    lines: list[str] = []
    tuned, report = optimize(mod, _Target(target), trials=0, database_root=root, log=lines.append)
    assert report["kernels"][key]["used"] == "tuned" and report["applied"] == 1
    assert tuned is not mod and any("tirx.is_scheduled" in (func.attrs or {}) for _, func in tuned.functions_items())
    _run_dense(tuned, target, weights, lines.append)

    # a target that does not run here: nothing measured, the records apply as they are
    _set_record_secs(Path(first["database"]), first["kernels"][key]["default_secs"] * 10)
    _, cross = optimize(mod, _Target(target, here=False), trials=0, database_root=root, log=lines.append)
    assert cross["kernels"][key]["used"] == "tuned" and cross["kernels"][key]["default_secs"] is None
    assert cross["baseline"].startswith("not measured")


def test_an_unnamed_handler_on_meta_schedules_logger_does_not_break_tuning(tmp_path):
    """Other code in the process may leave an unnamed handler on MetaSchedule's logger; its own
    logging setup (run for every tuning task) must still work."""
    import logging

    pytest.importorskip("tvm")
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir

    from airflow_neo.local.tuning import _quiet_meta_schedule

    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    stray = logging.StreamHandler()
    logger.addHandler(stray)
    try:
        _quiet_meta_schedule()
        assert stray not in logger.handlers
        assert len(get_loggers_from_work_dir(str(tmp_path), ["task_0"])) == 1
    finally:
        logger.removeHandler(stray)
