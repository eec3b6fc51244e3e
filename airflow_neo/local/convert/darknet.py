"""DARKNET: a ``.cfg`` and its ``.weights`` turned into an ONNX graph by our own reader (TVM 0.27
has no DarkNet frontend), and OpenCV's ``readNetFromDarknet`` as the independent reference.

The archive holds one ``.cfg`` (the model file) and, beside it, exactly one ``.weights`` whose
float32 count is what the cfg's layers need. The graph takes one NCHW float32 input (DataInputConfig
``{"data": [1, 3, 416, 416]}``; empty: ``data`` at the ``[net]`` channels/height/width), the
pixels as DarkNet takes them (RGB scaled to 0..1; the graph does no preprocessing).

Outputs, in cfg order: for each ``[yolo]`` and ``[region]`` layer, the **raw tensor it receives**
(NCHW ``(N, anchors*(5+classes), H, W)``, before the layer's own logistic/exp/softmax decoding),
named ``yolo_<index>`` / ``region_<index>``; then, when the last layer is neither, the last
layer's output (``(N, C)`` after a ``connected`` layer, NCHW otherwise), named ``<type>_<index>``.
The raw tensor is what both DarkNet and OpenCV decode: OpenCV's yolo/region layers return decoded,
thresholded (and for yolo NMS-filtered) detections ``(N*H*W*anchors, 5+classes)``, a
post-processing no compiled graph should bake in; DarkNet's own ``forward_yolo_layer`` output is
this tensor with the logistic applied to x, y, objectness and class entries (``region``: x, y,
objectness, and a softmax over classes when ``softmax=1``).

Invariants: the supported layer types are :data:`~.darknet_layers.SUPPORTED_LAYERS`, activations
:data:`~.darknet_layers.ACTIVATIONS`; any other type, or an option value the reader does not
implement, raises an :class:`~airflow_neo.local.errors.UnsupportedOperatorsError` subclass naming
the layer, its index and its cfg line, before any weight is read. Differences from OpenCV that a
model may hit (DarkNet is followed): a ``softmax`` over a spatial tensor covers all C*H*W values,
a ``connected`` layer's batch-norm arrays follow its weights. OpenCV 4.14 reads the activations
linear, leaky, relu, tanh, logistic, swish and mish; a cfg with another one (elu, selu, relu6,
hardtan, loggy) converts, but :func:`reference` raises NotVerifiable with OpenCV's reason.
"""

from __future__ import annotations

from pathlib import Path

from airflow_neo.local.archive import listing
from airflow_neo.local.convert import Converted, Source
from airflow_neo.local.convert.darknet_cfg import Layer, Shape, ShapeMismatch, layer_shapes, parse_cfg, read_weights
from airflow_neo.local.convert.darknet_layers import SUPPORTED_LAYERS, GraphBuilder, emit_layer, validate
from airflow_neo.local.errors import ModelArchiveError, ModelInputError, UnsupportedOperatorsError

__all__ = ["convert", "output_layers", "reference"]

OPSET = 13
DEFAULT_INPUT = "data"
DETECTION_LAYERS = ("yolo", "region")
OPENCV_INSTALL = 'pip install "opencv-python-headless<5"'


def reader_version() -> str:
    from airflow_neo import __version__

    return f"airflow-neo {__version__}"


def convert(source: Source) -> Converted:
    """Write ``source.work / "model.onnx"`` from the archive's cfg and weights."""
    net, layers = read_cfg(source.model_file)
    name, shape = input_of(source.data_input, net)
    at_cfg = Shape(*_cfg_chw(net, shape))
    try:
        cfg_shapes = layer_shapes(layers, at_cfg)
    except ShapeMismatch as err:
        raise ModelArchiveError(f"the layers of {source.model_file.name} do not fit its own [net] size "
                                f"{at_cfg.c}x{at_cfg.h}x{at_cfg.w} (CxHxW): {err}") from None
    weights_file = find_weights(source.model_file, source.model_dir)
    weights = read_weights(weights_file, layers, [at_cfg, *cfg_shapes[:-1]],
                           listing(source.model_dir))
    shapes = _shapes_for_input(layers, name, shape, at_cfg, cfg_shapes)
    model = build_onnx(layers, name, shape, shapes, weights)
    onnx_path = Path(source.work) / "model.onnx"
    import onnx

    onnx.save(model, str(onnx_path))
    outputs = ", ".join(f"{out.name} {_dims(out)}" for out in model.graph.output)
    source.log(f"DarkNet reader: {len(layers)} layers of {source.model_file.name} and {weights_file.name} "
               f"(version {'.'.join(map(str, weights.version))}, seen {weights.seen}) -> ONNX; outputs: {outputs}")
    return Converted(onnx_path, [name], versions={"darknet_reader": reader_version(), "onnx": onnx.__version__})


def read_cfg(path: Path) -> tuple[Layer, list[Layer]]:
    """The cfg's ``[net]`` and layers; an unsupported layer type fails here (all of them named), as
    does an option value or activation the reader does not implement."""
    data = Path(path).read_bytes()
    if b"\0" in data:
        raise ModelArchiveError(f"{Path(path).name} is a binary file; a DarkNet .cfg is text ([net], then one "
                                "[section] per layer)")
    text = data.decode("utf-8-sig", errors="replace")  # DarkNet reads bytes: comments in any encoding
    net, layers = parse_cfg(text, Path(path).name)
    unknown = [layer for layer in layers if layer.type not in SUPPORTED_LAYERS]
    if unknown:
        raise UnsupportedOperatorsError(
            "the DarkNet reader does not support " + "; ".join(layer.where for layer in unknown)
            + "; supported layer types: " + ", ".join(SUPPORTED_LAYERS),
            sorted({layer.type for layer in unknown}))
    for layer in layers:
        validate(layer)
    return net, layers


def input_of(data_input: dict, net: Layer) -> tuple[str, list[int]]:
    """The input's name and NCHW shape: DataInputConfig's one entry, or ``data`` at the [net] size."""
    channels = net.int("channels", 0)
    if not data_input:
        dims = [1, channels, net.int("height", 0), net.int("width", 0)]
        if min(dims) < 1:
            raise ModelInputError(f"{net.where} gives no channels/height/width; give the input shape in "
                                  'DataInputConfig, e.g. {"data": [1, 3, 416, 416]}')
        return DEFAULT_INPUT, dims
    if len(data_input) != 1:
        raise ModelInputError(f"DataInputConfig names {len(data_input)} inputs ({', '.join(map(str, data_input))}); "
                              'a DarkNet model has one image input: {"data": [N, C, H, W]}')
    (name, shape), = data_input.items()
    if not (isinstance(shape, (list, tuple)) and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape)):
        raise ModelInputError(f"DataInputConfig {name!r}: {shape!r} is not a DarkNet input shape; "
                              "allowed: four positive integers [N, C, H, W] (NCHW)")
    if channels and shape[1] != channels:
        raise ModelInputError(f"DataInputConfig {name!r}: {list(shape)} has C={shape[1]}, but {net.where} "
                              f"declares channels={channels}; allowed: [N, {channels}, H, W] (NCHW)")
    return str(name), list(shape)


def _cfg_chw(net: Layer, shape: list[int]) -> tuple[int, int, int]:
    """The size the weights were made for: the [net] section's, DataInputConfig's where it gives none."""
    return (net.int("channels", 0) or shape[1], net.int("height", 0) or shape[2], net.int("width", 0) or shape[3])


def _shapes_for_input(layers, name, shape, at_cfg: Shape, cfg_shapes: list[Shape]) -> list[Shape]:
    first = Shape(shape[1], shape[2], shape[3])
    if first == at_cfg:
        return cfg_shapes
    wanted = f"DataInputConfig {name!r}: {shape}"
    try:
        shapes = layer_shapes(layers, first)
    except ShapeMismatch as err:
        raise ModelInputError(f"{wanted}: {err}; the cfg's own size {at_cfg.h}x{at_cfg.w} (HxW) fits") from None
    for layer, before, now in zip(layers, [at_cfg, *cfg_shapes], [first, *shapes]):
        if layer.type == "connected" and before.size != now.size:
            raise ModelInputError(f"{wanted} gives {layer.where} {now.size} inputs; its weights take {before.size}: "
                                  f"allowed: H={at_cfg.h}, W={at_cfg.w} (the [net] size)")
    return shapes


def find_weights(cfg: Path, model_dir: Path) -> Path:
    """The one ``.weights`` file beside the cfg."""
    found = sorted(p for p in Path(cfg).parent.iterdir() if p.suffix.lower() == ".weights" and p.is_file()
                   and not p.name.startswith("."))
    if len(found) == 1:
        return found[0]
    what = "no .weights file" if not found else f"{len(found)} .weights files ({', '.join(p.name for p in found)})"
    raise ModelArchiveError(f"{what} beside {Path(cfg).name}; a DARKNET archive holds one .cfg and, in the same folder, "
                            f"exactly one .weights; the archive holds {listing(model_dir)}")



def output_layers(layers: list[Layer]) -> list[Layer]:
    """The layers whose tensors the graph returns (see the module docstring), in order."""
    chosen = [layer for layer in layers if layer.type in DETECTION_LAYERS]
    if layers[-1].type not in DETECTION_LAYERS:
        chosen.append(layers[-1])
    return chosen


def build_onnx(layers: list[Layer], name: str, shape: list[int], shapes: list[Shape], weights):
    from onnx import TensorProto, checker, helper

    builder = GraphBuilder(name)
    previous = Shape(shape[1], shape[2], shape[3])
    for layer, out_shape in zip(layers, shapes):
        builder.tensors.append(emit_layer(builder, layer, previous, shapes[:layer.index],
                                          weights.arrays.get(layer.index, {}), weights.transposed))
        previous = out_shape
    outputs = []
    for layer in output_layers(layers):
        out_name, out = f"{layer.type}_{layer.index}", shapes[layer.index]
        builder.nodes.append(helper.make_node("Identity", [builder.tensors[layer.index]], [out_name], name=out_name))
        dims = [shape[0], out.c] if out.flat else [shape[0], out.c, out.h, out.w]
        outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, dims))
    graph = helper.make_graph(builder.nodes, "darknet", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
                              outputs, builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="airflow-neo darknet")
    model.ir_version = 8
    checker.check_model(model)
    return model


def _dims(value) -> str:
    return "x".join(str(d.dim_value) for d in value.type.tensor_type.shape.dim)


# ----------------------------------------------------------------------------- reference


def reference(model_file: Path, metadata: dict, threads: int | None):
    """OpenCV's ``readNetFromDarknet`` on the cfg and weights, returning the graph's outputs."""
    from airflow_neo.local.references import NotVerifiable, Reference

    try:
        import cv2
    except ImportError:
        raise NotVerifiable(f"OpenCV is not installed ({OPENCV_INSTALL})") from None
    if not hasattr(getattr(cv2, "dnn", None), "readNetFromDarknet"):
        raise NotVerifiable(f"OpenCV {cv2.__version__} has no DarkNet reader (OpenCV 5 dropped it: {OPENCV_INSTALL})")
    model_file = Path(model_file)
    _, layers = read_cfg(model_file)
    try:
        net = cv2.dnn.readNetFromDarknet(str(model_file), str(find_weights(model_file, model_file.parent)))
    except cv2.error as err:  # e.g. an activation OpenCV does not read (elu, selu, relu6, hardtan, loggy)
        reason = next((line.split("error: ", 1)[-1] for line in str(err).splitlines() if "error:" in line), str(err))
        raise NotVerifiable(f"OpenCV {cv2.__version__} cannot read {model_file.name}: {reason.strip()}") from None
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)  # the plain convolution: Winograd's rounding is not the model's
    if threads:
        cv2.setNumThreads(int(threads))
    wanted = output_layers(layers)
    names = [_opencv_name(net, layer, layers) for layer in wanted]

    def run(inputs: dict) -> list:
        import numpy as np

        if len(inputs) != 1:
            raise ValueError(f"a DarkNet model takes one input; got {sorted(inputs)}")
        (array,) = inputs.values()
        net.setInput(np.ascontiguousarray(array, dtype=np.float32))
        results = net.forward(names)
        return [np.ascontiguousarray(out.transpose(0, 3, 1, 2)) if layer.type in DETECTION_LAYERS else np.asarray(out)
                for layer, out in zip(wanted, results)]

    return Reference(f"OpenCV {cv2.__version__} readNetFromDarknet", run, threads=threads or None)


def _opencv_name(net, layer: Layer, layers: list[Layer]) -> str:
    """OpenCV's name of the tensor matching ``layer``'s output: a yolo/region layer's NHWC permute of
    its input, otherwise the last OpenCV layer (the cfg's last layer and its activation)."""
    if layer.type in DETECTION_LAYERS:
        return f"permute_{layer.index}"
    return net.getLayerNames()[-1]
