"""``precision_mode`` FP16 (:mod:`airflow_neo.local.precision`) through the real compile path.

A small ONNX CNN (:func:`tests.local.models.onnx_cnn`, conv-relu-pool-fc) is compiled for
TargetDevice ``ml_c6g`` (Graviton2, Neoverse N1: ``fullfp16``), cross-linked for aarch64; the
lowered kernels are inspected (float16 operands, float32 accumulation, float16 elementwise
arithmetic) and the artifact is verified under the gate against onnxruntime (float32) under QEMU
emulation, within the FP16 tolerance. Without the aarch64 root the emulated test skips saying why,
except under ``CI=true`` where it fails (as in :mod:`tests.local.test_emulation`). Refusals
(CPUs without float16 arithmetic, bad values, XGBOOST) and FP32's no-op are checked without
building where they can be.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from airflow_neo.local import emulation, precision
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.errors import ModelInputError, UnsupportedTargetError
from airflow_neo.local.targets import resolve_target
from tests.local import models

pytestmark = pytest.mark.timeout(600)

FP16 = {"precision_mode": "FP16"}


def _fail_or_skip(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"ARM64 emulation is required under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return models.onnx_cnn(tmp_path_factory.mktemp("cnn"))


def _compile(case, out: Path, options: dict | None, device: str = "ml_c6g", **kwargs) -> tuple[Path, dict, list]:
    lines: list[str] = []
    request = models.make_request(case, target_device=device, compiler_options=options, output_dir=out)
    artifact = out / "model.tar.gz"
    metadata = compile_model(request, str(case.archive), str(artifact), log=lines.append, **kwargs)
    return artifact, metadata, lines


def _plan(device: str, options: dict) -> precision.PrecisionPlan:
    target = resolve_target({"TargetDevice": device}, {k: v for k, v in options.items() if k in ("mcpu", "mattr")})
    return precision.precision_for(options, target)


# -- what the kernels compute in ------------------------------------------------------------------


def _kernel_dtypes(func) -> tuple[Counter, Counter]:
    """(float dtypes of the tensor loads, (arithmetic node, dtype) counts) of a TIR PrimFunc."""
    import tvm_ffi
    from tvm.ir import prim
    from tvm.ir.expr import TensorLoad

    loads, arithmetic = Counter(), Counter()
    tvm_ffi.structural_walk(func.body, (TensorLoad, lambda node: loads.update([str(node.ty.dtype)])), order="post")
    tvm_ffi.structural_walk(
        func.body,
        ((prim.Add, prim.Mul, prim.Max), lambda node: arithmetic.update([(type(node).__name__, str(node.ty.dtype))])),
        order="post",
    )
    return loads, arithmetic


def test_fp16_kernels_read_float16_accumulate_float32_and_compute_elementwise_in_float16(cnn, tmp_path):
    import tvm

    from airflow_neo.local.frontends import IMPORTERS
    from airflow_neo.local.schedules.lowering import lower

    with tarfile.open(cnn.archive) as tar:
        (tmp_path / "model.onnx").write_bytes(tar.extractfile("model.onnx").read())
    target = resolve_target({"TargetDevice": "ml_c6g"}, {})
    plan = precision.precision_for(FP16, target)
    imported = IMPORTERS["ONNX"](tmp_path / "model.onnx", cnn.data_input_config, None, lambda line: None)
    report = precision.apply_to_imported(imported, plan, target, lambda line: None)
    lowered = lower(imported.mod, tvm.target.Target(target.target))
    kernels = {gv.name_hint: func for gv, func in lowered.functions_items() if isinstance(func, tvm.tirx.PrimFunc)}

    [conv] = [name for name in kernels if "conv2d" in name]
    loads, arithmetic = _kernel_dtypes(kernels[conv])
    assert set(loads) == {"float16", "float32"} and loads["float16"] >= 2, (conv, loads)  # data, weights: float16
    assert arithmetic[("Mul", "float32")] >= 1 and arithmetic[("Mul", "float16")] == 0, arithmetic  # float32 accumulation
    assert arithmetic[("Add", "float16")] >= 1 and arithmetic[("Max", "float16")] >= 1, arithmetic  # bias, relu in float16
    [pool] = [name for name in kernels if "pool" in name]
    assert _kernel_dtypes(kernels[pool])[1][("Max", "float16")] >= 1
    assert report["mode"] == "FP16" and report["accumulate"] == "float32" and report["feature"] == "fullfp16"
    assert report["quantized"] is False
    assert {"nn.conv2d", "matmul", "nn.relu", "nn.max_pool2d"} <= set(report["fp16_ops"]), report
    assert report["casts"]["weights"] >= 2 and report["casts"]["runtime"] >= 2  # input in, output back to float32


# -- through compile_model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arm_root():
    try:
        return emulation.find_root()
    except emulation.EmulationUnavailable as err:
        _fail_or_skip(str(err))


def test_fp16_artifact_for_ml_c6g_matches_onnxruntime_under_emulation(arm_root, cnn, tmp_path):
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        _fail_or_skip("aarch64-linux-gnu-gcc is not installed")
    _, metadata, lines = _compile(cnn, tmp_path, {"precision_mode": "fp16", "dtype": "float16"}, verify="gate")
    verification = metadata["verification"]
    assert verification["passed"] is True and verification["emulated"].startswith("qemu-aarch64"), verification
    assert verification["rtol"] == precision.FP16_RTOL
    [output] = verification["outputs"]
    # float16 arithmetic: beyond float32's roundoff (the FP32 build of this CNN is ~1e-6), within the FP16 tolerance
    assert 1e-5 < output["max_abs_diff"] / output["reference_scale"] <= precision.FP16_RTOL, output
    assert output["dtype"] == "float32"  # outputs keep the model's dtype
    # dtype float16: the artifact takes float16 inputs (the reference gets the same values as float32)
    assert [spec["dtype"] for spec in metadata["inputs"]] == ["float16"]
    reported = metadata["precision"]
    assert reported["mode"] == "FP16" and reported["inputs"] == ["input0"] and reported["feature"] == "fullfp16"
    assert reported["verify_rtol"] == precision.FP16_RTOL and "FP16 default" in reported["verify_rtol_source"]
    assert any(line.startswith("precision FP16 for neoverse-n1 (fullfp16): float16 ops") for line in lines), lines


def test_fp32_is_the_same_build_as_no_option(cnn, tmp_path):
    artifacts = []
    for name, options in (("none", None), ("fp32", {"precision_mode": "FP32"})):
        artifact, metadata, _ = _compile(cnn, tmp_path / name, options, device="ml_c5", verify="off")
        assert metadata["precision"] == {"mode": "FP32"} and metadata["inputs"][0]["dtype"] == "float32"
        with tarfile.open(artifact) as tar:
            artifacts.append(tar.extractfile("model.so").read())
    assert artifacts[0] == artifacts[1]


def test_fp32_apply_precision_returns_the_module_itself():
    marker = object()
    assert precision.apply_precision(marker, precision.PrecisionPlan(), None) == (marker, {"mode": "FP32"})


# -- which targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device, cpu", [("ml_c5", "skylake-avx512"), ("ml_m4", "haswell"), ("rasp4b", "cortex-a72")])
def test_fp16_is_refused_for_cpus_without_float16_arithmetic(device, cpu):
    feature = "fullfp16" if device == "rasp4b" else "avx512fp16"
    with pytest.raises(UnsupportedTargetError) as raised:
        _plan(device, FP16)
    message = str(raised.value)
    assert f"TargetDevice {device}" in message and f"mcpu {cpu}" in message and repr(feature) in message, message
    assert "FP32" in message
    if feature == "fullfp16":
        assert "mattr ['+fullfp16']" in message and "ml_c6g" in message and "qcs605" in message, message
    else:
        assert "sapphirerapids" in message, message


def test_compile_model_refuses_fp16_before_building(cnn, tmp_path):
    with pytest.raises(UnsupportedTargetError, match="precision_mode FP16 needs float16 arithmetic"):
        _compile(cnn, tmp_path, FP16, device="ml_c5", verify="off")
    assert not (tmp_path / "model.tar.gz").exists()


@pytest.mark.parametrize("device, options, feature", [
    ("ml_c6g", {}, "fullfp16"),
    ("ml_m6g", {}, "fullfp16"),
    ("qcs605", {}, "fullfp16"),
    ("rasp4b", {"mattr": ["+fullfp16"]}, "fullfp16"),
    ("ml_c5", {"mcpu": "sapphirerapids"}, "avx512fp16"),
])
def test_fp16_is_planned_where_the_cpu_has_float16_arithmetic(device, options, feature):
    plan = _plan(device, {**FP16, **options})
    assert plan.fp16 and plan.feature == feature and plan.accumulate == "float32"
    assert plan.verify_rtol(None) == precision.FP16_RTOL and plan.verify_rtol(0.05) == 0.05


def test_gpu_targets_need_sm_53():
    def gpu(arch):
        return SimpleNamespace(target={"kind": "cuda", "arch": arch}, source="TargetDevice gpu")

    assert precision.precision_for(FP16, gpu("sm_75")).feature == "cuda sm_75"
    with pytest.raises(UnsupportedTargetError, match=r"sm_37.*from sm_53"):
        precision.precision_for(FP16, gpu("sm_37"))


# -- the option's values ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["FP8", "half", "", 16, ["FP16"]])
def test_bad_precision_mode_values_are_refused(value):
    with pytest.raises(ModelInputError) as raised:
        _plan("ml_c6g", {"precision_mode": value})
    message = str(raised.value)
    assert "precision_mode" in message and repr(value) in message and "'FP32', 'FP16'" in message, message


@pytest.mark.parametrize("value, mode", [("fp16", "FP16"), ("Fp16", "FP16"), ("fp32", "FP32"), ("FP32", "FP32")])
def test_precision_mode_is_case_insensitive(value, mode):
    assert _plan("ml_c6g", {"precision_mode": value}).mode == mode


def test_fp16_does_not_apply_to_xgboost():
    target = resolve_target({"TargetDevice": "ml_c6g"}, {})
    with pytest.raises(ModelInputError, match="XGBOOST"):
        precision.precision_for(FP16, target, "XGBOOST")
    assert precision.precision_for({"precision_mode": "FP32"}, target, "XGBOOST").mode == "FP32"


@pytest.mark.parametrize("dtype, importer_gets, fp16_inputs", [
    ("float16", None, None),
    ({"a": "float16", "b": "int64"}, {"b": "int64"}, ("a",)),
    ("float32", "float32", ()),
    (None, None, ()),
])
def test_float16_dtype_entries_are_taken_from_the_importer_under_fp16(dtype, importer_gets, fp16_inputs):
    plan = _plan("ml_c6g", {**FP16, **({"dtype": dtype} if dtype else {})})
    assert plan.import_dtype(dtype) == importer_gets and plan.fp16_inputs == fp16_inputs
    assert precision.PrecisionPlan().import_dtype(dtype) == dtype  # FP32: the importer sees the option as given


def test_dtype_float16_for_a_non_float32_input_is_refused():
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    builder = relax.BlockBuilder()
    tokens = relax.Var("tokens", R.Tensor((1, 4), "int64"))
    with builder.function("main", [tokens]):
        with builder.dataflow():
            out = builder.emit_output(relax.op.astype(tokens, "float32"))
        builder.emit_func_output(out)
    plan = precision.PrecisionPlan("FP16", feature="fullfp16", fp16_inputs=("tokens",))
    with pytest.raises(ModelInputError, match=r"dtype asks float16 for input 'tokens'.*int64"):
        precision.apply_precision(builder.get(), plan, tvm.target.Target({"kind": "llvm"}), lambda line: None)


# -- graphs ToMixedPrecision cannot type ----------------------------------------------------------------


def test_kernels_written_as_tir_and_scalar_clips_stay_float32_between_float16_ops(tmp_path):
    """Two MobileNetV2 blocks: ONNX Clip with tensor bounds (ReLU6) imports as ``call_tir`` kernels,
    which ToMixedPrecision cannot type; they run in float32 between float16 convolutions. Built for
    this x86-64 host (the plan made directly: the product refuses FP16 for a CPU without float16
    arithmetic; LLVM then computes each float16 op in float32 and rounds it, the same values) and
    compared with onnxruntime."""
    import onnxruntime
    import tvm
    from tvm import relax

    from airflow_neo.local import compiler
    from airflow_neo.local.frontends import IMPORTERS
    from tests.local.test_arm_emulation import _mobilenet_block_onnx

    (tmp_path / "model.onnx").write_bytes(_mobilenet_block_onnx().SerializeToString())
    imported = IMPORTERS["ONNX"](tmp_path / "model.onnx", {"image": [1, 16, 24, 24]}, None, lambda line: None)
    plan = precision.PrecisionPlan("FP16", feature="fullfp16")
    imported.mod, report = precision.apply_precision(imported.mod, plan, None, lambda line: None)
    assert relax.analysis.check_well_formed(imported.mod)
    assert report["fp32_ops"].get("call_tir", 0) == 8 and report["fp16_ops"]["nn.conv2d"] == 6, report
    assert not [name for name in map(str, imported.mod.functions) if "fp32_" in name]  # the wrappers are gone

    executable = compiler._build(imported, resolve_target({"TargetDevice": "ml_c5"}, {}), None, lambda line: None)[0]
    data = np.random.default_rng(3).standard_normal((1, 16, 24, 24)).astype(np.float32)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    [want] = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"image": data})
    error = float(np.abs(got - want).max() / np.abs(want).max())
    assert 1e-5 < error <= precision.FP16_RTOL, error


def test_quantized_graphs_get_the_quantized_tolerance_under_fp16(tmp_path):
    """A QDQ graph (QuantizeLinear/DequantizeLinear around a Conv) holds int8 tensors: its FP16
    verification keeps the quantized default (a rounding tie one step apart outweighs float16)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from airflow_neo.local.frontends import IMPORTERS
    from airflow_neo.local.verify import QUANTIZED_RTOL

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.float32(0.05), "scale"), numpy_helper.from_array(np.int8(0), "zero"),
             numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"]),
             helper.make_node("Conv", ["dq", "w"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, tmp_path / "model.onnx")
    imported = IMPORTERS["ONNX"](tmp_path / "model.onnx", None, None, lambda line: None)
    plan = precision.PrecisionPlan("FP16", feature="fullfp16")
    _, report = precision.apply_precision(imported.mod, plan, None, lambda line: None)
    assert report["quantized"] is True and "nn.conv2d" in report["fp16_ops"], report
    assert plan.verify_rtol(None, report) == max(precision.FP16_RTOL, QUANTIZED_RTOL)
    assert "quantized" in plan.with_tolerance(report, None)["verify_rtol_source"]
    assert plan.verify_rtol(0.002, report) == 0.002


def test_fp16_with_a_range_batch_under_emulation(arm_root, tmp_path):
    """FP16 and flexible shapes together: the mixed-precision pass keeps the symbolic batch and its
    bounds, and the artifact passes the gate at the lower bound, midpoint and upper bound."""
    from tests.local.test_flexible_shapes import _cnn_bytes

    if shutil.which("aarch64-linux-gnu-gcc") is None:
        _fail_or_skip("aarch64-linux-gnu-gcc is not installed")
    archive = models.write_archive(tmp_path, {"model.onnx": _cnn_bytes()})
    case = models.ModelCase(archive, None, framework="ONNX", data_input_config={"x": ["1..4", 3, 16, 16]}, inputs={},
                            model_file="model.onnx")
    request = models.make_request(case, target_device="ml_c6g", compiler_options={"precision_mode": "FP16"})
    metadata = compile_model(request, str(archive), str(tmp_path / "a.tar.gz"), log=lambda _: None)
    verification = metadata["verification"]
    assert verification["passed"] is True and verification["emulated"].startswith("qemu-aarch64")
    assert [item["inputs"]["x"][0] for item in verification["shapes"]] == [1, 2, 4]
    assert all(1e-5 < item["max_abs_diff"] <= item["tolerance"] for item in verification["shapes"])
    assert metadata["inputs"][0]["ranges"] == {"0": [1, 4]} and metadata["precision"]["mode"] == "FP16"


def test_fp16_keeps_packed_calls_of_run_time_shapes_in_float32():
    """Graphs whose sizes come from tensor values at run time (``tensor_to_shape``: a ``.item()`` size
    in a torch.export program, as the ViT TorchScript route has) reach ``ToMixedPrecision`` as a
    ``call_pure_packed``, which it cannot type ("Expected TensorType, but got R.Shape"): such packed
    calls stay float32 like ``call_tir`` kernels, and the rest of the model still runs in float16."""
    import tvm
    from tvm.script import relax as R
    from tvm.script import tirx as T

    @tvm.script.ir_module
    class RunTimeShape:
        @R.function
        def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 8), "float32"), n: R.Tensor((1,), "int64")):
            k = T.int64()
            with R.dataflow():
                size = R.tensor_to_shape(n)
                _ = R.match_cast(size, R.Shape([k]))
                product = R.matmul(x, w)
                y = R.reshape(product, R.shape([32 // k, k]))
                R.output(y)
            return y

    mod, report = precision.apply_precision(RunTimeShape, precision.PrecisionPlan("FP16", "test"), log=lambda _: None)
    assert report["fp16_ops"] == {"matmul": 1, "reshape": 1}
    assert "tensor_to_shape" in mod.script(show_meta=False)
