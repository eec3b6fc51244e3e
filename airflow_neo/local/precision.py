"""``precision_mode`` (Neo's CompilerOptions "FP16"/"FP32"): the compute precision of a local compile.

:func:`precision_for` reads the option and checks it against the resolved target (a
:class:`PrecisionPlan`); :func:`apply_precision` rewrites the imported Relax module for it, before
lowering (``schedules.lowering.lower``: legalization, fusion), with Relax's
``ToMixedPrecision``: convolutions and matrix products (the ops whose mixed-precision policy is
"always": conv1d/2d/3d and their transposes, matmul, attention) read float16 operands and
accumulate in float32 (``out_dtype="float32"``, :data:`ACCUMULATE_DTYPE`), and the elementwise,
pooling, reshaping and normalization ops between them ("follow" policy) run in float16; ops whose
policy is "never" (softmax, reductions such as mean/sum, einsum, ...) stay float32. BatchNorm is
decomposed into elementwise arithmetic first (``DecomposeOpsForInference``, which ``lower`` would
run anyway) so it runs in float16 too, instead of pinning its neighbours to float32. Calls that
``ToMixedPrecision`` cannot type (``call_tir`` kernels the importer wrote as TIR itself; ops with
scalar arguments such as ``clip``) are moved into private Relax functions for the pass, which keeps
them float32 with casts around them, and put back after (:func:`_wrap_isolated`).

Invariant: FP32 returns the module object it was given; FP16 keeps ``main``'s signature except for
the inputs the ``dtype`` option makes float16, and every dataflow binding stays in its block.

Values: ``precision_mode`` is a string, compared case-insensitively ("fp16" is "FP16"); absent
is "FP32", which changes nothing (the module is returned as is). Anything else is a
:class:`ModelInputError` naming the option, the value and the allowed values.

Targets (:func:`fp16_feature`): FP16 is compiled only where the hardware has float16
arithmetic, decided from the resolved TVM target (its triple, mcpu and mattr, as LLVM knows
them), never by device name: AArch64/ARM CPUs with ``fullfp16`` (ARMv8.2-A and later: Neoverse
N1, Cortex-A75/A55/A76 ...; ml_c6g, ml_m6g, qcs603, qcs605), x86 CPUs with ``avx512fp16``
(Sapphire Rapids and later: ``mcpu: sapphirerapids``), and GPU targets (CUDA from sm_53, the
first NVIDIA architecture with float16 arithmetic). A CPU without it is refused with
:class:`UnsupportedTargetError` naming the target, its CPU, the missing feature and the
TargetDevices and options that have it: LLVM would otherwise emulate each float16 operation in
float32 with conversions around it, slower than FP32 and no smaller in its arithmetic.

Inputs and outputs: with FP16 the artifact keeps the model's input and output dtypes (float32
inputs are cast to float16 inside the graph, outputs cast back to float32), unless the ``dtype``
option asks float16 for an input the model declares float32: that input then becomes float16 in
the artifact's signature (Neo's ``dtype`` is the input dtype; :meth:`PrecisionPlan.import_dtype`
hands the importer the option without those entries, and the report's ``inputs`` names them).
Without FP16, ``dtype: float16`` for a float32 input stays refused by the importer (models are
not cast).

Verification: FP16 outputs are compared with the source framework's float32 outputs within
:data:`FP16_RTOL` (relative to the output's largest magnitude; a graph with 8-bit tensors keeps
the larger quantized default) unless ``[neo] verify_rtol`` says otherwise
(:meth:`PrecisionPlan.verify_rtol`). TVM is imported inside functions only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from airflow_neo.local.errors import ModelInputError, UnsupportedTargetError

__all__ = [
    "ACCUMULATE_DTYPE",
    "FP16_RTOL",
    "PRECISION_MODES",
    "PrecisionPlan",
    "apply_precision",
    "apply_to_imported",
    "census",
    "fp16_feature",
    "precision_for",
]

PRECISION_MODES = ("FP32", "FP16")
#: the dtype convolutions and matrix products accumulate (and return) in under FP16
ACCUMULATE_DTYPE = "float32"
#: relative tolerance (of the output's largest |reference|) of FP16 outputs against the float32
#: reference when the caller gives none. Measured (scripts/fp16_error.py, 5 random inputs each; the
#: same graphs verified on ml_c6g under qemu agree): worst |fp16 - fp32| / max|fp32| with float32
#: accumulation 1.2e-3 (CNN), 7.3e-4 (two MobileNetV2 blocks), 2.1e-4 (transformer block; softmax
#: and reductions stay float32); with float16 accumulation 4.6e-3, 8.7e-4, 9.0e-4. float16's unit
#: roundoff is 4.9e-4; 1e-2 leaves ~9x over the worst measured and still fails a wrong kernel,
#: which misses by a sizeable part of the output's range.
FP16_RTOL = 1e-2
#: CUDA architectures before sm_53 have no float16 arithmetic
CUDA_MIN_FP16_ARCH = 53
#: the LLVM feature that gives float16 arithmetic, per CPU architecture (by the triple's first part)
_CPU_FEATURES = (("aarch64", "fullfp16"), ("arm", "fullfp16"), ("thumb", "fullfp16"),
                 ("x86_64", "avx512fp16"), ("i686", "avx512fp16"), ("i386", "avx512fp16"))
_HINTS = {
    "fullfp16": "ARMv8.2-A and later CPUs have it (e.g. mcpu neoverse-n1, cortex-a75, cortex-a55, cortex-a76); "
                "where the device's CPU has it but its table row does not say so, add CompilerOptions mattr ['+fullfp16']",
    "avx512fp16": "Intel Sapphire Rapids and later have it (CompilerOptions mcpu 'sapphirerapids', or mattr ['+avx512fp16'] "
                  "where the CPU has it)",
}
_GPU_KINDS = ("cuda", "rocm", "vulkan", "metal", "opencl", "webgpu")

Log = Callable[[str], Any]


@dataclass(frozen=True)
class PrecisionPlan:
    """What a compile does for ``precision_mode``: ``mode`` "FP32" (nothing) or "FP16"."""

    mode: str = "FP32"
    feature: str | None = None  #: what gives the target float16 arithmetic ("fullfp16", "avx512fp16", "cuda sm_75")
    fp16_inputs: tuple[str, ...] | None = ()  #: inputs the dtype option makes float16; None: every float32 input
    accumulate: str = ACCUMULATE_DTYPE
    dtype_option: Any = field(default=None, compare=False)  #: the job's ``dtype`` option as given

    @property
    def fp16(self) -> bool:
        return self.mode == "FP16"

    def import_dtype(self, dtype_option):
        """The ``dtype`` option for the importer: under FP16 without its float16 entries (those inputs
        are float32 in the model and become float16 in :func:`apply_precision`)."""
        if not self.fp16 or dtype_option is None:
            return dtype_option
        if isinstance(dtype_option, dict):
            kept = {name: dtype for name, dtype in dtype_option.items() if dtype != "float16"}
            return kept or None
        return None if dtype_option == "float16" else dtype_option

    def with_tolerance(self, report: dict, given: float | None) -> dict:
        """``report`` with, under FP16, the verification's tolerance and where it came from."""
        if not self.fp16:
            return report
        if given is not None:
            source = "[neo] verify_rtol"
        elif report.get("quantized"):
            source = "FP16 on a quantized graph: the quantized default (airflow_neo.local.verify.QUANTIZED_RTOL)"
        else:
            source = "FP16 default (airflow_neo.local.precision.FP16_RTOL)"
        return {**report, "verify_rtol": self.verify_rtol(given, report), "verify_rtol_source": source}

    def verify_rtol(self, given: float | None, report: dict | None = None) -> float | None:
        """The verification's relative tolerance: the caller's, else under FP16 :data:`FP16_RTOL`, or
        the larger quantized default when the report (:func:`apply_precision`'s) says the graph holds
        8-bit tensors (a rounding tie one step apart moves later layers more than float16 does)."""
        if given is not None or not self.fp16:
            return given
        if report and report.get("quantized"):
            from airflow_neo.local.verify import QUANTIZED_RTOL

            return max(FP16_RTOL, QUANTIZED_RTOL)
        return FP16_RTOL


def precision_for(options: dict, resolved_target, framework: str | None = None) -> PrecisionPlan:
    """The plan for CompilerOptions ``options`` (``precision_mode``, ``dtype``) on ``resolved_target``
    (a :class:`~airflow_neo.local.targets.ResolvedTarget`: ``target`` is the TVM target dict).

    :raises ModelInputError: ``precision_mode`` is not "FP16"/"FP32" (any case), or FP16 for XGBOOST
        (tree ensembles are compiled by tl2cgen in the model's own dtype).
    :raises UnsupportedTargetError: FP16 on a CPU without float16 arithmetic, or a CUDA arch before sm_53.
    """
    value = (options or {}).get("precision_mode")
    if value is None:
        return PrecisionPlan()
    if not isinstance(value, str) or value.upper() not in PRECISION_MODES:
        raise ModelInputError(
            f"CompilerOptions precision_mode {value!r} is not supported; use one of {', '.join(map(repr, PRECISION_MODES))} "
            "(case-insensitive; absent means 'FP32')"
        )
    if value.upper() == "FP32":
        return PrecisionPlan()
    if framework == "XGBOOST":
        raise ModelInputError(
            f"CompilerOptions precision_mode {value!r} does not apply to XGBOOST models (tl2cgen compiles the trees "
            "in the model's own dtype); drop precision_mode or give 'FP32'"
        )
    dtype_option = (options or {}).get("dtype")
    return PrecisionPlan("FP16", feature=fp16_feature(resolved_target), fp16_inputs=_fp16_inputs(dtype_option),
                         dtype_option=dtype_option)


def _fp16_inputs(dtype_option) -> tuple[str, ...] | None:
    if isinstance(dtype_option, dict):
        return tuple(name for name, dtype in dtype_option.items() if dtype == "float16")
    return None if dtype_option == "float16" else ()


def fp16_feature(resolved_target) -> str:
    """What gives ``resolved_target`` float16 arithmetic ("fullfp16", "avx512fp16", "cuda sm_75" ...);
    :class:`UnsupportedTargetError` saying what is missing and which targets have it, when nothing does."""
    target = dict(resolved_target.target)
    kind = str(target.get("kind", "llvm"))
    if kind in _GPU_KINDS:
        return _gpu_feature(resolved_target, target, kind)
    if kind != "llvm":
        raise UnsupportedTargetError(
            f"precision_mode FP16 is not supported for {resolved_target.source} (TVM target kind {kind})")
    from tvm.target import Target, codegen

    triple = str(target.get("mtriple", ""))
    feature = next((name for prefix, name in _CPU_FEATURES if triple.startswith(prefix)), None)
    cpu = target.get("mcpu", "generic")
    if feature and codegen.llvm_cpu_has_features(feature, Target(target)):
        return feature
    mattr = f", mattr {list(target['mattr'])}" if target.get("mattr") else ""
    where = f"{resolved_target.source} ({triple}, mcpu {cpu}{mattr})"
    if feature is None:
        raise UnsupportedTargetError(
            f"precision_mode FP16 is not supported for {where}: no float16 arithmetic known for this CPU family")
    devices = _devices_with(feature, triple)
    raise UnsupportedTargetError(
        f"precision_mode FP16 needs float16 arithmetic, and the CPU of {where} lacks the LLVM feature {feature!r}; "
        f"{_HINTS[feature]}"
        + (f"; TargetDevices with it: {', '.join(devices)}" if devices else "")
        + ". Or compile with precision_mode FP32 (the default)"
    )


def _gpu_feature(resolved_target, target: dict, kind: str) -> str:
    arch = str(target.get("arch", ""))
    match = re.fullmatch(r"sm_(\d+)[a-z]?", arch)
    if kind == "cuda" and match and int(match.group(1)) < CUDA_MIN_FP16_ARCH:
        raise UnsupportedTargetError(
            f"precision_mode FP16 needs float16 arithmetic, which {resolved_target.source} ({arch}) lacks: "
            f"NVIDIA GPUs have it from sm_{CUDA_MIN_FP16_ARCH} (Jetson Nano/TX1: sm_53, V100: sm_70, T4: sm_75); "
            "compile with precision_mode FP32"
        )
    return f"{kind} {arch}".strip()


def _devices_with(feature: str, triple: str) -> list[str]:
    """The TargetDevices of the table whose CPU (same architecture) has ``feature``, by LLVM."""
    from tvm.target import Target, codegen

    from airflow_neo.local.targets import DEVICE_TARGETS

    found = []
    for device, row in DEVICE_TARGETS.items():
        if row.triple.split("-")[0] != triple.split("-")[0]:
            continue
        probe = {"kind": "llvm", "mtriple": row.triple, "mcpu": row.mcpu, **({"mattr": list(row.mattr)} if row.mattr else {})}
        if codegen.llvm_cpu_has_features(feature, Target(probe)):
            found.append(device)
    return sorted(found)


# --------------------------------------------------------------------------------------------
# the rewrite


def apply_precision(mod, plan: PrecisionPlan, tvm_target=None, log: Log = print, *,
                    input_names: list[str] | None = None):
    """``(module, report)``: ``mod`` (imported, not yet lowered) rewritten for ``plan``.

    FP32: ``mod`` unchanged and ``{"mode": "FP32"}``. FP16: inference ops decomposed, then
    ``ToMixedPrecision(out_dtype=plan.accumulate)``; the report says which ops run in float16 (by
    op name, with counts), which stayed float32, the casts inserted (``weights``: of constants,
    folded at build time; ``runtime``: of activations), the accumulation dtype, the inputs made
    float16 (``input_names``: the model's input names in ``main``'s parameter order), and the
    feature that runs it. ``tvm_target`` is only named in the log.

    :raises ModelInputError: the ``dtype`` option asks float16 for an input that is not float32.
    """
    if not plan.fp16:
        return mod, {"mode": "FP32"}
    from tvm import relax

    chosen = _fp16_input_names(mod, plan, input_names)
    inputs = list(chosen)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    mod = relax.transform.ConvertToDataflow()(mod)
    mod, wrapped = _wrap_isolated(mod)
    mod = relax.transform.ToMixedPrecision(out_dtype=plan.accumulate, fp16_input_names=list(chosen.values()) or None)(mod)
    mod = _unwrap_isolated(mod, wrapped)
    report = {"mode": "FP16", "accumulate": plan.accumulate, "feature": plan.feature, "inputs": inputs,
              **census(mod)}
    where = f" for {tvm_target.attrs['mcpu']}" if tvm_target is not None and "mcpu" in tvm_target.attrs else ""
    fp16_ops = ", ".join(f"{name} x{count}" for name, count in report["fp16_ops"].items()) or "none"
    log(f"precision FP16{where} ({plan.feature}): float16 ops {fp16_ops}; accumulate {plan.accumulate}; "
        f"casts {report['casts']['weights']} of weights, {report['casts']['runtime']} at run time"
        + (f"; float32 ops {', '.join(report['fp32_ops'])}" if report["fp32_ops"] else "")
        + (f"; float16 inputs {', '.join(inputs)}" if inputs else ""))
    return mod, report


def apply_to_imported(imported, plan: PrecisionPlan, resolved_target, log: Log = print) -> dict:
    """:func:`apply_precision` on an importer's result (a ``frontend_common.Imported``), in place: its
    ``mod`` rewritten and the dtype of the inputs made float16 updated; returns the report."""
    tvm_target = None
    if plan.fp16:
        import tvm

        tvm_target = tvm.target.Target(resolved_target.target)
    imported.mod, report = apply_precision(imported.mod, plan, tvm_target, log,
                                           input_names=[spec.name for spec in imported.inputs])
    for spec in imported.inputs:
        if spec.name in report.get("inputs", ()):
            spec.dtype = "float16"
    return report


def _call_tir_op():
    import tvm

    return tvm.ir.Op.get("relax.call_tir")


#: Relax ops that call a kernel or packed function given as an argument (a TIR function, an
#: ExternFunc): ``ToMixedPrecision`` cannot type their arguments.
_KERNEL_CALLS = ("relax.call_tir", "relax.call_pure_packed", "relax.call_dps_packed", "relax.call_inplace_packed")


def _isolated(call) -> bool:
    """Whether ``ToMixedPrecision`` cannot type ``call``: a call of a kernel or packed function
    (``call_tir``, ``call_pure_packed`` ...: the function argument), or a call with a scalar
    (PrimType) argument, such as Clip's bounds."""
    import tvm

    if not isinstance(call.op, tvm.ir.Op):
        return False
    return str(call.op.name) in _KERNEL_CALLS or any(type(getattr(arg, "ty", None)).__name__ == "PrimType"
                                                      for arg in call.args)


def _wrap_isolated(mod):
    """``mod`` with each call that :func:`_isolated` picks (a kernel the importer wrote as TIR itself:
    the ONNX frontend's Clip with tensor bounds, Pad, Tile, Resize, Einsum ...; an op with scalar
    arguments: ``clip``) moved into a private Relax function of its own, and {wrapper: (op, args
    template, parameters, attrs, type args)} to undo it. ``ToMixedPrecision`` keeps a call of a
    Relax function in float32 with casts around it: such an op then runs as written, in float32."""
    from tvm import relax

    call_tir = _call_tir_op()
    wrapped: dict = {}

    @relax.expr_functor.mutator
    class Wrap(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not _isolated(call):
                return call
            tensors = [arg for arg in _leaves(call.args) if isinstance(arg, relax.Var)]
            params = [relax.Var(f"arg{index}", arg.ty) for index, arg in enumerate(tensors)]
            template = _substitute(call.args, dict(zip(tensors, params)))
            builder = relax.BlockBuilder()
            with builder.function("wrapper", params, private=True):
                builder.emit_func_output(builder.emit(relax.Call(call.op, template, call.attrs, call.ty_args)))
            name = call.args[0].name_hint if call.op.same_as(call_tir) else str(call.op.name).removeprefix("relax.")
            wrapper = self.builder_.add_func(builder.get()["wrapper"], f"fp32_{name}")
            wrapped[wrapper] = (call.op, template, params, call.attrs, call.ty_args)
            return relax.Call(wrapper, tensors)

        def run(self):
            for gvar, func in list(self.builder_.get().functions.items()):
                if isinstance(func, relax.Function):
                    self.builder_.update_func(gvar, self.visit_expr(func))
            return self.builder_.get()

    if not any(_calls(func, _isolated)
               for func in mod.functions.values() if isinstance(func, relax.Function)):
        return mod, wrapped
    return Wrap(mod).run(), wrapped


def _leaves(args) -> list:
    from tvm import relax

    found = []
    for arg in args:
        found.extend(_leaves(arg.fields) if isinstance(arg, relax.Tuple) else [arg])
    return found


def _substitute(args, mapping: dict) -> list:
    from tvm import relax

    result = []
    for arg in args:
        if isinstance(arg, relax.Tuple):
            result.append(relax.Tuple(_substitute(arg.fields, mapping)))
        else:
            result.append(next((new for old, new in mapping.items() if old.same_as(arg)), arg))
    return result


def _unwrap_isolated(mod, wrapped: dict):
    """Undo :func:`_wrap_isolated`: each wrapper's call back to its op on the wrapper's arguments (the
    binding stays in its dataflow block), the wrappers removed."""
    if not wrapped:
        return mod
    from tvm import relax

    @relax.expr_functor.mutator
    class Unwrap(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            for wrapper, (op, template, params, attrs, ty_args) in wrapped.items():
                if call.op.same_as(wrapper):
                    return relax.Call(op, _substitute(template, dict(zip(params, call.args))), attrs, ty_args)
            return call

        def run(self):
            for gvar, func in list(self.builder_.get().functions.items()):
                if isinstance(func, relax.Function) and not any(gvar.same_as(w) for w in wrapped):
                    self.builder_.update_func(gvar, self.visit_expr(func))
            result = self.builder_.get()
            for wrapper in wrapped:
                result = _without(result, wrapper)
            return result

    return Unwrap(mod).run()


def _without(mod, gvar):
    import tvm

    return tvm.IRModule({key: func for key, func in mod.functions.items() if not key.same_as(gvar)}, attrs=mod.attrs)


def _calls(func, predicate) -> bool:
    from tvm import relax

    found = []
    def visit(expr):
        if isinstance(expr, relax.Call) and predicate(expr):
            found.append(expr)

    relax.analysis.post_order_visit(func, visit)
    return bool(found)


def _fp16_input_names(mod, plan: PrecisionPlan, input_names: list[str] | None) -> dict[str, str]:
    """{model input name: ``main`` parameter name} of the inputs the dtype option makes float16 (each
    must be float32 in the model). ``input_names``: the model's input names in parameter order
    (the importer's; parameter names may be sanitized), else the parameter names."""
    params = list(mod["main"].params)
    names = list(input_names) if input_names and len(input_names) == len(params) else [str(p.name) for p in params]
    by_name = dict(zip(names, params))
    wanted = names if plan.fp16_inputs is None else list(plan.fp16_inputs)
    chosen = {}
    for name in wanted:
        dtype = _dtype_of(by_name[name]) if name in by_name else None
        if dtype == "float32":
            chosen[name] = str(by_name[name].name)
        elif plan.fp16_inputs is not None:  # named explicitly: it must be a float32 input
            raise ModelInputError(
                f"CompilerOptions dtype asks float16 for input {name!r}, which the model declares "
                f"{dtype or 'not at all'}; with precision_mode FP16 only float32 inputs can be made float16 "
                f"(the model's inputs: {', '.join(f'{n} {_dtype_of(p)}' for n, p in by_name.items())})"
            )
    return chosen


def _dtype_of(var) -> str | None:
    ty = getattr(var, "ty", None)
    dtype = getattr(ty, "dtype", None)
    return str(dtype) if dtype else None


def census(mod) -> dict:
    """Relax ops of every function in ``mod`` by the float dtype they compute in: ``fp16_ops`` (a
    float16 operand or result: conv2d/matmul reading float16 and accumulating in float32 count
    here), ``fp32_ops`` (float32 only) ({op name: count}, casts excluded), and ``casts``
    ({"weights": casts of constants, "runtime": the others}), and ``quantized`` (an op reads or
    returns an 8-bit integer tensor)."""
    import tvm
    from tvm import relax

    fp16: dict[str, int] = {}
    fp32: dict[str, int] = {}
    casts = {"weights": 0, "runtime": 0}
    eight_bit = []

    def visit(expr):
        if not (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)):
            return
        name = str(expr.op.name).removeprefix("relax.")
        if name == "astype":
            casts["weights" if isinstance(expr.args[0], tvm.ir.expr.Constant) else "runtime"] += 1
            return
        dtypes = {_dtype_of(expr)} | {_dtype_of(arg) for arg in expr.args}
        if dtypes & {"int8", "uint8"}:
            eight_bit.append(name)
        bucket = fp16 if "float16" in dtypes else fp32 if "float32" in dtypes else None
        if bucket is not None:
            bucket[name] = bucket.get(name, 0) + 1

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return {"fp16_ops": dict(sorted(fp16.items())), "fp32_ops": dict(sorted(fp32.items())), "casts": casts,
            "quantized": bool(eight_bit)}
