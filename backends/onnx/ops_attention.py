"""ONNX lowerings of attention and multi_head_attention.

The default is the plain formula, which onnxruntime runs with its fast MatMul and Softmax
kernels at every opset: scores = (q * scale) @ k^T, masked positions set to -inf with
``Where``, softmax over keys, @ v. With ``Options.native_attention`` (opset >= 23) the core
is the ``Attention`` op instead.
"""

from __future__ import annotations

import math

import numpy as np
import sympy

from builder import Node
from builder.ops.attention import Attention, MultiHeadAttention

from .ops_layers import linear
from .table import LOWERINGS, Emitter
from .weights import Init

__all__: list[str] = []


def _length(e: Emitter, value: str, size: sympy.Expr) -> str:
    """A sequence length as an int64 scalar: a constant when fixed, else read from `value`'s dim -2."""
    if size.is_Integer:
        return e.const(np.asarray(int(size), dtype=np.int64), "len")
    return e.op1("Squeeze", [e.op1("Shape", [value], start=-2, end=-1)])


def _future(e: Emitter, q: str, k: str, lq: sympy.Expr, lk: sympy.Expr) -> str:
    """Bool (Lq, Lk), True where key j > query i: what a causal mask hides (PyTorch's top-left tril)."""
    if lq.is_Integer and lk.is_Integer:
        mask = np.triu(np.ones((int(lq), int(lk)), dtype=bool), k=1)
        return e.const(mask, "causal_mask")
    zero, one = e.const(np.asarray(0, dtype=np.int64), "zero"), e.const(np.asarray(1, dtype=np.int64), "one")
    rows = e.op1("Range", [zero, _length(e, q, lq), one])
    cols = e.op1("Range", [zero, _length(e, k, lk), one])
    return e.op1("Greater", [cols, e.op1("Unsqueeze", [rows, e.ints([1], "axes")])])


def _hidden(e: Emitter, node: Node, causal: bool, q: str, k: str, mask_axes: list[int]) -> str | None:
    """The bool mask of hidden (query, key) pairs, broadcastable to the scores, or None when nothing is hidden.

    `q` and `k` are values whose dim -2 is the query and key length.
    """
    hidden = None
    if causal:  # the same lengths give the same mask: build it once for all layers
        lq, lk = node.inputs["query"].shape[-2], node.inputs.get("key", node.inputs["query"]).shape[-2]
        key = ("causal", lq, lk)
        hidden = e.memo.get(key) or e.memo.setdefault(key, _future(e, q, k, lq, lk))
    if e.has("key_padding_mask"):  # (batch, Lk), True = padding -> (batch, 1, [1,] Lk)
        mask = e.input("key_padding_mask")
        key = ("padding", mask, tuple(mask_axes))
        pad = e.memo.get(key) or e.memo.setdefault(key, e.op1("Unsqueeze", [mask, e.ints(mask_axes, "mask_axes")]))
        if hidden is None:
            hidden = pad
        else:
            key = ("hidden", hidden, pad)
            hidden = e.memo.get(key) or e.memo.setdefault(key, e.op1("Or", [hidden, pad]))
    return hidden


def _attend(e: Emitter, q: str, k_t: str, v: str, hidden: str | None, dtype: str, output: str | None) -> str:
    """softmax(q @ k_t, hidden -> -inf) @ v, for q already scaled and k already transposed."""
    scores = e.op1("MatMul", [q, k_t])
    if hidden is not None:
        scores = e.op1("Where", [hidden, e.const(-np.inf, "neg_inf", dtype), scores])
    return e.op1("MatMul", [e.op1("Softmax", [scores], axis=-1), v], output)


@LOWERINGS.register("attention")
def lower_attention(e: Emitter, node: Node) -> None:
    m = e.model(Attention)
    q_t, dtype = node.inputs["query"], node.inputs["query"].dtype
    rank, embed = q_t.rank, int(q_t.shape[-1])
    scale = m.scale if m.scale is not None else 1 / math.sqrt(embed)
    q, k, v = e.input("query"), e.input("key"), e.input("value")
    mask_axes = [1] if rank == 3 else [1, 2]
    if e.options.native_attention:
        _native(e, q, k, v, m.causal, scale, heads=1 if rank == 3 else None)
        return
    hidden = _hidden(e, node, m.causal, q, k, mask_axes)
    perm = list(range(rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    k_t = e.op1("Transpose", [k], perm=perm)  # (*, E, Lk)
    q = e.op1("Mul", [q, e.const(scale, "scale", dtype)])
    _attend(e, q, k_t, v, hidden, dtype, e.output())


def _native(e: Emitter, q: str, k: str, v: str, causal: bool, scale: float, heads: int | None,
            output: str | None = None) -> str:
    """The opset-23 Attention op; its bool mask, broadcast to (B, H, Lq, Lk), is True where attention is allowed."""
    inputs = [q, k, v]
    if e.has("key_padding_mask"):
        pad = e.op1("Unsqueeze", [e.input("key_padding_mask"), e.ints([1, 2], "mask_axes")])  # (B, 1, 1, Lk)
        inputs.append(e.op1("Not", [pad]))
    attrs: dict[str, object] = {"scale": float(scale), "is_causal": int(causal)}
    if heads is not None:
        attrs.update(q_num_heads=heads, kv_num_heads=heads)
    return e.op("Attention", inputs, [output or e.output()], **attrs)[0]


@LOWERINGS.register("multi_head_attention")
def lower_multi_head_attention(e: Emitter, node: Node) -> None:
    m = e.model(MultiHeadAttention)
    dtype = node.inputs["query"].dtype
    embed, heads = int(node.inputs["query"].shape[-1]), m.num_heads
    head = embed // heads
    b = node.bindings
    self_attention = b.get("key", b["query"]) == b["query"] and b.get("value", b.get("key", b["query"])) == b["query"]
    weight = e.weight("in_proj_weight", Init.uniform(math.sqrt(6 / (4 * embed))))  # xavier_uniform on (3E, E)
    bias = e.weight("in_proj_bias", Init.constant(0.0)) if m.bias else None
    out_w = e.weight("out_proj.weight", Init.uniform(1 / math.sqrt(embed)))
    out_b = e.weight("out_proj.bias", Init.constant(0.0)) if m.bias else None
    query = e.input("query")
    key = e.input("key") if e.has("key") else query
    value = e.input("value") if e.has("value") else key
    thirds = e.ints([embed] * 3, "thirds")
    if self_attention:  # one (B, L, E) @ (E, 3E) projection, then q, k, v
        q, k, v = e.op("Split", [linear(e, query, 3, weight, bias), thirds], 3, axis=-1)
    else:
        ws = e.op("Split", [weight, thirds], 3, axis=0)
        bs = e.op("Split", [bias, thirds], 3, axis=0) if bias else [None] * 3
        q, k, v = (linear(e, x, 3, w, bb) for x, w, bb in zip((query, key, value), ws, bs, strict=True))
    if e.options.native_attention:
        y = _native(e, q, k, v, m.causal, 1 / math.sqrt(head), heads, e.fresh("attention"))
    else:
        split = e.ints([0, 0, heads, head], "heads")  # (B, L, E) -> (B, L, H, hd)
        q = e.op1("Mul", [q, e.const(1 / math.sqrt(head), "scale", dtype)])
        q = e.op1("Transpose", [e.op1("Reshape", [q, split])], perm=[0, 2, 1, 3])  # (B, H, Lq, hd)
        k = e.op1("Transpose", [e.op1("Reshape", [k, split])], perm=[0, 2, 3, 1])  # (B, H, hd, Lk)
        v = e.op1("Transpose", [e.op1("Reshape", [v, split])], perm=[0, 2, 1, 3])  # (B, H, Lk, hd)
        hidden = _hidden(e, node, m.causal, query, key, [1, 2])
        y = _attend(e, q, k, v, hidden, dtype, None)  # (B, H, Lq, hd)
        y = e.op1("Transpose", [y], perm=[0, 2, 1, 3])
        y = e.op1("Reshape", [y, e.ints([0, 0, embed], "merge")])  # (B, Lq, E)
    linear(e, y, 3, out_w, out_b, e.output())
