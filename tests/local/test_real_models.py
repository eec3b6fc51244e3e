"""Real architectures compile through the local backend and match their reference (the CI subset).

One member of each class of graphs the zoo (:mod:`tests.local.zoo`) covers, in a small configuration
of the same architecture: a transformer, a CNN whose export computes shapes at run time, a
quantized model, a recurrent model and a detection model. ``scripts/real_models.py`` runs the
whole zoo at full size and writes ``docs/real_models.md``.

Two classes run here as a cheaper member than the zoo's row (:data:`CI_STANDINS`): window attention
as a one-stage torchvision ``SwinTransformer`` (shifted windows, relative position bias, a pad to the
window multiple computed by the graph: the classes of ``swin_t``, which takes a minute to compile
even at 64x64), and the QDQ int8 class as a torchvision ResNet with one BasicBlock per stage (the
same QuantizeLinear/DequantizeLinear pairs around conv, add, relu and gemm as ``resnet18_qdq``).
The recurrent member (``lstm_forecaster``) runs through ``scripts/real_models.py`` in its own
process (:func:`test_script_runs_an_architecture_in_its_own_process`), which asserts the same
"matched within the tolerance".

The models need transformers / torchvision / timm (``scripts/setup.sh`` installs them); without
them these tests skip, except under ``CI=true`` (``test_onnx_normalize.test_ci_has_the_real_model_packages``
fails there instead).
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.local import zoo

CI_SUBSET = ["t5_encoder", "swin_window_attention", "resnet_qdq_int8", "lstm_forecaster", "detr"]
#: run by test_script_runs_an_architecture_in_its_own_process (a child process of the script), not twice
SCRIPT_CASE = "lstm_forecaster"


def _one_stage_swin(small: bool) -> zoo.Built:
    """torchvision's SwinTransformer with one stage of two blocks (the second shifted), 4x4 windows
    over a 10x10 patch grid: the pad to 12x12 and the shift are computed in the exported graph."""
    torch, rng = zoo._seeded()
    zoo.import_torchvision()
    from torchvision.models.swin_transformer import SwinTransformer

    module = SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2], num_heads=[2], window_size=[4, 4],
                             num_classes=10).eval()
    return zoo._as_onnx(torch, module, zoo._image(rng, 40))


def _resnet_qdq(small: bool) -> zoo.Built:
    """A torchvision ResNet with one BasicBlock per stage, statically quantized to QDQ by onnxruntime."""
    torch, rng = zoo._seeded()
    zoo.import_torchvision()
    from torchvision.models.resnet import BasicBlock, ResNet

    module = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10).eval()
    zoo._randomize_batch_norms(torch, module)
    inputs = zoo._image(rng, 32)
    data = zoo._quantize_static(zoo.onnx_export(torch, module, inputs), inputs, "qdq", rng)
    return zoo._onnx_built(data, inputs, literal=True)


#: cheaper members of a zoo row's classes (see the module docstring); the zoo rows run in scripts/real_models.py
CI_STANDINS = {
    "swin_window_attention": zoo.Architecture(
        "swin_window_attention", "Swin, one stage (torchvision SwinTransformer)", "vision", "ONNX", _one_stage_swin,
        exercises=zoo.ZOO["swin_t"].exercises),
    "resnet_qdq_int8": zoo.Architecture(
        "resnet_qdq_int8", "ResNet, one block per stage, int8 QDQ (onnxruntime.quantization)", "quantized", "ONNX",
        _resnet_qdq, tolerance=zoo.ZOO["resnet18_qdq"].tolerance, exercises=zoo.ZOO["resnet18_qdq"].exercises),
}


def _arch(name: str) -> zoo.Architecture:
    return CI_STANDINS.get(name) or zoo.ZOO[name]


def _require(*packages: str) -> None:
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup.sh installs them)")


@pytest.mark.parametrize("name", [name for name in CI_SUBSET if name != SCRIPT_CASE])
def test_architecture_compiles_and_matches_its_reference(tmp_path, name):
    _require("torch", "onnxruntime", "torchvision", "transformers")
    lines: list[str] = []
    result = zoo.check(_arch(name), tmp_path, small=True, log=lines.append)
    assert result.status == "matched", f"{result.status}: {result.reason}\n" + "\n".join(lines[-20:])
    assert result.max_error is not None and result.max_error <= _arch(name).tolerance


def test_subset_covers_every_class_the_issue_names():
    families = {_arch(name).family for name in CI_SUBSET}
    assert {"text", "vision", "quantized", "recurrent", "detection"} <= families
    assert SCRIPT_CASE in CI_SUBSET and SCRIPT_CASE in zoo.ZOO  # the script test runs it
    for standin in CI_STANDINS.values():  # a stand-in covers the classes of a zoo row
        assert any(row.exercises == standin.exercises and row.family == standin.family for row in zoo.ZOO.values())


def test_zoo_is_broad_and_every_row_says_what_it_exercises():
    families = [arch.family for arch in zoo.ZOO.values()]
    assert len(zoo.ZOO) >= 12
    assert {"text", "vision", "detection", "quantized", "recurrent"} <= set(families)
    assert {arch.route for arch in zoo.ZOO.values()} >= {"ONNX", "TorchScript", "torch.export (.pt2)"}


def test_compare_measures_relative_error_and_rejects_shape_changes():
    import numpy as np

    want = [np.array([1.0, -4.0]), np.zeros((0, 3))]
    assert zoo.compare([np.array([1.0, -3.0]), np.zeros((0, 3))], want) == pytest.approx(0.25)
    with pytest.raises(AssertionError, match=r"output 0 has shape \[3\], the reference \[2\]"):
        zoo.compare([np.zeros(3), np.zeros((0, 3))], want)
    with pytest.raises(AssertionError, match="1 outputs, the reference has 2"):
        zoo.compare([np.zeros(2)], want)


def test_a_failed_compile_is_a_result_with_the_failure_reason(tmp_path):
    """A model the compiler refuses becomes a ``failed`` row carrying the FailureReason, not an exception."""
    _require("onnxruntime")
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.invalid")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.invalid", 1)])
    import numpy as np

    x = np.array([1.0, 2.0], np.float32)
    built = zoo.Built({"model.onnx": model.SerializeToString()}, "model.onnx", "ONNX", {"x": x}, [x], "onnxruntime")
    arch = zoo.Architecture("unknown_op", "unknown op", "test", "ONNX", lambda small: built)
    result = zoo.check(arch, tmp_path)
    assert result.status == "failed" and result.compile_s is not None
    assert "NoSuchOp" in result.reason, result.reason


def test_a_constant_reference_is_refused(tmp_path):
    """A model whose reference outputs are all equal (e.g. a zero-initialized head) would match anything."""
    import numpy as np

    built = zoo.Built({"model.onnx": b""}, "model.onnx", "ONNX", {"x": np.ones(2, np.float32)},
                      [np.zeros((1, 10), np.float32)], "onnxruntime")
    result = zoo.check(zoo.Architecture("flat", "flat", "test", "ONNX", lambda small: built), tmp_path)
    assert result.status == "unbuildable" and "constant" in result.reason


def _script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "real_models.py"
    spec = importlib.util.spec_from_file_location("real_models_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_writes_the_table_between_the_markers_of_its_page(tmp_path, monkeypatch):
    script = _script()
    page = tmp_path / "real_models.md"
    page.write_text(f"# Real models\n\nintro\n\n{script.BEGIN_MARK}\nold table\n{script.END_MARK}\n\nafter\n")
    monkeypatch.setattr(script, "DOC", page)
    results = [
        zoo.Result("bert", "matched", compile_s=12.3, max_error=1.7e-6, route="ONNX"),
        zoo.Result("ssdlite", "failed", "ServerError: import failed at node '/inner/ReduceMin' | x", 9.1, route="ONNX"),
    ]
    script.write_doc(results, {"date": "2026-12-02", "small": False, "tvm": "0.27", "torch": "2.13", "onnxruntime": "1.23"})
    text = page.read_text()
    assert "old table" not in text and text.startswith("# Real models\n\nintro") and text.endswith("after\n")
    assert "2 architectures tried, 1 compiled, 1 matched their reference (50%)." in text
    assert "| BERT-base (transformers) | text | ONNX | matched | 12 | 1.7e-06 |  |" in text
    assert "| failed | 9 | - | ServerError: import failed at node '/inner/ReduceMin' \\| x |" in text


def test_script_runs_an_architecture_in_its_own_process(tmp_path):
    """The script's path end to end for one small architecture: a child process, its result, the table."""
    import subprocess
    import sys
    from pathlib import Path

    _require("torch", "onnxruntime")
    script = Path(__file__).resolve().parents[2] / "scripts" / "real_models.py"
    proc = subprocess.run([sys.executable, str(script), "--only", SCRIPT_CASE, "--small", "--no-write"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 architectures tried, 1 compiled, 1 matched their reference (100%)." in proc.stdout
    assert "| 2-layer LSTM forecaster | recurrent | ONNX | matched |" in proc.stdout
