"""Transformer graphs exported by torch compile with a range on the sequence length (and batch).

torch's exporter writes the attention scale as shape arithmetic: ``Shape(q) -> Slice(-1) -> Cast ->
Sqrt -> Div``, and the head split as ``Shape -> Gather(axis) -> Unsqueeze -> Concat -> Reshape``.
With a range on a dim, those shapes are partly symbolic; the values that read only their static
dims (the width, the head count) must fold to constants before TVM imports the graph
(:mod:`airflow_neo.local.onnx_static_dims`), while those reading the range dim stay symbolic. A
tiny encoder layer (2 heads, width 16), compiled once per range and verified by the compiler's gate
against onnxruntime at the range's lower bound, midpoint and upper bound.
"""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import pytest

from airflow_neo.local.compiler import compile_model
from tests.local import models

pytest.importorskip("tvm")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")


def _block(width: int = 16, heads: int = 2):
    """A pre-norm encoder block written as transformers write theirs: heads split with ``x.shape``,
    F.scaled_dot_product_attention, a GELU feed-forward, residuals."""

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
            self.qkv, self.out = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
            self.ff = torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.GELU(), torch.nn.Linear(2 * width, width))

        def forward(self, x):
            batch, seq, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
            q, k, v = (t.reshape(batch, seq, heads, width // heads).transpose(1, 2) for t in (q, k, v))
            attended = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            x = x + self.out(attended.transpose(1, 2).reshape(batch, seq, width))
            return x + self.ff(self.norm2(x))

    torch.manual_seed(0)
    return Block().eval()


def _encoder_bytes() -> bytes:
    """The block exported by the TorchScript-based exporter with dims 'batch' and 'seq' dynamic."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_block(), (torch.randn(2, 5, 16),), buffer, input_names=["x"], output_names=["y"], opset_version=17,
                          dynamo=False, dynamic_axes={"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}})
    return buffer.getvalue()


@pytest.fixture(scope="module")
def encoder() -> bytes:
    return _encoder_bytes()


def _compile(tmp_path, data: bytes, shape: list):
    files = {"model.onnx": data}
    archive = models.write_archive(tmp_path, files)
    case = models.ModelCase(archive, None, framework="ONNX", data_input_config={"x": shape}, inputs={}, model_file="model.onnx")
    lines: list[str] = []
    metadata = compile_model(models.make_request(case), str(archive), str(tmp_path / "artifact.tar.gz"), log=lines.append,
                             verify="gate", profile_seconds=0)
    return metadata, lines


def test_the_export_has_shape_arithmetic_on_static_dims(encoder):
    """The premise: the exported graph computes its attention scale from a shape (else the test below proves nothing)."""
    graph = onnx.load_from_string(encoder).graph
    ops = [node.op_type for node in graph.node]
    assert "Shape" in ops and "Sqrt" in ops


@pytest.mark.parametrize(("shape", "verified"), [
    ([1, "4..32", 16], [[1, 4, 16], [1, 18, 16], [1, 32, 16]]),
    (["1..4", "4..32", 16], [[1, 4, 16], [2, 18, 16], [4, 32, 16]]),
])
def test_encoder_layer_with_a_range_sequence_length(tmp_path, encoder, shape, verified):
    metadata, lines = _compile(tmp_path, encoder, shape)
    assert metadata["inputs"][0]["shape"] == [None if isinstance(dim, str) else dim for dim in shape]
    verification = metadata["verification"]
    assert verification["passed"] is True
    assert [item["inputs"]["x"] for item in verification["shapes"]] == verified
    assert all(item["max_abs_diff"] <= item["tolerance"] for item in verification["shapes"])
    normalized = metadata["versions"]["onnx_normalized"]
    assert normalized["shape_reads"] > 0, normalized  # static dims of partly symbolic shapes were read


def _zoo_bert_dynamic(monkeypatch):
    """The zoo's small BERT exported with dynamic batch and sequence dims."""
    from tests.local import zoo

    monkeypatch.setattr(zoo, "onnx_export", functools.partial(zoo.onnx_export, dynamic_axes={0: "batch", 1: "seq"}))
    return zoo.ZOO["bert"].build(True)


def test_a_symbolic_build_tvm_cannot_finish_is_a_client_error_naming_the_ranges(tmp_path, monkeypatch):
    """BERT's attention mask takes a Range over the sequence length: with a sequence range TVM 0.27's
    build fails (a symbolic length it never computes). The job is refused as the ranges' doing, naming
    the inputs and what to do, instead of an internal compiler error."""
    from airflow_neo.local.errors import ModelInputError

    built = _zoo_bert_dynamic(monkeypatch)
    archive = models.write_archive(tmp_path, built.files)
    config = {name: [1, "8..64"] for name in built.inputs}
    case = models.ModelCase(archive, None, framework="ONNX", data_input_config=config, inputs={},
                            model_file=built.model_file)
    with pytest.raises(ModelInputError) as caught:
        compile_model(models.make_request(case), str(archive), str(tmp_path / "a.tar.gz"), log=lambda _: None,
                      profile_seconds=0)
    message = str(caught.value)
    assert "ranges for input_ids, attention_mask" in message and "could not build the model" in message
    assert "a batch range often builds" in message and caught.value.neo_class == "InputConfiguration"
    assert not (tmp_path / "a.tar.gz").exists()
