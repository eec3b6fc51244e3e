"""Vectorizable transcendental functions: exp, sigmoid, erf, tanh and softmax on float32.

TVM lowers ``exp``/``erf``/``tanh`` to LLVM intrinsics that LLVM turns into scalar libm calls
(``expf``, ``erff``, ``tanhf``): a loop that calls one is never vectorized, so a fused epilogue with
SiLU (EfficientNet, MixNet), GELU (ConvNeXt, BERT) or a softmax (every attention layer) runs one
element at a time. This Relax pass replaces those operators, before legalization, by TOPI's
polynomial/rational approximations (``topi.fast_exp``, ``fast_erf``, ``fast_tanh``,
``nn.fast_softmax``), which are plain arithmetic and vectorize; ``sigmoid`` becomes
``1 / (1 + fast_exp(-x))``.

Invariants:

* float32 tensors only; other dtypes keep the exact operators.
* Accuracy: the approximations agree with numpy within a few float32 ulps over the range real
  activations take (``tests/local/schedules/test_fastmath.py`` bounds it: relative 2e-6 for exp
  and sigmoid, absolute 2e-6 for erf and tanh), far inside the 1e-4 the artifacts are held to.
* Runs on the Relax module before ``relax.get_pipeline("zero")``; the replaced calls become
  ordinary element-wise PrimFuncs that fuse into their neighbours as before.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, topi
from tvm.relax import Call, Expr, PyExprMutator, expr_functor


def _float32(call: Call) -> bool:
    if not call.args:
        return False
    return str(getattr(getattr(call.args[0], "ty", None), "dtype", "")) == "float32"


def _fast_sigmoid(x: te.Tensor) -> te.Tensor:
    exp = topi.fast_exp(topi.negative(x))
    return te.compute(x.shape, lambda *i: tvm.tirx.const(1.0, "float32") / (tvm.tirx.const(1.0, "float32") + exp(*i)),
                      name="fast_sigmoid", tag="elemwise")


@expr_functor.mutator
class _FastMath(PyExprMutator):
    def visit_call_(self, call: Call) -> Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or not _float32(call):
            return call
        name = call.op.name
        if name == "relax.exp":
            return self.builder_.call_te(topi.fast_exp, call.args[0], primfunc_name_hint="fast_exp")
        if name == "relax.sigmoid":
            return self.builder_.call_te(_fast_sigmoid, call.args[0], primfunc_name_hint="fast_sigmoid")
        if name == "relax.erf":
            return self.builder_.call_te(topi.fast_erf, call.args[0], primfunc_name_hint="fast_erf")
        if name == "relax.tanh":
            return self.builder_.call_te(topi.fast_tanh, call.args[0], primfunc_name_hint="fast_tanh")
        if name == "relax.nn.softmax":
            return self.builder_.call_te(topi.nn.fast_softmax, call.args[0], int(call.attrs.axis),
                                         primfunc_name_hint="fast_softmax")
        return call


@tvm.transform.module_pass(opt_level=0, name="AirflowNeoFastMath")
class FastMath:
    """Replace float32 exp / sigmoid / erf / tanh / softmax by vectorizable approximations."""

    def transform_module(self, mod, ctx):
        mutator = _FastMath(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gvar, mutator.visit_expr(func))
        return mutator.builder_.get()
