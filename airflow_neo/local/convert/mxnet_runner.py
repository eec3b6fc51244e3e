"""MXNet 1.x itself running a symbol file and its ``.params`` (inference): the MXNET reference.

Standalone on purpose (standard library, numpy and mxnet only; no airflow_neo import), so that it
also runs as a script in a separate virtualenv that has MXNet (MXNet 1.9.1 needs numpy < 2)::

    python mxnet_runner.py SYMBOL.json PARAMS.params INPUTS.npz OUTPUTS.npz

writes the outputs as ``out0``, ``out1``, ... in the symbol's head order.

Invariants: ``forward`` binds with ``grad_req="null"`` and runs ``is_train=False`` (running
statistics, no dropout); variables that are neither inputs nor saved (a SoftmaxOutput's label) are
bound to zeros of their inferred shape; ``import_mxnet`` returns None, never raises, when MXNet
cannot be imported here.
"""

from __future__ import annotations

import os
import sys


def import_mxnet(threads: int | None = None):
    """The ``mxnet`` module, or None when it does not import (absent, or built for another numpy).
    ``threads`` pins OpenMP's thread count when MXNet is not loaded yet."""
    if threads and "mxnet" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", str(threads))
    try:
        import mxnet
    except Exception:  # noqa: BLE001 - ImportError, or numpy 2's AttributeError inside mxnet
        return None
    return mxnet


def load(mx, symbol_file, params_file):
    """``(symbol, args, auxs)`` of the saved model."""
    symbol = mx.sym.load(str(symbol_file))
    saved = mx.nd.load(str(params_file))
    args, auxs = {}, {}
    for name, array in saved.items():
        kind, sep, rest = name.partition(":")
        (auxs if sep and kind == "aux" else args)[rest if sep and kind in ("arg", "aux") else name] = array
    return symbol, args, auxs


def forward(mx, model, inputs: dict) -> list:
    """The outputs (numpy arrays, head order) for ``inputs`` ({input name: numpy array})."""
    import numpy as np

    symbol, args, auxs = model
    arg_shapes, _, _ = symbol.infer_shape_partial(**{name: np.shape(value) for name, value in inputs.items()})
    bound = {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name in inputs:
            value = np.asarray(inputs[name])
            bound[name] = mx.nd.array(value, dtype=value.dtype)
        elif name in args:
            bound[name] = args[name]
        else:
            bound[name] = mx.nd.zeros(shape)
    executor = symbol.bind(mx.cpu(), bound, aux_states={name: auxs[name] for name in symbol.list_auxiliary_states()},
                           grad_req="null")
    return [output.asnumpy() for output in executor.forward(is_train=False)]


def main(argv: list[str]) -> int:
    import numpy as np

    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    symbol_file, params_file, inputs_file, outputs_file = argv
    mx = import_mxnet()
    if mx is None:
        print("mxnet does not import in this Python", file=sys.stderr)
        return 3
    with np.load(inputs_file) as saved:
        inputs = {name: saved[name] for name in saved.files}
    outputs = forward(mx, load(mx, symbol_file, params_file), inputs)
    np.savez(outputs_file, **{f"out{index}": output for index, output in enumerate(outputs)})
    return 0


if __name__ == "__main__":
    # run as a script, this file's folder leads sys.path, where the converter's own mxnet.py would
    # shadow the mxnet package
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _here]
    sys.exit(main(sys.argv[1:]))
