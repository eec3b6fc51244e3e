"""The real-model zoo: architectures users compile, built in-process with random weights.

Each :class:`Architecture` builds a model file the way its users export it (ONNX from the
TorchScript exporter, TorchScript, a ``torch.export`` program, onnxruntime's quantization tools),
with example inputs and the reference outputs (onnxruntime on the ONNX file; torch for TorchScript
and ``.pt2``, which onnxruntime cannot run). :func:`check` compiles one through the local compile
path (:func:`airflow_neo.local.compiler.compile_model`), runs the artifact and compares.

``small=True`` builds a smaller configuration of the same architecture (fewer layers, a smaller
image or sequence): the same graph classes at a cost CI can pay. ``tests/local/test_real_models.py``
runs a subset that way; ``scripts/real_models.py`` runs the whole zoo at full size and writes
``docs/real_models.md``.

Invariants: no weights are downloaded; the reference never runs through the code under test;
a compile failure is a result (status ``failed`` with the FailureReason), never an exception.
Heavy imports (torch, transformers, torchvision, timm, onnxruntime) happen inside the builders.
"""

from __future__ import annotations

import io
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

SEED = 0
LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}


@dataclass
class Built:
    """A model file and what a compile request and the comparison need."""

    files: dict[str, bytes]
    model_file: str
    framework: str
    inputs: dict[str, np.ndarray]
    reference: list[np.ndarray]
    reference_name: str  # "onnxruntime", "onnxruntime (graph optimizations off)" or "torch"
    compiler_options: dict | None = None

    @property
    def data_input_config(self) -> dict:
        return {name: list(value.shape) for name, value in self.inputs.items()}


@dataclass(frozen=True)
class Architecture:
    name: str
    label: str
    family: str  # text, vision, detection, quantized, recurrent, speech
    route: str  # how the model reaches the compiler: "ONNX", "TorchScript", "torch.export (.pt2)", ...
    build: Callable[[bool], Built]
    tolerance: float = 1e-4  # of the largest |reference| value
    exercises: str = ""  # the graph classes it covers


# ---------------------------------------------------------------------------------------- helpers


def import_torchvision():
    """torchvision's Python model code, also where its C++ ops do not load (PyPI's CUDA build next to
    the CPU torch wheel): the import layer's own registration of its operator schemas."""
    from airflow_neo.local.torch_import import register_torchvision_ops

    if register_torchvision_ops() is None:
        raise ImportError("torchvision is not installed")
    return sys.modules["torchvision"]


def _nms_for_tracing(torchvision) -> None:
    """Where torchvision's C++ nms kernel is missing (the CUDA wheel), give the op a CPU kernel so a
    detection model can be traced. Tracing is paused inside it, so the trace records one
    ``torchvision::nms`` node, which torchvision's ONNX symbolic exports as NonMaxSuppression."""
    import torch

    if torchvision.extension._has_ops():
        return

    def has_ops() -> bool:
        return True

    def nms(dets, scores, iou_threshold):
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            order = scores.argsort(descending=True)
            x1, y1, x2, y2 = dets.unbind(1)
            areas = (x2 - x1) * (y2 - y1)
            suppressed = torch.zeros(len(dets), dtype=torch.bool)
            keep = []
            for i in order.tolist():
                if suppressed[i]:
                    continue
                keep.append(i)
                width = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
                height = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
                inter = width * height
                suppressed |= inter / (areas[i] + areas - inter) > iou_threshold
            return torch.tensor(keep, dtype=torch.int64)
        finally:
            torch._C._set_tracing_state(state)

    torch.library.impl("torchvision::nms", "CPU")(nms)
    torchvision.extension._has_ops = has_ops
    from torchvision.ops import _register_onnx_ops

    _register_onnx_ops._register_custom_op()


def _seeded():
    import torch

    torch.manual_seed(SEED)
    return torch, np.random.default_rng(SEED)


def _randomize_batch_norms(torch, module) -> None:
    """Random but non-trivial batch-norm statistics (fresh ones are 0/1, which hides errors)."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.running_mean.uniform_(-0.1, 0.1)
                layer.running_var.uniform_(0.8, 1.2)


def ort_run(data: bytes, inputs: dict, *, literal: bool = False) -> list[np.ndarray]:
    """onnxruntime's outputs; ``literal``: with its graph optimizations off, so each node runs as written.

    Quantized models use the literal run as their reference: onnxruntime's default run fuses
    DequantizeLinear -> op -> QuantizeLinear into integer kernels that round differently, and on
    ResNet-18 QDQ that alone moves the logits by 2.9% of their range (measured); the literal run is
    the graph's own semantics, which is what a compiler must reproduce.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if literal:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return [np.asarray(value) for value in session.run(None, inputs)]


def onnx_export(torch, module, inputs: dict, output_names=None, *, opset: int = 17,
                dynamic_axes: dict[int, str] | None = None) -> bytes:
    """``module`` exported with the TorchScript-based exporter, as most published ONNX files are;
    ``dynamic_axes`` ({axis: name}) makes those axes of every input dynamic."""
    tensors = tuple(torch.from_numpy(value) for value in inputs.values())
    axes = {name: dict(dynamic_axes) for name in inputs} if dynamic_axes else None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tensors, buffer, input_names=list(inputs), output_names=output_names,
                          opset_version=opset, dynamo=False, dynamic_axes=axes)
    return buffer.getvalue()


def _onnx_built(data: bytes, inputs: dict, *, literal: bool = False) -> Built:
    name = "onnxruntime (graph optimizations off)" if literal else "onnxruntime"
    return Built({"model.onnx": data}, "model.onnx", "ONNX", inputs, ort_run(data, inputs, literal=literal), name)


def _as_onnx(torch, module, inputs: dict) -> Built:
    return _onnx_built(onnx_export(torch, module.eval(), inputs), inputs)


def _torch_outputs(torch, module, inputs: dict) -> list[np.ndarray]:
    with torch.no_grad():
        result = module(*(torch.from_numpy(value) for value in inputs.values()))
    leaves = list(result) if isinstance(result, (list, tuple)) else [result]
    return [leaf.detach().numpy() for leaf in leaves]


class _LastHidden:
    """A transformers model called with keyword inputs, returning its last hidden state."""

    @staticmethod
    def wrap(torch, inner, names: list[str]):
        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, *args):
                return self.inner(**dict(zip(names, args))).last_hidden_state

        return Wrapped().eval()


# ---------------------------------------------------------------------------------------- text


SMALL_TEXT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
              "vocab_size": 1000}


def _text_inputs(rng, vocab: int, seq: int, pad: int, mask: bool = True) -> dict:
    inputs = {"input_ids": rng.integers(0, vocab, (1, seq)).astype(np.int64)}
    if mask:
        attention = np.ones((1, seq), np.int64)
        attention[:, seq - pad:] = 0  # padding, so the traced graph keeps the mask path
        inputs["attention_mask"] = attention
    return inputs


def _transformers():
    try:
        import_torchvision()  # transformers imports torchvision when it is installed
    except ImportError:
        pass
    import transformers

    return transformers


def _encoder(kind: str, small: bool) -> Built:
    torch, rng = _seeded()
    tf = _transformers()
    seq = 16 if small else 128
    if kind == "bert":
        config = tf.BertConfig(**SMALL_TEXT) if small else tf.BertConfig()
        inner = tf.BertModel(config, add_pooling_layer=False)
    elif kind == "roberta":
        config = tf.RobertaConfig(**SMALL_TEXT) if small else tf.RobertaConfig()
        inner = tf.RobertaModel(config, add_pooling_layer=False)
    elif kind == "distilbert":
        config = (tf.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=1000) if small
                  else tf.DistilBertConfig())
        inner = tf.DistilBertModel(config)
    elif kind == "albert":
        config = (tf.AlbertConfig(embedding_size=32, **SMALL_TEXT) if small else tf.AlbertConfig(
            hidden_size=768, num_attention_heads=12, intermediate_size=3072))
        inner = tf.AlbertModel(config, add_pooling_layer=False)
    else:  # t5 encoder
        config = (tf.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=1000) if small
                  else tf.T5Config.from_dict({}))
        inner = tf.T5EncoderModel(config)
    inputs = _text_inputs(rng, config.vocab_size, seq, seq // 8)
    return _as_onnx(torch, _LastHidden.wrap(torch, inner, list(inputs)), inputs)


def _gpt2_pt2(small: bool) -> Built:
    torch, rng = _seeded()
    tf = _transformers()
    config = tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=64) if small else tf.GPT2Config()
    inner = tf.GPT2Model(config)

    class Decoder(torch.nn.Module):  # named arguments: torch.export names the program's inputs after them
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids).last_hidden_state

    module = Decoder().eval()
    inputs = _text_inputs(rng, config.vocab_size, 16 if small else 128, 0, mask=False)
    with torch.no_grad():
        program = torch.export.export(module, tuple(torch.from_numpy(v) for v in inputs.values()))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return Built({"model.pt2": buffer.getvalue()}, "model.pt2", "PYTORCH", inputs,
                 _torch_outputs(torch, module, inputs), "torch")


# ---------------------------------------------------------------------------------------- vision


def _image(rng, size: int) -> dict:
    return {"input0": rng.standard_normal((1, 3, size, size)).astype(np.float32)}


def _torchvision_model(ctor: str, small: bool, **kwargs) -> Built:
    torch, rng = _seeded()
    module = getattr(import_torchvision().models, ctor)(weights=None, **kwargs).eval()
    _randomize_batch_norms(torch, module)
    return _as_onnx(torch, module, _image(rng, 64 if small else 224))


def _timm_model(ctor: str, small: bool, size: int = 224, small_size: int = 96, **kwargs) -> Built:
    torch, rng = _seeded()
    try:
        import_torchvision()  # timm imports torchvision when it is installed
    except ImportError:
        pass
    import timm

    module = timm.create_model(ctor, pretrained=False, **kwargs).eval()
    _randomize_batch_norms(torch, module)
    return _as_onnx(torch, module, _image(rng, small_size if small else size))


def _vit_torchscript(small: bool) -> Built:
    """torchvision's ViT traced in eval mode: the trace records the fused attention fast path."""
    torch, rng = _seeded()
    tv = import_torchvision()
    if small:
        module = tv.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
                                             mlp_dim=128, num_classes=10)
    else:
        module = tv.models.vit_b_16(weights=None)
    with torch.no_grad():  # torchvision initializes the classification head to zeros: every output would be 0
        torch.nn.init.normal_(module.heads.head.weight, std=0.02)
    module.eval()
    inputs = _image(rng, 32 if small else 224)
    tensors = tuple(torch.from_numpy(value) for value in inputs.values())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, tensors)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return Built({"model.pth": buffer.getvalue()}, "model.pth", "PYTORCH", inputs,
                 _torch_outputs(torch, module, inputs), "torch")


def _ssdlite(small: bool) -> Built:
    torch, rng = _seeded()
    tv = import_torchvision()
    _nms_for_tracing(tv)
    size = 160 if small else 320  # the model resizes its input to 320x320 itself
    module = tv.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    _randomize_batch_norms(torch, module)

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, image):
            found = self.inner([image[0]])[0]
            return found["boxes"], found["scores"], found["labels"]

    inputs = {"image": rng.random((1, 3, size, size)).astype(np.float32)}
    data = onnx_export(torch, Detector().eval(), inputs, ["boxes", "scores", "labels"])
    return _onnx_built(data, inputs)


def _detr(small: bool) -> Built:
    """DETR (transformers): a ResNet backbone, a transformer encoder-decoder and set prediction, so its
    detections are a fixed number of queries (class logits and boxes) with no NMS in the graph."""
    torch, rng = _seeded()
    tf = _transformers()
    if small:
        backbone = tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                   layer_type="basic", out_features=["stage4"])
        config = tf.DetrConfig(use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False,
                               num_queries=20, d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                               decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_labels=10)
    else:
        config = tf.DetrConfig(use_timm_backbone=False, backbone_config=tf.ResNetConfig(out_features=["stage4"]),
                               use_pretrained_backbone=False)
    model = tf.DetrForObjectDetection(config).eval()
    _randomize_batch_norms(torch, model)

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, pixel_values):
            found = self.inner(pixel_values=pixel_values)
            return found.logits, found.pred_boxes

    size = 128 if small else 512
    inputs = {"pixel_values": rng.standard_normal((1, 3, size, size)).astype(np.float32)}
    return _onnx_built(onnx_export(torch, Detector().eval(), inputs, ["logits", "pred_boxes"]), inputs)


# ---------------------------------------------------------------------------------------- recurrent


def _recurrent(kind: str, small: bool) -> Built:
    """A time-series LSTM forecaster or a speech-style conv + bidirectional GRU tagger."""
    torch, rng = _seeded()
    steps, features = (12, 8) if small else (96, 32)
    hidden = 16 if small else 128

    class Forecaster(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(features, hidden, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(hidden, 1)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(features, hidden, 3, padding=1)
            self.rnn = torch.nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(2 * hidden, 10)

        def forward(self, x):
            x = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
            out, _ = self.rnn(x)
            return self.head(out)

    module = Forecaster() if kind == "lstm" else Tagger()
    inputs = {"series": rng.standard_normal((2, steps, features)).astype(np.float32)}
    return _as_onnx(torch, module, inputs)


# ---------------------------------------------------------------------------------------- quantized


def _quantized_cnn(kind: str, small: bool) -> Built:
    """A torchvision CNN quantized by onnxruntime's tools: static QDQ or QOperator (QLinearConv ...)."""
    torch, rng = _seeded()
    ctor = "resnet18" if kind == "qdq" else "mobilenet_v2"
    module = getattr(import_torchvision().models, ctor)(weights=None).eval()
    _randomize_batch_norms(torch, module)
    inputs = _image(rng, 64 if small else 224)
    float_model = onnx_export(torch, module, inputs)
    return _onnx_built(_quantize_static(float_model, inputs, kind, rng), inputs, literal=True)


def _quantize_static(data: bytes, inputs: dict, kind: str, rng) -> bytes:
    import tempfile

    from onnxruntime import quantization as q

    class Calibration(q.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: rng.standard_normal(value.shape).astype(value.dtype)
                                  for name, value in inputs.items()} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "quantized.onnx"
        source.write_bytes(data)
        fmt = q.QuantFormat.QDQ if kind == "qdq" else q.QuantFormat.QOperator
        q.quantize_static(str(source), str(target), Calibration(), quant_format=fmt,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
        return target.read_bytes()


def _quantized_text(small: bool) -> Built:
    """DistilBERT with onnxruntime's dynamic quantization (DynamicQuantizeLinear, MatMulInteger)."""
    import tempfile

    from onnxruntime import quantization as q

    float_built = _encoder("distilbert", small)
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "quantized.onnx"
        source.write_bytes(float_built.files["model.onnx"])
        q.quantize_dynamic(str(source), str(target), weight_type=q.QuantType.QInt8)
        data = target.read_bytes()
    return _onnx_built(data, float_built.inputs, literal=True)


# ---------------------------------------------------------------------------------------- the zoo


def _arch(name, label, family, route, build, tolerance=1e-4, exercises=""):
    return Architecture(name, label, family, route, build, tolerance, exercises)


ZOO: dict[str, Architecture] = {a.name: a for a in [
    _arch("bert", "BERT-base (transformers)", "text", "ONNX", lambda s: _encoder("bert", s),
          exercises="attention-mask Expand, shape subgraphs"),
    _arch("distilbert", "DistilBERT (transformers)", "text", "ONNX", lambda s: _encoder("distilbert", s),
          exercises="attention-mask Expand, shape subgraphs"),
    _arch("roberta", "RoBERTa-base (transformers)", "text", "ONNX", lambda s: _encoder("roberta", s),
          exercises="position ids from CumSum of the mask"),
    _arch("albert", "ALBERT (transformers)", "text", "ONNX", lambda s: _encoder("albert", s),
          exercises="shared layers, factorized embeddings"),
    _arch("t5_encoder", "T5 encoder (transformers)", "text", "ONNX", lambda s: _encoder("t5", s),
          exercises="relative position buckets, RMS norm"),
    _arch("gpt2", "GPT-2 (transformers)", "text", "torch.export (.pt2)", _gpt2_pt2,
          exercises="causal mask, torch.export import"),
    _arch("vit_torchscript", "ViT-B/16 (torchvision)", "vision", "TorchScript", _vit_torchscript,
          exercises="eval-mode fused attention in the trace"),
    _arch("resnet50", "ResNet-50 (torchvision)", "vision", "ONNX", lambda s: _torchvision_model("resnet50", s)),
    _arch("mobilenet_v3_large", "MobileNetV3-Large (torchvision)", "vision", "ONNX",
          lambda s: _torchvision_model("mobilenet_v3_large", s), exercises="hard-swish, squeeze-excite"),
    _arch("shufflenet_v2", "ShuffleNetV2 x1.0 (torchvision)", "vision", "ONNX",
          lambda s: _torchvision_model("shufflenet_v2_x1_0", s), exercises="chunk from Shape/Gather/Div/Slice"),
    _arch("efficientnet_b0", "EfficientNet-B0 (torchvision)", "vision", "ONNX",
          lambda s: _torchvision_model("efficientnet_b0", s)),
    _arch("convnext_tiny", "ConvNeXt-Tiny (torchvision)", "vision", "ONNX",
          lambda s: _torchvision_model("convnext_tiny", s), exercises="depthwise 7x7, LayerNorm over channels"),
    _arch("swin_t", "Swin-T (torchvision)", "vision", "ONNX", lambda s: _torchvision_model("swin_t", s),
          exercises="shifted windows (roll), relative position bias, dynamic pads"),
    _arch("densenet121", "DenseNet-121 (torchvision)", "vision", "ONNX",
          lambda s: _torchvision_model("densenet121", s), exercises="dense concatenation"),
    _arch("efficientvit_b0", "EfficientViT-B0 (timm)", "vision", "ONNX",
          lambda s: _timm_model("efficientvit_b0", s, num_classes=10), exercises="pads computed by a subgraph"),
    _arch("mobilevit_s", "MobileViT-S (timm)", "vision", "ONNX",
          lambda s: _timm_model("mobilevit_s", s, size=256, small_size=64, num_classes=10),
          exercises="unfold/fold of patches by reshapes"),
    _arch("detr", "DETR ResNet-50 (transformers)", "detection", "ONNX", _detr,
          exercises="set prediction, encoder-decoder attention, sine position embedding"),
    _arch("ssdlite", "SSDlite320 MobileNetV3 (torchvision)", "detection", "ONNX", _ssdlite,
          exercises="score filtering, TopK, NonMaxSuppression, data-dependent shapes"),
    _arch("lstm_forecaster", "2-layer LSTM forecaster", "recurrent", "ONNX", lambda s: _recurrent("lstm", s),
          exercises="ONNX LSTM"),
    _arch("gru_tagger", "Conv + bidirectional GRU tagger", "recurrent", "ONNX", lambda s: _recurrent("gru", s),
          exercises="ONNX GRU, bidirectional"),
    _arch("resnet18_qdq", "ResNet-18 int8 QDQ (onnxruntime.quantization)", "quantized", "ONNX",
          lambda s: _quantized_cnn("qdq", s), tolerance=2e-2, exercises="QuantizeLinear/DequantizeLinear pairs"),
    _arch("mobilenet_v2_qoperator", "MobileNetV2 int8 QOperator (onnxruntime.quantization)", "quantized", "ONNX",
          lambda s: _quantized_cnn("qoperator", s), tolerance=2e-2, exercises="QLinearConv, QLinearAdd"),
    _arch("distilbert_dynamic_int8", "DistilBERT dynamic int8 (onnxruntime.quantization)", "quantized", "ONNX",
          _quantized_text, tolerance=2e-2, exercises="DynamicQuantizeLinear, MatMulInteger"),
]}


# ---------------------------------------------------------------------------------------- checking


@dataclass
class Result:
    name: str
    status: str  # "matched", "mismatch", "failed" (compile), "unbuildable" (the zoo could not build it)
    reason: str = ""
    compile_s: float | None = None
    max_error: float | None = None  # relative to the largest |reference| value
    tolerance: float | None = None
    route: str = ""
    details: dict = field(default_factory=dict)


def write_archive(directory: Path, files: dict[str, bytes]) -> Path:
    """The model archive; fast compression, since full-size models are hundreds of MB."""
    from tests.local.models import write_archive as write

    return write(directory, files, compresslevel=1)


def request_for(built: Built, archive: Path, output_dir: Path) -> dict:
    import json

    output_config = {"S3OutputLocation": f"file://{output_dir}", "TargetPlatform": LINUX_X86_64}
    if built.compiler_options:
        output_config["CompilerOptions"] = json.dumps(built.compiler_options)
    return {
        "CompilationJobName": "zoo",
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {"S3Uri": f"file://{archive}", "Framework": built.framework,
                        "DataInputConfig": json.dumps(built.data_input_config)},
        "OutputConfig": output_config,
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }


def failure_reason(err: Exception) -> str:
    """The FailureReason a job would carry for ``err``."""
    from airflow_neo.local.errors import failure_reason as reason

    return reason(err)


def compare(got: list, want: list) -> float:
    """The largest |got - want| relative to the largest |want|, over every output."""
    if len(got) != len(want):
        raise AssertionError(f"{len(got)} outputs, the reference has {len(want)}")
    worst = 0.0
    for index, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            raise AssertionError(f"output {index} has shape {list(g.shape)}, the reference {list(w.shape)}")
        if w.size == 0:
            continue
        scale = max(float(np.max(np.abs(w.astype(np.float64)))), 1e-6)
        worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) / scale)
    return worst


def check(arch: Architecture, work: Path, *, small: bool = False, log: Callable[[str], object] = lambda line: None) -> Result:
    """Build ``arch``, compile it through the local compile path, run the artifact and compare."""
    from airflow_neo import runtime
    from airflow_neo.local.compiler import compile_model

    result = Result(arch.name, "failed", tolerance=arch.tolerance, route=arch.route)
    try:
        built = arch.build(small)
    except Exception as err:  # noqa: BLE001 - a zoo that cannot build a model reports it
        result.status, result.reason = "unbuildable", f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        return result
    flat = [name for name, value in zip(range(len(built.reference)), built.reference)
            if np.asarray(value).size > 1 and np.ptp(np.asarray(value, dtype=np.float64)) == 0]
    if flat:
        result.status, result.reason = "unbuildable", f"reference output(s) {flat} are constant: the comparison would prove nothing"
        return result
    archive = write_archive(work / "model", built.files)
    artifact = work / "artifact" / "model-compiled.tar.gz"
    started = time.monotonic()
    try:
        metadata = compile_model(request_for(built, archive, work / "out"), str(archive), str(artifact), log=log)
    except Exception as err:  # noqa: BLE001 - a failed compile is a result
        result.compile_s = round(time.monotonic() - started, 1)
        result.reason = failure_reason(err)
        return result
    result.compile_s = round(time.monotonic() - started, 1)
    result.details["versions"] = metadata.get("versions", {})
    try:
        got = runtime.load(artifact).run(built.inputs)
        result.max_error = compare(got, built.reference)
    except Exception as err:  # noqa: BLE001 - a wrong artifact is a result too
        result.status, result.reason = "mismatch", f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        return result
    if result.max_error <= arch.tolerance:
        result.status = "matched"
    else:
        result.status = "mismatch"
        result.reason = f"max error {result.max_error:.2e} of the largest |{built.reference_name}| value > {arch.tolerance:g}"
    return result
