"""Small real models, built in-process with random weights, packed as Neo model archives.

Each builder writes ``model.tar.gz`` (a Neo model archive) into a directory and returns a
:class:`ModelCase`: a 2-tuple ``(archive_path, reference_fn)`` that also carries ``framework``,
``data_input_config``, ``inputs`` (example inputs, {name: ndarray}) and ``model_file``.
``reference_fn(inputs) -> list[np.ndarray]`` runs the original model (onnxruntime, torch,
numpy or xgboost), for comparing with the compiled one. Heavy imports happen inside the builders.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

SEED = 0


class ModelCase(tuple):
    """``(archive_path, reference_fn)`` plus the facts a compile request needs."""

    def __new__(
        cls,
        archive: Path,
        reference: Callable[[dict], list],
        *,
        framework: str,
        data_input_config,
        inputs: dict[str, np.ndarray],
        model_file: str,
        rtol: float = 1e-4,
        atol: float = 1e-5,
    ):
        case = super().__new__(cls, (Path(archive), reference))
        case.framework = framework
        case.data_input_config = data_input_config
        case.inputs = inputs
        case.model_file = model_file
        case.rtol = rtol
        case.atol = atol
        return case

    @property
    def archive(self) -> Path:
        return self[0]

    @property
    def reference(self) -> Callable[[dict], list]:
        return self[1]


def write_archive(directory: str | Path, files: dict[str, bytes], name: str = "model.tar.gz", *,
                  compresslevel: int = 9) -> Path:
    """A ``.tar.gz`` holding ``files`` ({archive path: content}) at ``directory/name``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with tarfile.open(path, "w:gz", compresslevel=compresslevel) as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def make_request(
    case: ModelCase,
    *,
    target_device: str | None = None,
    target_platform: dict | None = None,
    compiler_options: dict | None = None,
    data_input_config="default",
    output_dir: str | Path = "/tmp/airflow-neo-out",
    job_name: str = "test-job",
) -> dict:
    """A CreateCompilationJob request for ``case`` (local file:// URIs)."""
    input_config = {"S3Uri": f"file://{case.archive}", "Framework": case.framework}
    dic = case.data_input_config if data_input_config == "default" else data_input_config
    if dic is not None:
        input_config["DataInputConfig"] = json.dumps(dic)
    output_config: dict = {"S3OutputLocation": f"file://{output_dir}"}
    if target_platform is not None:
        output_config["TargetPlatform"] = target_platform
    else:
        output_config["TargetDevice"] = target_device or "ml_c5"
    if compiler_options:
        output_config["CompilerOptions"] = json.dumps(compiler_options)
    return {
        "CompilationJobName": job_name,
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": input_config,
        "OutputConfig": output_config,
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }


# ----------------------------------------------------------------------------------------------
# PyTorch architectures


def _torch_modules():
    import torch

    class SmallCNN(torch.nn.Module):
        """conv-bn-relu-pool-fc."""

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.pool = torch.nn.MaxPool2d(2)
            self.fc = torch.nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn(self.conv(x))))
            return self.fc(torch.flatten(x, 1))

    class EncoderBlock(torch.nn.Module):
        """A pre-norm transformer encoder block: multi-head self-attention and a GELU MLP."""

        def __init__(self, d: int = 64, heads: int = 4, ff: int = 128):
            super().__init__()
            self.heads = heads
            self.qkv = torch.nn.Linear(d, 3 * d)
            self.proj = torch.nn.Linear(d, d)
            self.ln1 = torch.nn.LayerNorm(d)
            self.ln2 = torch.nn.LayerNorm(d)
            self.ff1 = torch.nn.Linear(d, ff)
            self.ff2 = torch.nn.Linear(ff, d)

        def forward(self, x):
            b, t, d = x.shape
            h = self.heads
            q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
            q = q.reshape(b, t, h, d // h).transpose(1, 2)
            k = k.reshape(b, t, h, d // h).transpose(1, 2)
            v = v.reshape(b, t, h, d // h).transpose(1, 2)
            attention = torch.softmax(q @ k.transpose(-2, -1) / (d // h) ** 0.5, dim=-1) @ v
            x = x + self.proj(attention.transpose(1, 2).reshape(b, t, d))
            return x + self.ff2(torch.nn.functional.gelu(self.ff1(self.ln2(x))))

    return torch, SmallCNN, EncoderBlock


def _cnn():
    torch, SmallCNN, _ = _torch_modules()
    torch.manual_seed(SEED)
    model = SmallCNN().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    return torch, model


def _transformer():
    torch, _, EncoderBlock = _torch_modules()
    torch.manual_seed(SEED)
    return torch, EncoderBlock().eval()


def _torch_reference(torch, model, names: list[str]):
    def reference(inputs: dict) -> list:
        with torch.no_grad():
            out = model(*[torch.from_numpy(np.asarray(inputs[name])) for name in names])
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [o.numpy() for o in outs]

    return reference


def _onnx_export(torch, model, example, input_name: str) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), buffer, input_names=[input_name], output_names=["output0"], opset_version=17, dynamo=False
        )
    return buffer.getvalue()


def _ort_reference(onnx_bytes: bytes):
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

    def reference(inputs: dict) -> list:
        return session.run(None, {name: np.asarray(value) for name, value in inputs.items()})

    return reference


def _randn(shape, seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CNN_SHAPE = [1, 3, 16, 16]
TRANSFORMER_SHAPE = [1, 16, 64]


def onnx_cnn(directory: str | Path) -> ModelCase:
    """Small CNN (conv-bn-relu-pool-fc) as ONNX; input ``input0`` [1,3,16,16]; reference onnxruntime."""
    torch, model = _cnn()
    data = _onnx_export(torch, model, torch.zeros(CNN_SHAPE), "input0")
    return ModelCase(
        write_archive(directory, {"model.onnx": data}),
        _ort_reference(data),
        framework="ONNX",
        data_input_config={"input0": CNN_SHAPE},
        inputs={"input0": _randn(CNN_SHAPE)},
        model_file="model.onnx",
    )


def onnx_transformer(directory: str | Path) -> ModelCase:
    """Transformer encoder block (d=64, 4 heads, seq 16) as ONNX; input ``tokens``; reference onnxruntime."""
    torch, model = _transformer()
    data = _onnx_export(torch, model, torch.zeros(TRANSFORMER_SHAPE), "tokens")
    return ModelCase(
        write_archive(directory, {"model.onnx": data}),
        _ort_reference(data),
        framework="ONNX",
        data_input_config={"tokens": TRANSFORMER_SHAPE},
        inputs={"tokens": _randn(TRANSFORMER_SHAPE)},
        model_file="model.onnx",
    )


def torchscript_cnn(directory: str | Path, *, list_form: bool = True) -> ModelCase:
    """The CNN traced to TorchScript in ``model.pth`` (Neo's PyTorch format); reference torch.

    DataInputConfig uses Neo's PyTorch list form ``[[1, 3, 16, 16]]`` (or ``{"input0": ...}``).
    """
    torch, model = _cnn()
    traced = torch.jit.trace(model, (torch.zeros(CNN_SHAPE),))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return ModelCase(
        write_archive(directory, {"model.pth": buffer.getvalue(), "code/inference.py": b"# serving code\n"}),
        _torch_reference(torch, model, ["input0"]),
        framework="PYTORCH",
        data_input_config=[CNN_SHAPE] if list_form else {"input0": CNN_SHAPE},
        inputs={"input0": _randn(CNN_SHAPE)},
        model_file="model.pth",
    )


def pt2_transformer(directory: str | Path) -> ModelCase:
    """The transformer block as a ``torch.export`` program in ``model.pt2``; input ``x``; reference torch."""
    torch, model = _transformer()
    program = torch.export.export(model, (torch.zeros(TRANSFORMER_SHAPE),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return ModelCase(
        write_archive(directory, {"model.pt2": buffer.getvalue()}),
        _torch_reference(torch, model, ["x"]),
        framework="PYTORCH",
        data_input_config={"x": TRANSFORMER_SHAPE},
        inputs={"x": _randn(TRANSFORMER_SHAPE)},
        model_file="model.pt2",
    )


def pt2_cnn(directory: str | Path, *, filename: str = "model.pt2") -> ModelCase:
    """The CNN as a ``torch.export`` program (``filename``: a ``.pt`` name tests the fallback); input ``x``."""
    torch, model = _cnn()
    program = torch.export.export(model, (torch.zeros(CNN_SHAPE),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return ModelCase(
        write_archive(directory, {filename: buffer.getvalue()}),
        _torch_reference(torch, model, ["x"]),
        framework="PYTORCH",
        data_input_config={"input0": CNN_SHAPE},  # Neo's positional name; the program calls it x
        inputs={"x": _randn(CNN_SHAPE)},
        model_file=filename,
    )


UNSUPPORTED_TORCH_OPS = ("_linalg_det.default", "special_i0e.default")


def pt2_unsupported_ops(directory: str | Path) -> ModelCase:
    """A torch.export program using torch.linalg.det and torch.special.i0e, which TVM 0.27 cannot convert."""
    import torch

    class Unsupported(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.det(x) + torch.special.i0e(x).sum()

    program = torch.export.export(Unsupported(), (torch.zeros(3, 3),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)

    def reference(inputs: dict) -> list:  # pragma: no cover - never runs: the model does not compile
        raise NotImplementedError

    return ModelCase(
        write_archive(directory, {"model.pt2": buffer.getvalue()}),
        reference,
        framework="PYTORCH",
        data_input_config={"x": [3, 3]},
        inputs={"x": _randn([3, 3])},
        model_file="model.pt2",
    )


# ----------------------------------------------------------------------------------------------
# TFLite, built directly as a flatbuffer with the `tflite` package's generated builders


TFLITE_SHAPE = [1, 8, 8, 3]


def tflite_cnn(directory: str | Path) -> ModelCase:
    """A TFLite CNN: CONV_2D (SAME, fused ReLU) -> AVERAGE_POOL_2D -> RESHAPE -> FULLY_CONNECTED -> SOFTMAX.

    NHWC input ``input`` [1,8,8,3]; output ``probs`` [1,10]; reference: numpy.
    """
    rng = np.random.default_rng(SEED)
    conv_w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)  # O, H, W, I
    conv_b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    fc_w = (rng.standard_normal((10, 128)) * 0.1).astype(np.float32)  # out, in
    fc_b = (rng.standard_normal(10) * 0.1).astype(np.float32)
    data = _tflite_cnn_flatbuffer(conv_w, conv_b, fc_w, fc_b)

    def reference(inputs: dict) -> list:
        x = np.asarray(inputs["input"], dtype=np.float64)
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        conv = np.zeros((1, 8, 8, 8))
        for kh in range(3):
            for kw in range(3):
                conv += np.einsum("nhwi,oi->nhwo", padded[:, kh : kh + 8, kw : kw + 8, :], conv_w[:, kh, kw, :])
        conv = np.maximum(conv + conv_b, 0.0)
        pooled = conv.reshape(1, 4, 2, 4, 2, 8).mean(axis=(2, 4))
        logits = pooled.reshape(1, 128) @ fc_w.T.astype(np.float64) + fc_b
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return [(e / e.sum(axis=1, keepdims=True)).astype(np.float32)]

    return ModelCase(
        write_archive(directory, {"model.tflite": data}),
        reference,
        framework="TFLITE",
        data_input_config={"input": TFLITE_SHAPE},
        inputs={"input": _randn(TFLITE_SHAPE)},
        model_file="model.tflite",
    )


def _tflite_cnn_flatbuffer(conv_w, conv_b, fc_w, fc_b) -> bytes:
    import flatbuffers
    import tflite
    from tflite.ActivationFunctionType import ActivationFunctionType as Act
    from tflite.BuiltinOperator import BuiltinOperator as Op
    from tflite.BuiltinOptions import BuiltinOptions as Opt
    from tflite.Padding import Padding
    from tflite.TensorType import TensorType

    b = flatbuffers.Builder(4096)

    def vector(values, dtype):
        return b.CreateNumpyVector(np.asarray(values, dtype=dtype))

    # buffers: 0 is the empty sentinel; constants follow
    constants = [conv_w, conv_b, fc_w, fc_b, np.array([1, 128], dtype=np.int32)]
    buffer_offsets = []
    for array in [None, *constants]:
        data = None if array is None else vector(np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8), np.uint8)
        tflite.BufferStart(b)
        if data is not None:
            tflite.BufferAddData(b, data)
        buffer_offsets.append(tflite.BufferEnd(b))

    # tensors: (name, shape, type, buffer)
    f32, i32 = TensorType.FLOAT32, TensorType.INT32
    tensor_specs = [
        ("input", TFLITE_SHAPE, f32, 0),  # 0
        ("conv/weights", [8, 3, 3, 3], f32, 1),  # 1
        ("conv/bias", [8], f32, 2),  # 2
        ("conv/relu", [1, 8, 8, 8], f32, 0),  # 3
        ("pool", [1, 4, 4, 8], f32, 0),  # 4
        ("flatten/shape", [2], i32, 5),  # 5
        ("flatten", [1, 128], f32, 0),  # 6
        ("fc/weights", [10, 128], f32, 3),  # 7
        ("fc/bias", [10], f32, 4),  # 8
        ("logits", [1, 10], f32, 0),  # 9
        ("probs", [1, 10], f32, 0),  # 10
    ]
    tensor_offsets = []
    for name, shape, ttype, buffer_index in tensor_specs:
        name_offset = b.CreateString(name)
        shape_offset = vector(shape, np.int32)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape_offset)
        tflite.TensorAddType(b, ttype)
        tflite.TensorAddBuffer(b, buffer_index)
        tflite.TensorAddName(b, name_offset)
        tensor_offsets.append(tflite.TensorEnd(b))

    # builtin options
    tflite.Conv2DOptionsStart(b)
    tflite.Conv2DOptionsAddPadding(b, Padding.SAME)
    tflite.Conv2DOptionsAddStrideW(b, 1)
    tflite.Conv2DOptionsAddStrideH(b, 1)
    tflite.Conv2DOptionsAddDilationWFactor(b, 1)
    tflite.Conv2DOptionsAddDilationHFactor(b, 1)
    tflite.Conv2DOptionsAddFusedActivationFunction(b, Act.RELU)
    conv_options = tflite.Conv2DOptionsEnd(b)
    tflite.Pool2DOptionsStart(b)
    tflite.Pool2DOptionsAddPadding(b, Padding.VALID)
    tflite.Pool2DOptionsAddStrideW(b, 2)
    tflite.Pool2DOptionsAddStrideH(b, 2)
    tflite.Pool2DOptionsAddFilterWidth(b, 2)
    tflite.Pool2DOptionsAddFilterHeight(b, 2)
    tflite.Pool2DOptionsAddFusedActivationFunction(b, Act.NONE)
    pool_options = tflite.Pool2DOptionsEnd(b)
    new_shape = vector([1, 128], np.int32)
    tflite.ReshapeOptionsStart(b)
    tflite.ReshapeOptionsAddNewShape(b, new_shape)
    reshape_options = tflite.ReshapeOptionsEnd(b)
    tflite.FullyConnectedOptionsStart(b)
    tflite.FullyConnectedOptionsAddFusedActivationFunction(b, Act.NONE)
    fc_options = tflite.FullyConnectedOptionsEnd(b)
    tflite.SoftmaxOptionsStart(b)
    tflite.SoftmaxOptionsAddBeta(b, 1.0)
    softmax_options = tflite.SoftmaxOptionsEnd(b)

    opcodes = [Op.CONV_2D, Op.AVERAGE_POOL_2D, Op.RESHAPE, Op.FULLY_CONNECTED, Op.SOFTMAX]
    operators = [  # (opcode index, inputs, outputs, options type, options)
        (0, [0, 1, 2], [3], Opt.Conv2DOptions, conv_options),
        (1, [3], [4], Opt.Pool2DOptions, pool_options),
        (2, [4, 5], [6], Opt.ReshapeOptions, reshape_options),
        (3, [6, 7, 8], [9], Opt.FullyConnectedOptions, fc_options),
        (4, [9], [10], Opt.SoftmaxOptions, softmax_options),
    ]
    operator_offsets = []
    for opcode_index, inputs, outputs, options_type, options in operators:
        inputs_offset = vector(inputs, np.int32)
        outputs_offset = vector(outputs, np.int32)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, opcode_index)
        tflite.OperatorAddInputs(b, inputs_offset)
        tflite.OperatorAddOutputs(b, outputs_offset)
        tflite.OperatorAddBuiltinOptionsType(b, options_type)
        tflite.OperatorAddBuiltinOptions(b, options)
        operator_offsets.append(tflite.OperatorEnd(b))

    def offsets_vector(start, offsets):
        start(b, len(offsets))
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    tensors_vec = offsets_vector(tflite.SubGraphStartTensorsVector, tensor_offsets)
    operators_vec = offsets_vector(tflite.SubGraphStartOperatorsVector, operator_offsets)
    sg_inputs = vector([0], np.int32)
    sg_outputs = vector([10], np.int32)
    sg_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors_vec)
    tflite.SubGraphAddInputs(b, sg_inputs)
    tflite.SubGraphAddOutputs(b, sg_outputs)
    tflite.SubGraphAddOperators(b, operators_vec)
    tflite.SubGraphAddName(b, sg_name)
    subgraph = tflite.SubGraphEnd(b)

    opcode_offsets = []
    for code in opcodes:
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, code)
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        opcode_offsets.append(tflite.OperatorCodeEnd(b))

    opcodes_vec = offsets_vector(tflite.ModelStartOperatorCodesVector, opcode_offsets)
    subgraphs_vec = offsets_vector(tflite.ModelStartSubgraphsVector, [subgraph])
    buffers_vec = offsets_vector(tflite.ModelStartBuffersVector, buffer_offsets)
    description = b.CreateString("airflow-neo test CNN")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, opcodes_vec)
    tflite.ModelAddSubgraphs(b, subgraphs_vec)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, buffers_vec)
    model = tflite.ModelEnd(b)
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())


# ----------------------------------------------------------------------------------------------
# XGBoost


XGB_FEATURES = 6


def xgboost_classifier(directory: str | Path, *, filename: str = "model.json") -> ModelCase:
    """A binary:logistic XGBoost model (20 trees, depth 3, 6 features) saved by Booster.save_model.

    Input ``data`` [n, 6]; output ``predictions`` [n, 1, 1] (probabilities); reference xgboost.
    """
    import xgboost

    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((256, XGB_FEATURES)).astype(np.float32)
    y = ((x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3]) > 0).astype(np.int32)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": SEED},
        xgboost.DMatrix(x, label=y),
        num_boost_round=20,
    )
    model_path = Path(directory) / "build" / filename
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # "Saving model in the UBJSON format as default" for other suffixes
        warnings.simplefilter("ignore")
        booster.save_model(str(model_path))

    def reference(inputs: dict) -> list:
        data = np.asarray(inputs["data"], dtype=np.float32)
        return [booster.predict(xgboost.DMatrix(data)).reshape(-1, 1, 1)]

    return ModelCase(
        write_archive(directory, {filename: model_path.read_bytes()}),
        reference,
        framework="XGBOOST",
        data_input_config=None,
        inputs={"data": rng.standard_normal((32, XGB_FEATURES)).astype(np.float32)},
        model_file=filename,
    )


# ----------------------------------------------------------------------------------------------
# ONNX graphs for failure cases


UNSUPPORTED_ONNX_OPS = ("Celu", "LpNormalization")


def onnx_unsupported_ops(directory: str | Path) -> ModelCase:
    """An ONNX graph x -> Celu -> LpNormalization -> Relu; TVM 0.27 converts neither of the first two."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Celu", ["x"], ["celu"]),
            helper.make_node("LpNormalization", ["celu"], ["norm"]),
            helper.make_node("Relu", ["norm"], ["y"]),
        ],
        "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)

    def reference(inputs: dict) -> list:  # pragma: no cover - never runs: the model does not compile
        raise NotImplementedError

    return ModelCase(
        write_archive(directory, {"model.onnx": model.SerializeToString()}),
        reference,
        framework="ONNX",
        data_input_config={"x": [2, 4]},
        inputs={"x": _randn([2, 4])},
        model_file="model.onnx",
    )
