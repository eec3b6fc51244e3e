"""Config stores: the tuning tier merges without losing anything; the pack is keyed by CPU family and TVM series."""

from __future__ import annotations

import json

import pytest

from airflow_neo.local.configs import ConfigRecord, JsonConfigStore, OrderedUnion, PackStore, cpu_family
from airflow_neo.local.configs.file import CONFIG_FILE, records_text
from airflow_neo.local.configs.knobs import Knobs


def _record(key, secs, default=1.0, knobs=Knobs(8, 4), tried=None):
    return ConfigRecord(key, knobs, secs, default, "fused_conv2d", tried if tried is not None else [knobs.to_dict()])


def test_merge_keeps_the_faster_record_and_every_tried_candidate(tmp_path):
    store = JsonConfigStore(tmp_path)
    assert store.get("k") is None and not (tmp_path / CONFIG_FILE).exists()
    store.merge([_record("k", 0.5, knobs=Knobs(8, 4))])
    store.merge([_record("k", 0.7, knobs=Knobs(16, 2))])  # slower: knobs stay, tried grows
    fresh = JsonConfigStore(tmp_path).get("k")
    assert fresh.knobs == Knobs(8, 4) and fresh.secs == 0.5
    assert fresh.tried == [Knobs(8, 4).to_dict(), Knobs(16, 2).to_dict()]
    store.merge([_record("k", 0.2, knobs=Knobs(8, 6))])
    assert JsonConfigStore(tmp_path).lookup("k") == (Knobs(8, 6), "tuned")


def test_a_record_slower_than_the_default_plan_is_not_used(tmp_path):
    store = JsonConfigStore(tmp_path)
    store.merge([_record("slow", 1.5, default=1.0), _record("fast", 0.5, default=1.0)])
    assert store.lookup("slow") is None and store.lookup("fast") is not None
    assert "slow" not in records_text(tmp_path, ["slow", "fast"]) and "fast" in records_text(tmp_path, ["fast"])


def test_malformed_files_and_records_read_as_empty(tmp_path):
    (tmp_path / CONFIG_FILE).write_text("{not json")
    assert JsonConfigStore(tmp_path).get("k") is None
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"format": 1, "records": {
        "bad": {"knobs": {"vector_inner": -1}, "secs": 0.1}, "good": {"knobs": {"vector_inner": 8}, "secs": 0.1}}}))
    store = JsonConfigStore(tmp_path)
    assert store.get("bad") is None and store.get("good").knobs == Knobs(vector_inner=8)


def _pack(tmp_path, tvm="0.27.0"):
    path = tmp_path / "pack.json"
    path.write_text(json.dumps({"format": 1, "tvm": tvm, "families": {
        "x86-avx2": {"k": {"knobs": {"vector_inner": 16, "register_inner": 4}, "secs": 0.1, "default_secs": 0.2}},
        "x86-avx512": {"k": {"knobs": {"vector_inner": 32, "register_inner": 6}, "secs": 0.1, "default_secs": 0.2}},
    }}))
    return path


def test_the_pack_answers_only_its_family_and_tvm_series(tmp_path):
    path = _pack(tmp_path)
    assert PackStore("x86-avx2", "0.27.0.post1", path).lookup("k") == (Knobs(16, 4), "pack")
    assert PackStore("x86-avx512", "0.27.1", path).lookup("k") == (Knobs(32, 6), "pack")
    assert PackStore("aarch64-neon", "0.27.0", path).lookup("k") is None
    assert PackStore("x86-avx2", "0.28.0", path).lookup("k") is None  # other TVM: other workload hashes


def test_the_tuning_tier_comes_before_the_pack(tmp_path):
    tuned = JsonConfigStore(tmp_path / "db")
    tuned.merge([_record("k", 0.05, knobs=Knobs(8, 2))])
    union = OrderedUnion(tuned, PackStore("x86-avx2", "0.27.0", _pack(tmp_path)))
    assert union.lookup("k") == (Knobs(8, 2), "tuned")
    assert OrderedUnion(JsonConfigStore(tmp_path / "empty"), PackStore("x86-avx2", "0.27.0", _pack(tmp_path))).lookup("k") == (
        Knobs(16, 4), "pack")


@pytest.mark.parametrize(("request_target", "family"), [
    ({"TargetDevice": "ml_c4"}, "x86-avx2"),
    ({"TargetDevice": "ml_c5"}, "x86-avx512"),
    ({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}, "x86-sse"),
    ({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}}, "aarch64-neon"),
])
def test_target_table_entries_map_to_their_cpu_family(request_target, family):
    pytest.importorskip("tvm")
    from airflow_neo.local.schedules.cpu import cpu_info
    from airflow_neo.local.targets import resolve_target

    cpu = cpu_info(resolve_target(request_target).target)
    assert cpu_family(cpu.arch, cpu.vector_bits, cpu.fma) == family


def test_the_default_plan_stays_first_when_the_pack_has_knobs():
    from airflow_neo.local.tuning_configs import with_shipped

    default, a, b = Knobs(8, 4, None, False), Knobs(16, 2, None, False), Knobs(8, 4, 64, False)
    listed = [default, a, b]
    assert with_shipped(listed, None) == listed
    assert with_shipped(listed, b) == [default, b, a]  # measured second, not twice
    assert with_shipped(listed, Knobs(8, 6)) == [default, Knobs(8, 6), a, b]
    assert with_shipped(listed, default) == listed  # the pack kept the plan itself: nothing moves
