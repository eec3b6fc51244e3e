"""The PyTorch import routes (airflow_neo.local.torch_import, torch_rewrites), with real models.

* TorchScript calling ``aten::diff``, which the legacy ONNX exporter lacks: the ``torch.export`` route;
* TorchScript recorded with the eval fast paths of ``nn.TransformerEncoderLayer`` and
  ``nn.MultiheadAttention`` (a trace under ``no_grad``), which the legacy ONNX exporter cannot
  take: imported through the ``torch.export`` route with the fast-path decompositions, compiled and
  compared with torch (a ``nn.TransformerEncoder`` and torchvision's VisionTransformer);
* GPT-2 (transformers) as a ``.pt2`` program, whose empty cache tensors TVM's ``concat`` refuses;
* operators of other packages: torchvision's (registered before ``torch.jit.load``), torchaudio's
  and an unknown namespace's (named with their package, never the state_dict advice);
* a model no route imports: Neo's OperatorNotImplemented naming the node, and each route's failure.

Tests that need torchvision or transformers skip without them, except under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from airflow_neo import runtime
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.errors import UnsupportedOperatorsError, failure_reason
from tests.local import models

torch = pytest.importorskip("torch")

LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}


def _require(package: str):
    """Import ``package``; skip without it, except under CI=true (CI installs it)."""
    if importlib.util.find_spec(package) is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must install {package} (scripts/setup.sh)")
        pytest.skip(f"{package} is not installed")
    if package in ("torchvision", "transformers", "timm"):
        from airflow_neo.local.torch_import import register_torchvision_ops

        register_torchvision_ops()  # these packages import torchvision when it is installed
    return importlib.import_module(package)


def _compile(case, tmp_path, **request_kwargs):
    request = models.make_request(case, target_platform=LINUX_X86_64, **request_kwargs)
    lines: list[str] = []
    artifact = tmp_path / "artifact" / "model-compiled.tar.gz"
    metadata = compile_model(request, str(case.archive), str(artifact), log=lines.append)
    return artifact, metadata, lines


def _compare(case, artifact):
    got = runtime.load(artifact).run(case.inputs)
    want = case.reference(case.inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w).reshape(g.shape), rtol=case.rtol, atol=case.atol)


def _torchscript_case(directory, module, inputs: dict, *, script: bool = False, rtol=1e-4, atol=1e-5):
    """``module`` traced (or scripted) under no_grad, as Neo users save it, in ``model.pth``."""
    tensors = tuple(torch.from_numpy(value) for value in inputs.values())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        saved = torch.jit.script(module) if script else torch.jit.trace(module, tensors)
        outs = module(*tensors)
    want = [o.numpy() for o in (outs if isinstance(outs, (list, tuple)) else [outs])]
    buffer = io.BytesIO()
    torch.jit.save(saved, buffer)
    return models.ModelCase(
        models.write_archive(directory, {"model.pth": buffer.getvalue()}),
        lambda feed: want,
        framework="PYTORCH",
        data_input_config=[list(value.shape) for value in inputs.values()],
        inputs={f"input{i}": value for i, value in enumerate(inputs.values())},
        model_file="model.pth",
        rtol=rtol,
        atol=atol,
    )


def _assert_route(metadata, route: str, failed: list[str]):
    versions = metadata["versions"]
    assert versions["torch_route"] == route
    assert [item["route"] for item in versions["torch_routes_failed"]] == failed


# -- fused eval fast paths (TorchScript) ----------------------------------------------------------


def test_fast_path_decompositions_match_the_fused_kernels():
    from airflow_neo.local.torch_rewrites import _attention, _encoder_layer

    torch.manual_seed(models.SEED)
    x, kv = torch.randn(2, 8, 32), torch.randn(2, 8, 32)
    padding = torch.zeros(2, 8, dtype=torch.bool)
    padding[:, 5:] = True
    causal = torch.triu(torch.ones(8, 8, dtype=torch.bool), 1)
    with torch.no_grad():
        mha = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
        weights = (32, 4, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias)
        for kwargs in [{}, {"average_attn_weights": False}, {"mask": padding, "mask_type": 1},
                       {"mask": causal, "mask_type": 0, "need_weights": False}]:
            want = torch.ops.aten._native_multi_head_attention(x, kv, kv, *weights, **kwargs)
            got = _attention(x, kv, kv, *weights, **kwargs)
            torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
            if kwargs.get("need_weights", True):
                torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
        for norm_first, activation in [(False, "relu"), (True, "gelu")]:
            layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, norm_first=norm_first,
                                                     activation=activation).eval()
            attn = layer.self_attn
            got = _encoder_layer(
                x, 32, 4, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight, attn.out_proj.bias,
                activation == "gelu", norm_first, layer.norm1.eps, layer.norm1.weight, layer.norm1.bias,
                layer.norm2.weight, layer.norm2.bias, layer.linear1.weight, layer.linear1.bias,
                layer.linear2.weight, layer.linear2.bias,
            )
            torch.testing.assert_close(got, layer(x), rtol=1e-5, atol=1e-5)


def test_torchscript_transformer_encoder_fast_path(tmp_path):
    """nn.TransformerEncoder traced in eval under no_grad records aten::_transformer_encoder_layer_fwd."""
    torch.manual_seed(models.SEED)
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    module = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    case = _torchscript_case(tmp_path / "model", module, {"x": models._randn([1, 8, 32])})
    artifact, metadata, lines = _compile(case, tmp_path)
    _compare(case, artifact)
    _assert_route(metadata, "exported-program-rewritten", ["onnx-legacy", "exported-program"])
    assert "_transformer_encoder_layer_fwd" in metadata["versions"]["torch_routes_failed"][0]["error"]
    assert metadata["versions"]["torch_rewrites"]["fused_ops_decomposed"] == ["aten._transformer_encoder_layer_fwd.default"]
    assert any(line.startswith("TorchScript import route onnx-legacy failed (") for line in lines), lines
    assert "TorchScript imported by route exported-program-rewritten" in lines


def test_torchscript_vision_transformer_fast_path(tmp_path):
    """torchvision's VisionTransformer (nn.MultiheadAttention) records aten::_native_multi_head_attention."""
    torchvision = _require("torchvision")
    torch.manual_seed(models.SEED)
    module = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()
    case = _torchscript_case(tmp_path / "model", module, {"x": models._randn([1, 3, 32, 32])})
    artifact, metadata, _ = _compile(case, tmp_path)
    _compare(case, artifact)
    _assert_route(metadata, "exported-program-rewritten", ["onnx-legacy", "exported-program"])
    assert metadata["versions"]["torch_rewrites"]["fused_ops_decomposed"] == ["aten._native_multi_head_attention.default"]


def test_torchscript_op_without_an_onnx_symbolic(tmp_path):
    """aten::diff has no legacy ONNX symbolic; the exported-program route takes it as given."""

    class Differences(torch.nn.Module):
        def forward(self, x):
            return torch.diff(x, dim=-1) * 2

    case = _torchscript_case(tmp_path / "model", Differences(), {"x": models._randn([2, 8])})
    artifact, metadata, _ = _compile(case, tmp_path)
    _compare(case, artifact)
    _assert_route(metadata, "exported-program", ["onnx-legacy"])
    assert "aten::diff" in metadata["versions"]["torch_routes_failed"][0]["error"]


def test_torchscript_that_the_legacy_exporter_takes_keeps_the_onnx_route(tmp_path):
    case = models.torchscript_cnn(tmp_path / "model")
    artifact, metadata, _ = _compile(case, tmp_path)
    _assert_route(metadata, "onnx-legacy", [])
    assert metadata["versions"]["onnx_normalized"]["applied"] is True


# -- torch.export programs --------------------------------------------------------------------------


def test_gpt2_pt2(tmp_path):
    """GPT-2's cache starts as torch.tensor([]) concatenated with 4-D keys: dropped for TVM's concat."""
    transformers = _require("transformers")
    torch.manual_seed(models.SEED)
    config = transformers.GPT2Config(n_embd=64, n_layer=1, n_head=4, n_positions=32, vocab_size=1000,
                                     bos_token_id=0, eos_token_id=0)
    inner = transformers.GPT2Model(config).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids).last_hidden_state

    module = LastHidden().eval()
    ids = np.random.default_rng(models.SEED).integers(0, 1000, (1, 16)).astype(np.int64)
    with torch.no_grad():
        program = torch.export.export(module, (torch.from_numpy(ids),))
        want = module(torch.from_numpy(ids)).numpy()
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    case = models.ModelCase(
        models.write_archive(tmp_path / "model", {"model.pt2": buffer.getvalue()}),
        lambda feed: [want],
        framework="PYTORCH",
        data_input_config={"input_ids": [1, 16]},
        inputs={"input_ids": ids},
        model_file="model.pt2",
        atol=1e-4,
    )
    artifact, metadata, _ = _compile(case, tmp_path)
    _compare(case, artifact)
    _assert_route(metadata, "exported-program-rewritten", ["exported-program"])
    assert "Concat" in metadata["versions"]["torch_routes_failed"][0]["error"]
    assert metadata["versions"]["torch_rewrites"]["empty_cat_inputs_dropped"] == 2 * config.n_layer


# -- operators of other packages --------------------------------------------------------------------


def test_torchscript_with_a_torchvision_operator_loads(tmp_path):
    """A scripted detection-style head calling torchvision.ops.roi_align: it loads (torchvision's ops are
    registered first); it compiles, or fails naming the operator, never with the state_dict advice."""
    torchvision = _require("torchvision")

    class RoiHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x, rois):
            return torchvision.ops.roi_align(self.conv(x), rois, [4, 4], 1.0, 2, True)

    torch.manual_seed(models.SEED)
    scripted = torch.jit.script(RoiHead().eval())
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    rois = np.array([[0, 1, 1, 6, 6], [0, 0, 2, 5, 7]], np.float32)
    case = models.ModelCase(
        models.write_archive(tmp_path / "model", {"model.pth": buffer.getvalue()}),
        lambda feed: [scripted(*(torch.from_numpy(v) for v in feed.values())).detach().numpy()],
        framework="PYTORCH",
        data_input_config=[[1, 3, 8, 8], [2, 5]],
        inputs={"input0": models._randn([1, 3, 8, 8]), "input1": rois},
        model_file="model.pth",
    )
    try:
        artifact, metadata, _ = _compile(case, tmp_path)
    except UnsupportedOperatorsError as err:
        assert "torchvision::" in str(err) and "torchvision package" in str(err), err
        assert "state_dict" not in str(err)
        assert err.operators == ["torchvision::roi_align"]
        return
    _compare(case, artifact)
    assert metadata["versions"]["torchvision"]


_SAVE_FOREIGN_OPS = textwrap.dedent(
    """
    import sys, torch
    for namespace, path in (("torchaudio", sys.argv[1]), ("neo_test_ops", sys.argv[2])):
        lib = torch.library.Library(namespace, "FRAGMENT")
        lib.define("scale(Tensor x) -> Tensor")
        lib.impl("scale", lambda x: x * 2, "CompositeExplicitAutograd")
        torch.jit.save(torch.jit.trace(getattr(torch.ops, namespace).scale, torch.zeros(2, 3)), path)
        del lib
    """
)


def test_operators_of_unknown_namespaces_are_named(tmp_path):
    """TorchScript saved where a package defined its operators, loaded where it is missing."""
    audio, custom = tmp_path / "audio.pth", tmp_path / "custom.pth"
    subprocess.run([sys.executable, "-c", _SAVE_FOREIGN_OPS, str(audio), str(custom)], check=True, timeout=300)
    for path, operator, package in [(audio, "torchaudio::scale", "the torchaudio package"),
                                    (custom, "neo_test_ops::scale", "defines the 'neo_test_ops' operator namespace")]:
        case = models.ModelCase(
            models.write_archive(tmp_path / path.stem, {"model.pth": path.read_bytes()}),
            None, framework="PYTORCH", data_input_config=[[2, 3]], inputs={}, model_file="model.pth",
        )
        with pytest.raises(UnsupportedOperatorsError) as caught:
            _compile(case, tmp_path / path.stem)
        message = str(caught.value)
        assert operator in message and package in message, message
        assert "state_dict" not in message
        assert caught.value.operators == [operator]


# -- every route fails ------------------------------------------------------------------------------


def test_error_names_each_routes_failure(tmp_path):
    """torch.special.i0e: no legacy ONNX symbolic, no TVM converter. The FailureReason is Neo's
    OperatorNotImplemented, from the route that names the node (exported-program: its name, op and
    input shapes), and lists every route's failure."""

    class Bessel(torch.nn.Module):
        def forward(self, x):
            return torch.special.i0e(x) + 1

    case = _torchscript_case(tmp_path / "model", Bessel(), {"x": models._randn([2, 3])})
    with pytest.raises(UnsupportedOperatorsError) as caught:
        _compile(case, tmp_path)
    reason = failure_reason(caught.value)
    assert reason.startswith("ClientError: OperatorNotImplemented: the model uses operators that TVM "), reason
    assert "special_i0e.default (node 'special_i0e'" in reason and "float32[2,3]" in reason, reason
    assert "could not be imported by any route: " in reason, reason
    assert ("onnx-legacy: OperatorNotImplemented: the legacy ONNX exporter (opset 17) cannot export the "
            "TorchScript operator aten::special_i0e") in reason, reason
    assert "exported-program: the failure stated first" in reason, reason
    assert len(reason) <= 1024
    assert caught.value.operators == ["special_i0e.default"]


def test_the_most_informative_route_failure_keeps_its_class():
    """A ClientError class beats a ServerError whatever the route order; a ServerError alone stays one."""
    from airflow_neo.local.errors import CompilationError, OperatorAttributeNotImplementedError
    from airflow_neo.local.torch_import import RouteFailure, _all_routes_failed

    server = RouteFailure("onnx-legacy", CompilationError("import failed: TVMError: out of luck"), False)
    client = RouteFailure("exported-program", OperatorAttributeNotImplementedError(
        "node 'pad' (constant_pad_nd.default; inputs: x float32[1,3,4,4]): dynamic pads", ["constant_pad_nd.default"]), True)
    final = _all_routes_failed([server, client])
    assert type(final) is OperatorAttributeNotImplementedError and final.operators == ["constant_pad_nd.default"]
    assert failure_reason(final) == (
        "ClientError: OperatorAttributeNotImplemented: node 'pad' (constant_pad_nd.default; inputs: x float32[1,3,4,4]): "
        "dynamic pads (the TorchScript model could not be imported by any route: onnx-legacy: ServerError: import failed: "
        "TVMError: out of luck; exported-program: the failure stated first)"
    )
    alone = _all_routes_failed([server])
    assert failure_reason(alone).startswith("ServerError: import failed: TVMError: out of luck (the TorchScript model")
