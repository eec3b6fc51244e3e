"""Default CPU schedules for the kernels of a fused Relax module (no tuning, no measurement).

TVM 0.27's CPU pipeline lowers every operator to a serial, unvectorized loop nest. This package
gives each fused PrimFunc a deterministic schedule for the target's CPU (x86 SSE/AVX2/AVX-512,
AArch64 and ARMv7 NEON; the vector width comes from the target, so cross builds get the right
one): parallel outer loops, vectorized inner loops, register blocking and weight packing for
convolutions and matrix products, per-row schedules for softmax/normalisations, parallel
vectorized loops for element-wise tails.

Use (in the compile child, after ``relax.get_pipeline("zero")`` and any tuning, before
``tvm.compile``)::

    executable, summary = compile_with_default_schedules(mod, tvm_target, log=log)

(:func:`apply_default_schedules` alone returns the scheduled module and the full report.)

Modules: :mod:`.cpu` (target facts), :mod:`.facts` (block analysis), :mod:`.plan` (tile plans),
:mod:`.contraction`, :mod:`.reduction`, :mod:`.elementwise`, :mod:`.fallback` (the schedules),
:mod:`.rules` (dlight rule objects), :mod:`.apply` (the driver and its report).

Importing this package imports TVM: import it only where TVM is already loaded.
"""

from .apply import apply_default_schedules
from .build import compile_with_default_schedules, schedules_summary

__all__ = ["apply_default_schedules", "compile_with_default_schedules", "schedules_summary"]
