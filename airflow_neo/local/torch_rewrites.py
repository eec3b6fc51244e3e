"""Rewrites of a ``torch.export`` program that TVM's ``from_exported_program`` cannot take as given.

Two classes of graphs, each fixed for the whole class:

* **fused inference fast paths** (:data:`FAST_PATH_OPS`): ``nn.MultiheadAttention`` and
  ``nn.TransformerEncoderLayer`` in eval mode under ``no_grad`` call one fused kernel
  (``aten::_native_multi_head_attention``, ``aten::_transformer_encoder_layer_fwd``) that a trace
  records and that has no decomposition in PyTorch; here each gets one, written with the ops the
  module's slow path uses (linear, softmax, matmul, layer norm), so that
  ``program.run_decompositions`` lowers it to core ATen;
* **legacy empty concatenation inputs**: ``torch.cat`` skips 1-D tensors of shape ``(0,)`` next to
  tensors of another rank (transformers' key/value caches start as ``torch.tensor([])``); TVM's
  ``concat`` refuses mixed ranks, so those inputs are dropped from the ``cat`` (same result).

Invariants: the rewritten program computes what the original computes (tests compare both with
torch); nothing here imports TVM; torch is imported inside the functions only.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["FAST_PATH_OPS", "rewrite_program"]

#: The fused fast-path operators that get a decomposition here (TorchScript names).
FAST_PATH_OPS = ("aten::_native_multi_head_attention", "aten::_transformer_encoder_layer_fwd")


def _attention(query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias, mask=None,
               need_weights=True, average_attn_weights=True, mask_type=None):
    """``aten::_native_multi_head_attention`` (batch-first ``[B, L, E]``, or unbatched ``[L, E]``)."""
    import torch

    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
    batch, target, source = query.shape[0], query.shape[1], key.shape[1]
    head_dim = embed_dim // num_head
    w_q, w_k, w_v = qkv_weight.chunk(3, dim=0)
    b_q, b_k, b_v = qkv_bias.chunk(3, dim=0)

    def heads(x, weight, bias, length):
        return torch.nn.functional.linear(x, weight, bias).reshape(batch, length, num_head, head_dim).transpose(1, 2)

    q = heads(query, w_q, b_q, target)
    k = heads(key, w_k, b_k, source)
    v = heads(value, w_v, b_v, source)
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(head_dim)
    if mask is not None:
        if mask_type == 1 or (mask_type is None and mask.dim() == 2 and tuple(mask.shape) == (batch, source)):
            mask = mask.reshape(batch, 1, 1, source)  # key padding mask
        scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = torch.softmax(scores, dim=-1)
    out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, target, embed_dim)
    out = torch.nn.functional.linear(out, proj_weight, proj_bias)
    if need_weights:
        attn = weights.mean(dim=1) if average_attn_weights else weights
    else:
        attn = torch.zeros(0, dtype=out.dtype)
    if unbatched:
        out = out.squeeze(0)
        attn = attn.squeeze(0) if need_weights else attn
    return out, attn


def _encoder_layer(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu, norm_first,
                   eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1, ffn_weight_2,
                   ffn_bias_2, mask=None, mask_type=None):
    """``aten::_transformer_encoder_layer_fwd``: one ``nn.TransformerEncoderLayer`` (no dropout)."""
    import torch

    functional = torch.nn.functional

    def attend(x):
        return _attention(x, x, x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias,
                          mask, False, False, mask_type)[0]

    def feed_forward(x):
        hidden = functional.linear(x, ffn_weight_1, ffn_bias_1)
        hidden = functional.gelu(hidden) if use_gelu else functional.relu(hidden)
        return functional.linear(hidden, ffn_weight_2, ffn_bias_2)

    def norm1(x):
        return functional.layer_norm(x, (embed_dim,), norm_weight_1, norm_bias_1, eps)

    def norm2(x):
        return functional.layer_norm(x, (embed_dim,), norm_weight_2, norm_bias_2, eps)

    if norm_first:
        x = src + attend(norm1(src))
        return x + feed_forward(norm2(x))
    x = norm1(src + attend(src))
    return norm2(x + feed_forward(x))


def _decompositions(torch) -> dict:
    return {
        torch.ops.aten._native_multi_head_attention.default: _attention,
        torch.ops.aten._transformer_encoder_layer_fwd.default: _encoder_layer,
    }


def _drop_empty_cat_inputs(program) -> int:
    """Drop 1-D ``(0,)`` inputs of ``aten.cat`` that torch skips next to tensors of another rank."""
    import torch

    def shape(node) -> tuple | None:
        value = node.meta.get("val") if hasattr(node, "meta") else None
        return tuple(value.shape) if isinstance(value, torch.Tensor) else None

    dropped = 0
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.cat.default:
            continue
        tensors = list(node.args[0])
        kept = [t for t in tensors if shape(t) != (0,)]
        if kept and len(kept) < len(tensors) and all(shape(t) is not None and len(shape(t)) != 1 for t in kept):
            node.args = (kept, *node.args[1:])
            dropped += len(tensors) - len(kept)
    if dropped:
        program.graph.eliminate_dead_code()
        program.graph_module.recompile()
    return dropped


def rewrite_program(program) -> tuple[Any, dict]:
    """``(program decomposed to core ATen with the fast-path decompositions, what was rewritten)``.

    The default decomposition table is included, so the result needs no further
    ``run_decompositions``.
    """
    import torch

    fused = sorted({str(node.target) for node in program.graph.nodes
                    if node.op == "call_function" and node.target in _decompositions(torch)})
    table = torch.export.default_decompositions()
    table.update(_decompositions(torch))
    decomposed = program.run_decompositions(table)
    dropped = _drop_empty_cat_inputs(decomposed)
    return decomposed, {"fused_ops_decomposed": fused, "empty_cat_inputs_dropped": dropped}
