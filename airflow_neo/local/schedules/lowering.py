"""The Relax lowering every local compile, tuning run and pack build shares.

Invariant: :func:`lower` is the only way a model reaches the schedules (``compiler._build``,
``scripts/build_tuning_pack.py``), so the kernels, and with them the workload keys the tuning
database and the pack are keyed by, are the same everywhere.
"""

from __future__ import annotations

from .fastmath import FastMath


def lower(mod, target):
    """Inference ops decomposed, float32 transcendental functions made vectorizable (CPU targets),
    then Relax's ``zero`` pipeline (legalize, fuse): the fused module the schedules work on."""
    from tvm import relax

    mod = relax.transform.DecomposeOpsForInference()(mod)
    if target.kind.name == "llvm":
        mod = FastMath()(mod)
    with target:
        return relax.get_pipeline("zero")(mod)
