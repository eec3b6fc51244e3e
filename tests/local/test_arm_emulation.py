"""ARM64 artifacts run and checked under emulation.

Real models are compiled here (x86-64) for aarch64 targets through the real compile path
(:func:`airflow_neo.local.compiler.compile_model`, cross-linked with Debian's
``gcc-aarch64-linux-gnu``), then loaded and run with :mod:`airflow_neo.runtime` inside an aarch64
Python under QEMU user-mode emulation (``qemu-aarch64``, see :mod:`tests.support.qemu`), and the
outputs are compared with onnxruntime run here (x86-64) on the same inputs. onnxruntime's own
aarch64 wheel runs the same ONNX files in the emulator as well, to show both run there.

The emulated root (Debian arm64 python3.11 + the manylinux aarch64 wheels of apache-tvm,
apache-tvm-ffi, numpy, onnxruntime) is built by ``scripts/arm_root.sh``; ``scripts/test.sh`` builds
it when run as root and exports its path as ``AIRFLOW_NEO_ARM64_ROOT``. Without it these tests
skip, saying why, except under ``CI=true``, where they fail.

All models run in one emulated Python process (``import tvm`` alone costs 20-40 s under qemu),
onnxruntime's in a second one, side by side.

armhf (ARMv7, TargetDevice ``rasp3b``, TargetPlatform LINUX/ARM_EABIHF) is not run: there is no
TVM runtime for it to be had from a package registry. PyPI has no armv7l wheel of apache-tvm or
apache-tvm-ffi (nor of numpy or onnxruntime), apache-tvm publishes no source distribution, and
Debian does not package TVM; running an armhf artifact would mean cross-building TVM's runtime
from a source checkout. ``tests/local/test_compile.py`` checks the armhf library's ELF header
(32-bit ARM, hard-float ABI) instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from airflow_neo import samples
from airflow_neo.local.compiler import compile_model
from tests.local import models
from tests.support import qemu

pytestmark = pytest.mark.timeout(900)

RTOL = 1e-4


def _fail_or_skip(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"ARM64 emulation is required under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def arm_root() -> qemu.ArmRoot:
    try:
        return qemu.find_root()
    except qemu.EmulationUnavailable as err:
        _fail_or_skip(str(err))


# -- models ---------------------------------------------------------------------------------------


def _mobilenet_block_onnx(seed: int = 1):
    """Two MobileNetV2 inverted-residual blocks (1x1 expand, BatchNorm, ReLU6, 3x3 depthwise, 1x1
    project; the first with a residual add, the second strided) + global pool + classifier, built
    with onnx.helper; input ``image`` [1,16,24,24]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def conv(x, out, cin, cout, k, *, group=1, stride=1):
        w = const(f"{out}_w", rng.standard_normal((cout, cin // group, k, k)) * (2.0 / (cin // group * k * k)) ** 0.5)
        b = const(f"{out}_b", rng.standard_normal(cout) * 0.1)
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [out], group=group, strides=[stride, stride], pads=[pad] * 4, kernel_shape=[k, k]
            )
        )
        return out

    def bn_relu6(x, out, c):
        scale = const(f"{out}_scale", rng.uniform(0.5, 1.5, c))
        bias = const(f"{out}_bias", rng.standard_normal(c) * 0.1)
        mean = const(f"{out}_mean", rng.standard_normal(c) * 0.1)
        var = const(f"{out}_var", rng.uniform(0.5, 1.5, c))
        nodes.append(helper.make_node("BatchNormalization", [x, scale, bias, mean, var], [f"{out}_bn"]))
        lo, hi = const(f"{out}_lo", 0.0), const(f"{out}_hi", 6.0)
        nodes.append(helper.make_node("Clip", [f"{out}_bn", lo, hi], [out]))
        return out

    def block(x, name, cin, cout, expand, stride):
        hidden = cin * expand
        h = bn_relu6(conv(x, f"{name}_expand", cin, hidden, 1), f"{name}_a1", hidden)
        h = bn_relu6(conv(h, f"{name}_dw", hidden, hidden, 3, group=hidden, stride=stride), f"{name}_a2", hidden)
        h = conv(h, f"{name}_project", hidden, cout, 1)
        if stride == 1 and cin == cout:
            nodes.append(helper.make_node("Add", [x, h], [f"{name}_out"]))
            return f"{name}_out"
        return h

    h = block("image", "b1", 16, 16, 4, 1)
    h = block(h, "b2", 16, 24, 4, 2)
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    fc_w, fc_b = const("fc_w", rng.standard_normal((10, 24)) * 0.2), const("fc_b", rng.standard_normal(10) * 0.1)
    nodes.append(helper.make_node("Gemm", ["flat", fc_w, fc_b], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "mobilenet_blocks",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 16, 24, 24])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="airflow-neo-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _case(directory: Path, name: str, onnx_bytes: bytes, input_name: str, shape, seed: int) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(onnx_bytes)
    archive = models.write_archive(directory, {"model.onnx": onnx_bytes})
    data = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    np.save(directory / "input.npy", data)
    return {
        "name": name,
        "dir": directory,
        "archive": archive,
        "onnx": directory / "model.onnx",
        "data_input_config": {input_name: list(shape)},
        "input_name": input_name,
        "input": data,
    }


#: (case, OutputConfig target) compiled and run in the emulator.
TARGETS = {
    "sample_cnn": {"TargetDevice": "rasp4b"},  # Cortex-A72
    "mobilenet_blocks": {"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}},  # generic ARMv8-A
    "transformer_block": {"TargetDevice": "ml_c6g"},  # Graviton2, Neoverse N1
}


def _build_cases(tmp: Path) -> dict[str, dict]:
    transformer = models.onnx_transformer(tmp / "transformer_block" / "torch")
    cases = [
        _case(tmp / "sample_cnn", "sample_cnn", samples.sample_cnn_onnx().SerializeToString(),
              samples.SAMPLE_INPUT_NAME, samples.SAMPLE_INPUT_SHAPE, 11),
        _case(tmp / "mobilenet_blocks", "mobilenet_blocks", _mobilenet_block_onnx().SerializeToString(),
              "image", (1, 16, 24, 24), 12),
        _case(tmp / "transformer_block", "transformer_block", _archive_member(transformer.archive, "model.onnx"),
              "tokens", tuple(models.TRANSFORMER_SHAPE), 13),
    ]
    return {case["name"]: case for case in cases}


def _archive_member(archive: Path, member: str) -> bytes:
    with tarfile.open(archive) as tar:
        return tar.extractfile(member).read()


def _request(case: dict, output_config: dict, compiler_options: dict | None = None) -> dict:
    out = {"S3OutputLocation": f"file://{case['dir']}/out", **output_config}
    if compiler_options:
        out["CompilerOptions"] = json.dumps(compiler_options)
    return {
        "CompilationJobName": f"arm-{case['name'].replace('_', '-')}",
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {
            "S3Uri": f"file://{case['archive']}",
            "Framework": "ONNX",
            "DataInputConfig": json.dumps(case["data_input_config"]),
        },
        "OutputConfig": out,
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }


def _ort_x86(case: dict) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(case["onnx"]), providers=["CPUExecutionProvider"])
    return session.run(None, {case["input_name"]: case["input"]})


# -- what runs in the emulator ----------------------------------------------------------------------

GUEST_TVM = r"""
import json, platform, sys, time, traceback
import numpy as np
manifest = json.load(open(sys.argv[1]))
report = {"machine": platform.machine(), "cases": {}}
started = time.monotonic()
from airflow_neo import runtime
from airflow_neo.local.errors import IncompatibleArtifactError
report["import_s"] = time.monotonic() - started
for item in manifest:
    if not item.get("artifact"):  # its compile failed: the test says so
        continue
    entry = report["cases"][item["name"]] = {}
    try:
        t0 = time.monotonic()
        model = runtime.load(item["artifact"])  # check_host=True: this CPU's family and features
        entry["load_s"] = time.monotonic() - t0
        if item.get("expect_refusal"):
            entry["error"] = "loaded, but it should have been refused"
            continue
        data = np.load(item["input"])
        t0 = time.monotonic()
        outputs = model.run({item["input_name"]: data})
        entry["first_run_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        outputs = model.run({item["input_name"]: data})
        entry["run_s"] = time.monotonic() - t0
        entry["outputs"] = []
        for i, out in enumerate(outputs):
            path = item["out_prefix"] + f"tvm_{i}.npy"
            np.save(path, out)
            entry["outputs"].append(path)
        entry["target"] = model.metadata["target"]["label"]
    except IncompatibleArtifactError as err:
        entry["refused"] = str(err)
        if not item.get("expect_refusal"):
            entry["error"] = "IncompatibleArtifactError: " + str(err)
    except Exception:
        entry["error"] = traceback.format_exc()
json.dump(report, open(sys.argv[2], "w"))
"""

GUEST_ORT = r"""
import json, platform, sys, time, traceback
import numpy as np
manifest = json.load(open(sys.argv[1]))
report = {"machine": platform.machine(), "cases": {}}
started = time.monotonic()
import onnxruntime
report["import_s"] = time.monotonic() - started
report["version"] = onnxruntime.__version__
for item in manifest:
    if item.get("expect_refusal"):
        continue
    entry = report["cases"][item["name"]] = {}
    try:
        session = onnxruntime.InferenceSession(item["onnx"], providers=["CPUExecutionProvider"])
        data = np.load(item["input"])
        t0 = time.monotonic()
        outputs = session.run(None, {item["input_name"]: data})
        entry["run_s"] = time.monotonic() - t0
        entry["outputs"] = []
        for i, out in enumerate(outputs):
            path = item["out_prefix"] + f"ort_{i}.npy"
            np.save(path, out)
            entry["outputs"].append(path)
    except Exception:
        entry["error"] = traceback.format_exc()
json.dump(report, open(sys.argv[2], "w"))
"""


def _start_guest(root: qemu.ArmRoot, code: str, manifest: Path, report: Path, work: Path) -> subprocess.Popen:
    script = work / f"{report.stem}.py"
    script.write_text(code)
    env = root.env({"TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    return subprocess.Popen(
        root.command(str(script), str(manifest), str(report)),
        env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish_guest(proc: subprocess.Popen, report: Path, timeout: float) -> dict:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"the emulated Python ran past {timeout} s\n{stdout[-2000:]}\n{stderr[-4000:]}")
    if proc.returncode != 0 or not report.is_file():
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        pytest.fail(f"the emulated Python failed ({how})\n--- stdout ---\n{stdout[-2000:]}\n--- stderr ---\n{stderr[-6000:]}")
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def emulated(arm_root, tmp_path_factory):
    """Compile every case for its ARM64 target here, run them all in the emulator, return the reports."""
    tmp = tmp_path_factory.mktemp("arm64")
    cases = _build_cases(tmp)
    manifest, compiled = [], {}
    for name, case in cases.items():
        artifact = case["dir"] / "out" / f"model-{name}.tar.gz"
        started = time.monotonic()
        try:
            metadata = compile_model(_request(case, TARGETS[name]), str(case["archive"]), str(artifact),
                                     log=lambda line: None, verify="off")  # checked below, all in one guest
        except Exception as err:  # noqa: BLE001 - reported by this model's tests; the others still run
            compiled[name] = {"error": f"compile for {TARGETS[name]} failed: {type(err).__name__}: {err}", "compile_s": 0.0}
        else:
            compiled[name] = {"metadata": metadata, "compile_s": time.monotonic() - started}
        manifest.append(
            {"name": name, "artifact": str(artifact) if "metadata" in compiled[name] else None,
             "onnx": str(case["onnx"]), "input": str(case["dir"] / "input.npy"),
             "input_name": case["input_name"], "out_prefix": str(case["dir"] / "out" / "")}
        )
    # An artifact for a CPU with SVE (Neoverse V1): the emulated CPU (Neoverse N1, no SVE in
    # its /proc/cpuinfo) must refuse it at load instead of dying on an illegal instruction.
    sve = dict(cases["sample_cnn"], name="sample_cnn_sve")
    sve_artifact = sve["dir"] / "out" / "model-sve.tar.gz"
    compile_model(
        _request(sve, {"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}}, {"mcpu": "neoverse-v1"}),
        str(sve["archive"]), str(sve_artifact), log=lambda line: None, verify="off",
    )
    manifest.append({"name": "sample_cnn_sve", "artifact": str(sve_artifact), "expect_refusal": True})
    manifest_path = tmp / "manifest.json"
    manifest_path.write_text(json.dumps(manifest))
    started = time.monotonic()
    tvm_proc = _start_guest(arm_root, GUEST_TVM, manifest_path, tmp / "report_tvm.json", tmp)
    ort_proc = _start_guest(arm_root, GUEST_ORT, manifest_path, tmp / "report_ort.json", tmp)
    tvm_report = _finish_guest(tvm_proc, tmp / "report_tvm.json", timeout=600)
    ort_report = _finish_guest(ort_proc, tmp / "report_ort.json", timeout=600)
    wall = time.monotonic() - started
    print(
        f"\nemulated: {wall:.1f} s wall; slowest runtime.load (the first imports TVM) "
        f"{max((c.get('load_s', 0.0) for c in tvm_report['cases'].values()), default=0.0):.1f} s, "
        f"onnxruntime import {ort_report['import_s']:.1f} s; compile "
        + ", ".join(f"{name} {item['compile_s']:.1f} s" for name, item in compiled.items())
    )
    return {"cases": cases, "compiled": compiled, "tvm": tvm_report, "ort": ort_report}


CASES = list(TARGETS)


def _outputs(paths: list[str]) -> list[np.ndarray]:
    return [np.load(path) for path in paths]


def _assert_close(got: list[np.ndarray], want: list[np.ndarray], what: str) -> float:
    assert len(got) == len(want), what
    worst = 0.0
    for g, w in zip(got, want):
        w = np.asarray(w).reshape(g.shape)
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=RTOL * scale, err_msg=what)
        worst = max(worst, float(np.abs(g - w).max()))
    return worst


def test_the_guest_is_aarch64(emulated):
    assert emulated["tvm"]["machine"] == "aarch64"
    assert emulated["ort"]["machine"] == "aarch64"


@pytest.mark.parametrize("name", CASES)
def test_tvm_artifact_under_qemu_matches_onnxruntime_x86(emulated, name):
    assert "error" not in emulated["compiled"][name], emulated["compiled"][name]["error"]
    case, entry = emulated["cases"][name], emulated["tvm"]["cases"][name]
    assert "error" not in entry, entry["error"]
    metadata = emulated["compiled"][name]["metadata"]
    assert metadata["target"]["machine"] == "aarch64" and metadata["target"]["cross_compiled"] is True
    worst = _assert_close(_outputs(entry["outputs"]), _ort_x86(case), f"{name}: TVM aarch64 (qemu) vs onnxruntime x86-64")
    print(f"{name} ({entry['target']}): max abs diff {worst:.2e}; emulated run {entry['run_s'] * 1000:.0f} ms")


@pytest.mark.parametrize("name", CASES)
def test_onnxruntime_aarch64_under_qemu_runs_the_same_onnx(emulated, name):
    case, entry = emulated["cases"][name], emulated["ort"]["cases"][name]
    assert "error" not in entry, entry["error"]
    worst = _assert_close(_outputs(entry["outputs"]), _ort_x86(case), f"{name}: onnxruntime aarch64 (qemu) vs x86-64")
    print(f"{name}: onnxruntime {emulated['ort']['version']} aarch64 vs x86-64 max abs diff {worst:.2e}")


def test_runtime_refuses_an_artifact_for_cpu_features_the_emulated_cpu_lacks(emulated):
    entry = emulated["tvm"]["cases"]["sample_cnn_sve"]
    assert "error" not in entry, entry["error"]
    assert "sve" in entry["refused"] and "recompile for this CPU" in entry["refused"]


# -- the helper says why it cannot emulate (no emulator needed) -----------------------------------


def test_find_root_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-aarch64 on PATH
    with pytest.raises(qemu.EmulationUnavailable, match="qemu-aarch64 is not installed .*qemu-user"):
        qemu.find_root(tmp_path)
    fake_qemu = tmp_path / "qemu-aarch64"
    fake_qemu.write_text("#!/bin/sh\nexit 1\n")
    fake_qemu.chmod(0o755)
    log = tmp_path / "arm_root.log"
    log.write_text("arm_root: ERROR: apt-get update (arm64) failed\n")
    monkeypatch.setenv(qemu.LOG_ENV, str(log))
    with pytest.raises(qemu.EmulationUnavailable, match=r"no aarch64 root .*scripts/arm_root.sh.*apt-get update \(arm64\) failed"):
        qemu.find_root(tmp_path / "missing")
    (tmp_path / qemu.STAMP_NAME).write_text("format=1\n")
    with pytest.raises(qemu.EmulationUnavailable, match="has no usr/bin/python3.X"):
        qemu.find_root(tmp_path)
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "usr" / "bin" / "python3.11").write_text("")
    (tmp_path / "usr" / "bin" / "python3.11-config").write_text("")
    root = qemu.find_root(tmp_path)
    assert root.python.name == "python3.11" and root.cpu == qemu.DEFAULT_CPU
    assert root.command("-c", "pass")[:4] == [str(fake_qemu), "-L", str(tmp_path), "-cpu"]


def test_guest_env_drops_what_would_break_the_guest(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libfoo.so")
    monkeypatch.setenv("PYTHONHOME", "/opt/python")
    monkeypatch.setenv("VIRTUAL_ENV", "/work/.venv")
    env = qemu.ArmRoot(qemu.REPO, qemu.REPO / "python3.11", "qemu-aarch64").env({"TVM_NUM_THREADS": "1"}, pythonpath=["/x"])
    assert not {"LD_PRELOAD", "PYTHONHOME", "VIRTUAL_ENV"} & set(env)
    assert env["PYTHONPATH"] == f"{qemu.REPO}{os.pathsep}/x" and env["TVM_NUM_THREADS"] == "1"
