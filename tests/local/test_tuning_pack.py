"""The shipped tuning pack in a compile: its knobs reach the kernels of the target's CPU family only."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tvm")

from airflow_neo import runtime  # noqa: E402
from airflow_neo.local.compiler import compile_model  # noqa: E402
from airflow_neo.local.configs import cpu_family  # noqa: E402
from airflow_neo.local.configs import pack as shipped  # noqa: E402
from airflow_neo.local.configs.knobs import Knobs  # noqa: E402
from tests.local import models  # noqa: E402

X86_64 = {"Os": "LINUX", "Arch": "X86_64"}


def _compile(case, tmp_path, name, **kwargs):
    request = models.make_request(case, target_platform=X86_64)
    artifact = tmp_path / name / "model.tar.gz"
    lines: list[str] = []
    metadata = compile_model(request, str(case.archive), str(artifact), log=lines.append,
                             tuning_database=str(tmp_path / "tuning"), **kwargs)
    return artifact, metadata["schedules"], lines


def _family() -> str:
    from airflow_neo.local.schedules.cpu import cpu_info
    from airflow_neo.local.targets import resolve_target

    cpu = cpu_info(resolve_target({"TargetPlatform": X86_64}).target)
    return cpu_family(cpu.arch, cpu.vector_bits, cpu.fma)


def test_pack_knobs_apply_to_their_family_only(tmp_path, monkeypatch):
    import tvm

    case = models.onnx_cnn(tmp_path / "model")
    plain, schedules, _ = _compile(case, tmp_path, "plain")
    conv = next(name for name, rule in schedules["kernels"].items() if rule.startswith("conv2d"))
    key, default = schedules["keys"][conv], Knobs.from_dict(schedules["knobs"][conv])
    assert schedules["origin"][conv] == "default"
    other = Knobs(default.vector_inner, 1, default.reduce_block, default.parallel_register)
    if other == default:
        other = Knobs(default.vector_inner, default.register_inner, default.reduce_block, not default.parallel_register)
    record = {"knobs": other.to_dict(), "secs": 1e-4, "default_secs": 2e-4}
    foreign = {"knobs": {"vector_inner": 1, "register_inner": 1}, "secs": 1e-4, "default_secs": 2e-4}
    family = _family()  # generic x86-64 is SSE2: "x86-sse", whatever this machine has
    pack_file = tmp_path / "pack.json"
    pack_file.write_text(json.dumps({"format": 1, "tvm": tvm.__version__, "families": {
        family: {key: record}, "x86-avx512": {key: foreign}, "aarch64-neon": {key: foreign}}}))
    monkeypatch.setattr(shipped, "PACK_FILE", pack_file)

    packed, schedules2, lines = _compile(case, tmp_path, "packed")
    assert schedules2["origin"][conv] == "pack" and schedules2["knobs"][conv] == other.to_dict()
    assert f"tuning pack: 1 kernel configs for {family}" in lines
    assert "schedules from: " in next(line for line in lines if line.startswith("default schedules:"))
    _, schedules3, lines3 = _compile(case, tmp_path, "pack-off", tuning_pack=False)  # [neo] tuning_pack = False
    assert schedules3["origin"][conv] == "default" and schedules3["knobs"][conv] == default.to_dict()
    assert any(line.startswith("tuning pack: off ([neo] tuning_pack)") for line in lines3)
    want = case.reference(case.inputs)
    for artifact in (plain, packed):
        got = runtime.load(artifact).run(case.inputs)
        np.testing.assert_allclose(got[0], np.asarray(want[0]).reshape(got[0].shape), rtol=case.rtol, atol=case.atol)


def test_a_pack_of_another_tvm_series_is_not_used(tmp_path, monkeypatch):
    case = models.onnx_cnn(tmp_path / "model")
    pack_file = tmp_path / "pack.json"
    pack_file.write_text(json.dumps({"format": 1, "tvm": "0.1.0", "families": {_family(): {}}}))
    monkeypatch.setattr(shipped, "PACK_FILE", pack_file)
    _, schedules, lines = _compile(case, tmp_path, "old")
    assert "pack" not in schedules["origin"].values()
    assert any(line.startswith(f"tuning pack: none for {_family()}") for line in lines)


def test_the_pack_setting_reaches_the_compile_and_the_cache_key(monkeypatch):
    from airflow_neo.hooks.local import local_job_config
    from airflow_neo.local.cache import base_key

    monkeypatch.setenv("AIRFLOW__NEO__TUNING_PACK", "False")
    config = local_job_config()
    assert config.compile.tuning_pack is False and config.compile.pack_arguments() == {"tuning_pack": False}
    request = {"InputConfig": {"S3Uri": "file:///m.tar.gz", "DataInputConfig": "{}", "Framework": "ONNX"},
               "OutputConfig": {"S3OutputLocation": "file:///out", "TargetDevice": "ml_c4"}}
    keys = {flag: base_key("d" * 64, request, compiler="c", tuning_trials=0, tuning_database=None, tuning_pack=flag)
            for flag in (True, False)}
    assert keys[True] != keys[False]
