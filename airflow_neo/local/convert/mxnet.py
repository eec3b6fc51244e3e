"""MXNET: an MXNet 1.x symbol file (``*-symbol.json``) and its ``.params``, converted to ONNX
without MXNet (our own readers: :mod:`.mxnet_symbol` for the graph, :mod:`.mxnet_params` for the
weights; :mod:`.mxnet_ops` translates the operators).

The symbol's variables are parameters (saved in the ``.params`` file as ``arg:NAME``/``aux:NAME``,
or feeding a parameter slot such as a Convolution's weight), training labels (SoftmaxOutput's) or
model inputs. The inputs take DataInputConfig's shapes (NCHW, as Neo documents MXNet's); without
DataInputConfig a shape comes from the variable's ``__shape__`` attribute or the job fails asking
for DataInputConfig.

Invariants: only the nodes the heads depend on are translated; every unknown op type among them is
named in one :class:`UnsupportedOperatorsError`; the archive holds exactly one ``.params`` and it
holds every parameter the graph needs, else :class:`ModelArchiveError` naming the files; ONNX
initializers keep the MXNet parameter names; outputs follow ``heads``. :func:`reference` runs the
original files with MXNet itself: in this Python when it imports ``mxnet`` (MXNet 1.9 needs
numpy < 2, so usually not), else in the side Python ``$AIRFLOW_NEO_MXNET_PYTHON`` names, else the
job is "not verified".
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from airflow_neo.local.archive import is_junk, list_files, listing
from airflow_neo.local.convert import Converted, Source
from airflow_neo.local.convert.mxnet_params import ParamsFormatError, read_params, split_params
from airflow_neo.local.convert.mxnet_symbol import MxGraph, classify, load_symbol, needed_nodes
from airflow_neo.local.errors import (
    ModelArchiveError,
    ModelInputError,
    OperatorAttributeNotImplementedError,
    UnsupportedOperatorsError,
)

__all__ = ["SIDE_PYTHON_ENV", "convert", "find_params_file", "input_shapes", "reference", "to_onnx"]

#: the dtype of model inputs (MXNet's ``__dtype__`` flags; Neo compiles float32 models)
_INPUT_DTYPE_FLAGS = {"0": "float32", "1": "float64", "2": "float16"}
#: parameters past this size go to ``model.onnx.data`` beside the graph (protobuf's 2 GiB limit)
_EXTERNAL_DATA_BYTES = 1 << 30


def find_params_file(model_file: Path, model_dir: Path) -> Path:
    """The one ``.params`` of the archive; :class:`ModelArchiveError` naming the files otherwise."""
    found = [rel for rel in list_files(model_dir) if rel.lower().endswith(".params") and not is_junk(rel)]
    if len(found) == 1:
        return model_dir / found[0]
    what = "no .params file" if not found else f"{len(found)} .params files ({', '.join(found)})"
    raise ModelArchiveError(
        f"the MXNET model archive holds {what} for the symbol file {model_file.name}; it must hold exactly "
        f"one symbol file (*-symbol.json) and one parameter file (*.params, as HybridBlock.export writes "
        f"them); it holds {listing(model_dir)}")


def load_params(params_file: Path, model_dir: Path) -> dict[str, np.ndarray]:
    """``{name: array}`` of args and auxiliary states (prefixes removed)."""
    try:
        names, arrays = read_params(params_file)
    except ParamsFormatError as err:
        raise ModelArchiveError(f"{params_file.name} is not an MXNet parameter file: {err}; "
                                f"the archive holds {listing(model_dir)}") from None
    if not names and arrays:
        raise ModelArchiveError(f"{params_file.name} holds {len(arrays)} arrays without names; MXNET needs the "
                                "named parameters that HybridBlock.export or mx.nd.save(dict) writes")
    args, auxs = split_params(names, arrays)
    return {**args, **auxs}


def input_shapes(graph: MxGraph, data_input: dict) -> dict[str, list[int]]:
    """Each model input's shape, from DataInputConfig or the variable's ``__shape__``."""
    from airflow_neo.local.convert.mxnet_ops import ints

    if data_input:
        unknown = [name for name in data_input if name not in graph.inputs]
        missing = [name for name in graph.inputs if name not in data_input]
        if unknown or missing:
            raise ModelInputError(
                f"DataInputConfig names {sorted(data_input)}, but the MXNet symbol's inputs are {graph.inputs}"
                + (f" ({', '.join(missing)} without a shape)" if missing else "")
                + "; give each input's NCHW shape under its symbol name, e.g. {\"data\": [1, 3, 224, 224]}")
        return {name: [int(v) for v in data_input[name]] for name in graph.inputs}
    shapes = {}
    by_name = {node.name: node for node in graph.nodes if node.op == "null"}
    for name in graph.inputs:
        shape = ints(by_name[name], "__shape__")
        if not shape or any(dim <= 0 for dim in shape):
            raise ModelInputError(
                f"DataInputConfig is required for MXNet models: the symbol does not fix the shape of its input "
                f"{name!r}; give it as {{\"{name}\": [1, 3, 224, 224]}} (NCHW)")
        shapes[name] = shape
    return shapes


def to_onnx(graph: MxGraph, params: dict[str, np.ndarray], shapes: dict[str, list[int]], dtypes: dict | None = None):
    """The ONNX model of ``graph`` (classified) with ``params`` as initializers."""
    import onnx
    from onnx import helper, numpy_helper

    from airflow_neo.local.convert.mxnet_ops import OPSET, TRANSLATORS, Builder, fit_prelu_slopes

    order = needed_nodes(graph)
    unknown = sorted({graph.nodes[i].op for i in order if graph.nodes[i].op != "null"} - set(TRANSLATORS))
    if unknown:
        raise UnsupportedOperatorsError(
            f"the MXNet symbol uses operators the MXNET converter does not translate: {', '.join(unknown)}", unknown)
    builder = Builder(params)
    builder.taken.update(graph.inputs)
    builder.taken.update(graph.params)
    names: dict[tuple[int, int], str | None] = {}
    for index in order:
        node = graph.nodes[index]
        if node.op == "null":
            if node.name in graph.params:
                builder.initializers[node.name] = params[node.name]
            names[(index, 0)] = None if node.name in graph.labels else node.name
            continue
        ins = [names.get(entry) for entry in node.inputs]
        outs = TRANSLATORS[node.op](builder, node, [name for name in ins if name is not None])
        names.update({(index, k): out for k, out in enumerate(outs)})
    outputs = _outputs(graph, names, builder)
    used = {name for node in builder.nodes for name in node.input}  # a fixed gamma leaves the file's unused
    initializers = {name: array for name, array in builder.initializers.items() if name in used}
    dtypes = dtypes or {}
    elem = {name: helper.np_dtype_to_tensor_dtype(np.dtype(dtypes.get(name, "float32"))) for name in shapes}
    model = helper.make_model(
        helper.make_graph(
            builder.nodes, "mxnet",
            [helper.make_tensor_value_info(name, elem[name], shapes[name]) for name in graph.inputs],
            [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs],
            [numpy_helper.from_array(np.ascontiguousarray(array), name) for name, array in initializers.items()],
        ),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="airflow-neo mxnet converter")
    fit_prelu_slopes(model)
    return model


def _outputs(graph: MxGraph, names: dict, builder) -> list[str]:
    outputs: list[str] = []
    for node_index, out_index in graph.heads:
        node = graph.nodes[node_index]
        name = names.get((node_index, out_index))
        if name is None:
            raise OperatorAttributeNotImplementedError(
                f"the symbol's output {out_index} of {node.name!r} ({node.op}) is not an inference output the "
                "MXNET converter produces", [node.op])
        if name in outputs or name in builder.initializers or name in graph.inputs:
            name = builder.one("Identity", [name], f"{name}_output")
        outputs.append(name)
    return outputs


def _input_dtypes(graph: MxGraph) -> dict[str, str]:
    nodes = {node.name: node for node in graph.nodes if node.op == "null"}
    return {name: _INPUT_DTYPE_FLAGS.get(nodes[name].attrs.get("__dtype__", "0"), "float32") for name in graph.inputs}


def convert(source: Source) -> Converted:
    """Write ``source.work/model.onnx`` from the archive's symbol file and ``.params``."""
    try:
        import onnx
    except ImportError as err:
        from airflow_neo.local.convert import MissingExtra

        raise MissingExtra("the MXNET converter needs onnx (pip install onnx)") from err
    from airflow_neo import __version__

    graph = load_symbol(source.model_file, listing(source.model_dir))
    params_file = find_params_file(source.model_file, source.model_dir)
    params = load_params(params_file, source.model_dir)
    classify(graph, needed_nodes(graph), set(params))
    _check_params(graph, params, params_file, source)
    shapes = input_shapes(graph, source.data_input)
    model = to_onnx(graph, params, shapes, _input_dtypes(graph))
    path = Path(source.work) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    large = sum(array.nbytes for array in params.values()) > _EXTERNAL_DATA_BYTES
    onnx.save(model, str(path), save_as_external_data=large, location="model.onnx.data")
    ops = sorted({graph.nodes[i].op for i in needed_nodes(graph)} - {"null"})
    source.log(f"MXNet symbol {source.model_file.name}: {len(graph.nodes)} nodes ({', '.join(ops)}); "
               f"{params_file.name}: {len(params)} arrays; inputs {shapes}")
    return Converted(path, list(graph.inputs), {"mxnet_reader": f"airflow-neo {__version__}", "onnx": onnx.__version__})


def _check_params(graph: MxGraph, params: dict, params_file: Path, source: Source) -> None:
    missing = sorted(graph.params - set(params))
    named = set(source.data_input or {})
    # a variable that DataInputConfig leaves out, while every name it gives is an input, is a parameter
    # the file lacks (a wrongly named input is the ModelInputError of input_shapes)
    unresolved = [name for name in graph.inputs if named and named <= set(graph.inputs) and name not in named]
    if missing or unresolved:
        what = missing + unresolved
        raise ModelArchiveError(
            f"{params_file.name} lacks the argument(s) {', '.join(what)} that {source.model_file.name} needs"
            + (" (and DataInputConfig does not name them as inputs)" if unresolved else "")
            + f"; the archive holds {listing(source.model_dir)}")


#: a Python with MXNet 1.x (a side virtualenv: MXNet 1.9 needs numpy < 2) that the reference runs
#: :mod:`.mxnet_runner` in when the worker's own Python lacks MXNet
SIDE_PYTHON_ENV = "AIRFLOW_NEO_MXNET_PYTHON"


def reference(model_file: Path, metadata: dict, threads: int | None = None):
    """MXNet itself running the symbol and ``.params`` beside ``model_file``: in this Python when
    it imports mxnet, else in the Python that ``$AIRFLOW_NEO_MXNET_PYTHON`` names (one process per
    run); :class:`NotVerifiable` when neither has it."""
    from airflow_neo.local.convert import mxnet_runner
    from airflow_neo.local.references import NotVerifiable, Reference

    model_file = Path(model_file)
    params = [path for path in model_file.parent.rglob("*.params") if not is_junk(path.name)]
    if len(params) != 1:
        raise NotVerifiable(f"{len(params)} .params files beside {model_file.name}; the reference needs one")
    mx = mxnet_runner.import_mxnet(threads)
    if mx is not None:
        model = mxnet_runner.load(mx, model_file, params[0])
        return Reference(name=f"mxnet {mx.__version__}", run=lambda inputs: mxnet_runner.forward(mx, model, inputs),
                         threads=threads)
    side = os.environ.get(SIDE_PYTHON_ENV)
    if side and Path(side).is_file():
        return Reference(name=f"mxnet {_side_version(side)} ({side})",
                         run=lambda inputs: _run_side(side, model_file, params[0], inputs, threads), threads=threads,
                         not_timeable="each run starts a process in that Python: its time would be the start and "
                                      "the import of MXNet, not the model")
    raise NotVerifiable("mxnet is not installed in this Python (MXNet 1.9.1 needs numpy<1.24, the worker has numpy "
                        f"{np.__version__}): build a side virtualenv (bash scripts/mxnet_venv.sh, or python3.11 -m venv "
                        f"DIR && DIR/bin/pip install 'mxnet==1.9.1' 'numpy<1.24') and set {SIDE_PYTHON_ENV} to its "
                        "python")


def _side_version(python: str) -> str:
    """The version of the mxnet package installed for ``python`` (read from its metadata, without
    importing MXNet); ``?`` when it cannot be read."""
    import subprocess

    done = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('mxnet'))"],
                          capture_output=True, text=True, check=False, timeout=60)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "?"


def _run_side(python: str, symbol_file: Path, params_file: Path, inputs: dict, threads: int | None) -> list:
    """:mod:`.mxnet_runner` as a script in ``python``; the outputs in head order."""
    import subprocess
    import tempfile

    from airflow_neo.local.convert import mxnet_runner

    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with tempfile.TemporaryDirectory(prefix="mxnet-reference-") as tmp:
        inputs_file, outputs_file = Path(tmp, "inputs.npz"), Path(tmp, "outputs.npz")
        np.savez(inputs_file, **{name: np.asarray(value) for name, value in inputs.items()})
        done = subprocess.run([python, mxnet_runner.__file__, str(symbol_file), str(params_file), str(inputs_file),
                               str(outputs_file)], capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"the MXNet reference in {python} failed (exit {done.returncode}): {' | '.join(tail)}")
        with np.load(outputs_file) as saved:
            return [saved[f"out{index}"] for index in range(len(saved.files))]
