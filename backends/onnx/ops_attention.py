"""ONNX lowerings of attention, multi_head_attention and rotary.

The default is the plain formula, which onnxruntime runs with its fast MatMul and Softmax
kernels at every opset: scores = (q * scale) @ k^T, masked positions set to -inf with
``Where``, an additive attn_mask added, softmax over keys, @ v. Grouped-query attention
repeats each key/value head (Unsqueeze, Expand, Reshape: Llama's repeat_kv). With
``Options.native_attention`` (opset >= 23) the core is the ``Attention`` op instead. With
``Options.fused_attention``, multi_head_attention after its in-projection is onnxruntime's
contrib op ``com.microsoft.MultiHeadAttention`` (one fused kernel for scores, masks, softmax
and values), where the op can express the node (`_fused_obstacle` says why not).

Rotary embedding is decomposed (Cos, Sin, Mul, Sub, Add, Split/Slice, Concat) at every opset:
ai.onnx's RotaryEmbedding exists only from opset 23.
"""

from __future__ import annotations

import math

import numpy as np
import sympy

from nnspec.builder import Node
from nnspec.builder.ops.attention import Attention, MultiHeadAttention, Rope, Rotary

from .ops_layers import linear
from .table import LOWERINGS, Emitter
from .weights import Init

__all__: list[str] = []

FLOAT, INT32 = 1, 6  # onnx.TensorProto.FLOAT, INT32
_DTYPE_CODES = {"float32": 1, "float16": 10, "float64": 11, "bfloat16": 16}


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


def _attn_mask(e: Emitter, node: Node, heads_axis: bool) -> str | None:
    """The node's attn_mask, a rank-3 one unsqueezed to (B, 1, Lq, Lk) when the scores have a heads axis."""
    if not e.has("attn_mask"):
        return None
    mask = e.input("attn_mask")
    if heads_axis and node.inputs["attn_mask"].rank == 3:
        mask = e.op1("Unsqueeze", [mask, e.ints([1], "axes")])
    return mask


def _attend(e: Emitter, q: str, k_t: str, v: str, hidden: str | None, extra: str | None, extra_bool: bool,
            dtype: str, output: str | None, unattended: bool = False) -> str:
    """softmax(q @ k_t, hidden -> -inf, + attn_mask) @ v, for q already scaled and k already transposed.

    With `unattended` (a key padding mask may hide every key of a row: a left-padded query under a
    causal mask), such a row gives 0, as PyTorch's scaled_dot_product_attention does, not NaN,
    which the next layer would spread to every row through its values.
    """
    scores = e.op1("MatMul", [q, k_t])
    if hidden is not None:
        scores = e.op1("Where", [hidden, e.const(-np.inf, "neg_inf", dtype), scores])
    if extra is not None and extra_bool:  # True = may attend
        scores = e.op1("Where", [extra, scores, e.const(-np.inf, "neg_inf", dtype)])
    elif extra is not None:  # additive
        scores = e.op1("Add", [scores, extra])
    weights = e.op1("Softmax", [scores], axis=-1)
    if unattended and hidden is not None:  # a row with every key hidden: NaN -> 0
        weights = e.op1("Where", [hidden, e.const(0.0, "zero_f", dtype), weights])
    return e.op1("MatMul", [weights, v], output)


def _repeat_kv(e: Emitter, x: str, groups: int, heads: int, tail: list[int]) -> str:
    """(B, Hkv, a, b) -> (B, Hkv * groups, a, b), each head repeated `groups` times in place (repeat_kv).

    `tail` is the Reshape target of the last two dims (one of them -1).
    """
    if groups == 1:
        return x
    x = e.op1("Unsqueeze", [x, e.ints([2], "axes")])  # (B, Hkv, 1, a, b)
    x = e.op1("Expand", [x, e.ints([1, 1, groups, 1, 1], "repeat")])  # (B, Hkv, groups, a, b)
    return e.op1("Reshape", [x, e.ints([0, heads, *tail], "heads")])


@LOWERINGS.register("attention")
def lower_attention(e: Emitter, node: Node) -> None:
    m = e.model(Attention)
    q_t, dtype = node.inputs["query"], node.inputs["query"].dtype
    rank, embed = q_t.rank, int(q_t.shape[-1])
    scale = m.scale if m.scale is not None else 1 / math.sqrt(embed)
    q, k, v = e.input("query"), e.input("key"), e.input("value")
    mask_axes = [1] if rank == 3 else [1, 2]
    if e.options.native_attention:
        _native(e, node, q, k, v, m.causal, scale, heads=1 if rank == 3 else None)
        return
    hidden = _hidden(e, node, m.causal, q, k, mask_axes)
    groups = m.kv_groups(node.inputs)
    if groups > 1:
        heads = int(q_t.shape[1])
        k, v = _repeat_kv(e, k, groups, heads, [-1, embed]), _repeat_kv(e, v, groups, heads,
                                                                        [-1, int(node.inputs["value"].shape[-1])])
    perm = list(range(rank))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    k_t = e.op1("Transpose", [k], perm=perm)  # (*, E, Lk)
    q = e.op1("Mul", [q, e.const(scale, "scale", dtype)])
    extra = _attn_mask(e, node, heads_axis=False)
    _attend(e, q, k_t, v, hidden, extra, _mask_is_bool(node), dtype, e.output())


def _mask_is_bool(node: Node) -> bool:
    return "attn_mask" in node.inputs and node.inputs["attn_mask"].dtype == "bool"


def _native(e: Emitter, node: Node, q: str, k: str, v: str, causal: bool, scale: float, heads: int | None,
            output: str | None = None, kv_heads: int | None = None) -> str:
    """The opset-23 Attention op; its bool mask, broadcast to (B, H, Lq, Lk), is True where attention is allowed.

    `heads`: the head counts of 3-D inputs (None for 4-D inputs, whose shapes say them).
    """
    inputs = [q, k, v]
    mask = _attn_mask(e, node, heads_axis=True)
    if e.has("key_padding_mask"):
        pad = e.op1("Unsqueeze", [e.input("key_padding_mask"), e.ints([1, 2], "mask_axes")])  # (B, 1, 1, Lk)
        if mask is None:
            mask = e.op1("Not", [pad])
        elif _mask_is_bool(node):
            mask = e.op1("Where", [pad, e.const(np.asarray(False), "false"), mask])
        else:
            mask = e.op1("Where", [pad, e.const(-np.inf, "neg_inf", node.inputs["query"].dtype), mask])
    if mask is not None:
        inputs.append(mask)
    attrs: dict[str, object] = {"scale": float(scale), "is_causal": int(causal)}
    if heads is not None:
        attrs.update(q_num_heads=heads, kv_num_heads=kv_heads or heads)
    return e.op("Attention", inputs, [output or e.output()], **attrs)[0]


# --- rotary position embedding ---------------------------------------------------------------

def _rope_angles(e: Emitter, rope: Rope, rot: int, length_of: str, length: sympy.Expr, dtype: str,
                 positions: tuple[str, int] | None) -> tuple[str, str]:
    """cos and sin of pos * inv_freq: (T, R/2), or (B, 1, T, R/2) for (B, T) positions; shared by every
    node with the same settings and positions."""
    key = ("rope", rope, rot, dtype, positions[0] if positions else length)
    if key in e.memo:
        cos, sin = e.memo[key].split("\n")
        return cos, sin
    # as torch computes it: 1 / theta^(arange(0, R, 2) / R) in float32
    exponent = np.arange(0, rot, 2, dtype=np.float32) / np.float32(rot)
    inv_freq = (np.float32(1.0) / np.power(np.float32(rope.theta), exponent)).astype(np.float32)
    if rope.scaling is not None:
        inv_freq = (inv_freq / np.float32(rope.scaling)).astype(np.float32)
    if positions is not None:
        pos = e.op1("Cast", [positions[0]], to=FLOAT)  # ([B,] T)
    elif length.is_Integer:
        pos = e.const(np.arange(int(length), dtype=np.float32), "positions")
    else:
        zero, one = e.const(np.asarray(0, dtype=np.int64), "zero"), e.const(np.asarray(1, dtype=np.int64), "one")
        pos = e.op1("Cast", [e.op1("Range", [zero, _length(e, length_of, length), one])], to=FLOAT)
    freqs = e.op1("Mul", [e.op1("Unsqueeze", [pos, e.ints([-1], "axes")]), e.const(inv_freq, "inv_freq")])
    if positions is not None and positions[1] == 2:
        freqs = e.op1("Unsqueeze", [freqs, e.ints([1], "axes")])  # (B, 1, T, R/2)
    cos, sin = e.op1("Cos", [freqs]), e.op1("Sin", [freqs])
    if dtype != "float32":
        cos, sin = e.op1("Cast", [cos], to=_DTYPE_CODES[dtype]), e.op1("Cast", [sin], to=_DTYPE_CODES[dtype])
    e.memo[key] = f"{cos}\n{sin}"
    return cos, sin


def _rotate(e: Emitter, x: str, features: int, rot: int, interleaved: bool, cos: str, sin: str,
            output: str | None = None) -> str:
    """x (B, H, T, D) with its first `rot` features rotated: pairs (i, i + R/2), or (2k, 2k+1) if interleaved."""
    rest = None
    if rot < features:
        x, rest = e.op("Split", [x, e.ints([rot, features - rot], "rotary_split")], 2, axis=-1)
    if interleaved:
        axes, end, two = e.ints([-1], "axes"), e.ints([rot], "ends"), e.ints([2], "steps")
        x1 = e.op1("Slice", [x, e.ints([0], "starts"), end, axes, two])  # x[..., 0::2]
        x2 = e.op1("Slice", [x, e.ints([1], "starts"), end, axes, two])  # x[..., 1::2]
    else:
        x1, x2 = e.op("Split", [x, e.ints([rot // 2, rot // 2], "halves")], 2, axis=-1)
    y1 = e.op1("Sub", [e.op1("Mul", [x1, cos]), e.op1("Mul", [x2, sin])])
    y2 = e.op1("Add", [e.op1("Mul", [x2, cos]), e.op1("Mul", [x1, sin])])
    if interleaved:
        last = e.ints([-1], "axes")
        pairs = e.op1("Concat", [e.op1("Unsqueeze", [y1, last]), e.op1("Unsqueeze", [y2, last])], axis=-1)
        y = e.op1("Reshape", [pairs, e.ints([0, 0, 0, rot])], None if rest else output)  # (B, H, T, R)
        return y if rest is None else e.op1("Concat", [y, rest], output, axis=-1)
    return e.op1("Concat", [y1, y2, *([rest] if rest else [])], output, axis=-1)


def _positions(e: Emitter, node: Node) -> tuple[str, int] | None:
    return (e.input("positions"), node.inputs["positions"].rank) if e.has("positions") else None


@LOWERINGS.register("rotary")
def lower_rotary(e: Emitter, node: Node) -> None:
    m = e.model(Rotary)
    t = node.inputs["x"]
    features = int(t.shape[-1])
    rope = m.rope()
    rot = rope.dim(features, "x")
    x = e.input("x")
    cos, sin = _rope_angles(e, rope, rot, x, t.shape[2], t.dtype, _positions(e, node))
    _rotate(e, x, features, rot, rope.interleaved, cos, sin, e.output())


# --- multi-head attention --------------------------------------------------------------------

def _project(e: Emitter, node: Node, m: MultiHeadAttention, sizes: list[int], add_bias: bool = True) -> tuple[str, str, str]:
    """q (B, Lq, E), k and v (B, Lk, kv*hd) through the packed in-projection (without its bias
    unless `add_bias`: com.microsoft.MultiHeadAttention adds it itself)."""
    embed = sizes[0]
    rows = sum(sizes)
    b = node.bindings
    self_attention = b.get("key", b["query"]) == b["query"] and b.get("value", b.get("key", b["query"])) == b["query"]
    weight = e.weight("in_proj_weight", Init.uniform(math.sqrt(6 / (rows + embed))))  # xavier_uniform on (rows, E)
    bias = e.weight("in_proj_bias", Init.constant(0.0)) if m.bias and add_bias else None
    query = e.input("query")
    key = e.input("key") if e.has("key") else query
    value = e.input("value") if e.has("value") else key
    thirds = e.ints(sizes, "thirds")
    if self_attention:  # one (B, L, E) @ (E, rows) projection, then q, k, v
        q, k, v = e.op("Split", [linear(e, query, 3, weight, bias), thirds], 3, axis=-1)
    else:
        ws = e.op("Split", [weight, thirds], 3, axis=0)
        bs = e.op("Split", [bias, thirds], 3, axis=0) if bias else [None] * 3
        q, k, v = (linear(e, x, 3, w, bb) for x, w, bb in zip((query, key, value), ws, bs, strict=True))
    return q, k, v


def _mha_heads(e: Emitter, node: Node, m: MultiHeadAttention, q: str, k: str, v: str) -> tuple[str, str, str]:
    """q (B, H, Lq, hd), k (B, Hkv, Lk, hd), v (B, Hkv, Lk, hd), q and k rotated."""
    embed, heads, kv = int(node.inputs["query"].shape[-1]), m.num_heads, m.kv_heads
    head = embed // heads
    q = e.op1("Transpose", [e.op1("Reshape", [q, e.ints([0, 0, heads, head], "heads")])], perm=[0, 2, 1, 3])
    k = e.op1("Transpose", [e.op1("Reshape", [k, e.ints([0, 0, kv, head], "heads")])], perm=[0, 2, 1, 3])
    v = e.op1("Transpose", [e.op1("Reshape", [v, e.ints([0, 0, kv, head], "heads")])], perm=[0, 2, 1, 3])
    rope = m.rope()
    if rope is not None:
        rot, dtype = rope.dim(head, "query"), node.inputs["query"].dtype
        tq = node.inputs["query"]
        tk = node.inputs.get("key", tq)
        positions = _positions(e, node)
        cos, sin = _rope_angles(e, rope, rot, q, tq.shape[1], dtype, positions)
        q = _rotate(e, q, head, rot, rope.interleaved, cos, sin)
        if positions is None and tk.shape[1] != tq.shape[1]:
            cos, sin = _rope_angles(e, rope, rot, k, tk.shape[1], dtype, None)
        k = _rotate(e, k, head, rot, rope.interleaved, cos, sin)
    return q, k, v


def _cached_hidden(e: Emitter, query: str, past: str, keys: str) -> str:
    """Bool (B|1, 1, Lq, P + Lq), True where hidden, for cached causal self-attention: query i sits at
    position P + i and sees keys j <= P + i that are not padding, and always itself (a padding query
    that saw nothing would give NaN, which would reach later layers through the cache)."""
    pad = e.input("key_padding_mask") if e.has("key_padding_mask") else ""
    key = ("cached_hidden", past, pad)
    if key in e.memo:  # every layer has the same lengths and mask
        return e.memo[key]
    zero, one = e.const(np.asarray(0, dtype=np.int64), "zero"), e.const(np.asarray(1, dtype=np.int64), "one")
    p = e.op1("Squeeze", [e.op1("Shape", [past], start=2, end=3)])
    rows = e.op1("Add", [e.op1("Range", [zero, e.op1("Squeeze", [e.op1("Shape", [query], start=1, end=2)]), one]), p])
    rows = e.op1("Unsqueeze", [rows, e.ints([1], "axes")])  # (Lq, 1): P + i
    cols = e.op1("Range", [zero, e.op1("Squeeze", [e.op1("Shape", [keys], start=2, end=3)]), one])  # (P + Lq,)
    hidden = e.op1("Greater", [cols, rows])  # (Lq, P + Lq): j > P + i
    if pad:
        padding = e.op1("Unsqueeze", [pad, e.ints([1, 2], "mask_axes")])  # (B, 1, 1, P + Lq)
        hidden = e.op1("And", [e.op1("Or", [hidden, padding]), e.op1("Not", [e.op1("Equal", [cols, rows])])])
    e.memo[key] = hidden
    return hidden


def _cached_attention(e: Emitter, node: Node, m: MultiHeadAttention, q: str, k: str, v: str) -> str:
    """Attention over past and new keys; writes present_key and present_value. Returns (B, H, Lq, hd)."""
    embed, heads, kv = int(node.inputs["query"].shape[-1]), m.num_heads, m.kv_heads
    head = embed // heads
    q, k, v = _mha_heads(e, node, m, q, k, v)  # (B, H|Hkv, Lq, hd), q and k rotated
    k = e.op1("Concat", [e.input("past_key"), k], e.output("present_key"), axis=2)  # (B, Hkv, P + Lq, hd)
    v = e.op1("Concat", [e.input("past_value"), v], e.output("present_value"), axis=2)
    hidden = _cached_hidden(e, e.input("query"), e.input("past_key"), k)
    q = e.op1("Mul", [q, e.const(1 / math.sqrt(head), "scale", node.inputs["query"].dtype)])
    k_t = _repeat_kv(e, e.op1("Transpose", [k], perm=[0, 1, 3, 2]), heads // kv, heads, [head, -1])  # (B, H, hd, Lk)
    v = _repeat_kv(e, v, heads // kv, heads, [-1, head])  # (B, H, Lk, hd)
    return _attend(e, q, k_t, v, hidden, _attn_mask(e, node, heads_axis=True), _mask_is_bool(node),
                   node.inputs["query"].dtype, None)


def _key_value_projection(e: Emitter, node: Node, m: MultiHeadAttention) -> None:
    """The node's keys and values alone, projected and split into heads (B, Hkv, Lk, hd): a cross-attention's,
    computed once (see `nnspec.builder.kv_cache`)."""
    embed, kv = int(node.inputs["key"].shape[-1]), m.kv_heads
    head = embed // m.num_heads
    rows = embed + 2 * kv * head
    weight = e.weight("in_proj_weight", Init.uniform(math.sqrt(6 / (rows + embed))))
    bias = e.weight("in_proj_bias", Init.constant(0.0)) if m.bias else None
    thirds = e.ints([embed, kv * head, kv * head], "thirds")
    _, wk, wv = e.op("Split", [weight, thirds], 3, axis=0)
    _, bk, bv = e.op("Split", [bias, thirds], 3, axis=0) if bias else [None] * 3
    for x, w, b, port in ((e.input("key"), wk, bk, "projected_key"), (e.input("value"), wv, bv, "projected_value")):
        y = e.op1("Reshape", [linear(e, x, 3, w, b), e.ints([0, 0, kv, head], "heads")])
        e.op1("Transpose", [y], e.output(port), perm=[0, 2, 1, 3])


def _projected_attention(e: Emitter, node: Node, m: MultiHeadAttention) -> None:
    """Attention over keys and values given projected (B, Hkv, Lk, hd): only the query is projected here."""
    dtype = node.inputs["query"].dtype
    embed, heads, kv = int(node.inputs["query"].shape[-1]), m.num_heads, m.kv_heads
    head = embed // heads
    rows = embed + 2 * kv * head
    weight = e.weight("in_proj_weight", Init.uniform(math.sqrt(6 / (rows + embed))))
    bias = e.weight("in_proj_bias", Init.constant(0.0)) if m.bias else None
    thirds = e.ints([embed, kv * head, kv * head], "thirds")
    wq = e.op("Split", [weight, thirds], 3, axis=0)[0]
    bq = e.op("Split", [bias, thirds], 3, axis=0)[0] if bias else None
    q = e.op1("Mul", [linear(e, e.input("query"), 3, wq, bq), e.const(1 / math.sqrt(head), "scale", dtype)])
    q = e.op1("Transpose", [e.op1("Reshape", [q, e.ints([0, 0, heads, head], "heads")])], perm=[0, 2, 1, 3])
    k = _repeat_kv(e, e.op1("Transpose", [e.input("projected_key")], perm=[0, 1, 3, 2]), heads // kv, heads,
                   [head, -1])  # (B, H, hd, Lk)
    v = _repeat_kv(e, e.input("projected_value"), heads // kv, heads, [-1, head])  # (B, H, Lk, hd)
    hidden = _hidden(e, node, False, q, v, [1, 2])
    y = _attend(e, q, k, v, hidden, _attn_mask(e, node, heads_axis=True), _mask_is_bool(node), dtype, None,
                e.has("key_padding_mask"))
    y = e.op1("Reshape", [e.op1("Transpose", [y], perm=[0, 2, 1, 3]), e.ints([0, 0, embed], "merge")])  # (B, Lq, E)
    out_w = e.weight("out_proj.weight", Init.uniform(1 / math.sqrt(embed)))
    out_b = e.weight("out_proj.bias", Init.constant(0.0)) if m.bias else None
    linear(e, y, 3, out_w, out_b, e.output())


@LOWERINGS.register("multi_head_attention")
def lower_multi_head_attention(e: Emitter, node: Node) -> None:
    m = e.model(MultiHeadAttention)
    if m.projection_only:  # a cross-attention's keys and values, computed once (the derived cross_kv graph)
        _key_value_projection(e, node, m)
        return
    if e.has("projected_key"):  # keys and values projected once, before decoding (the derived with_past graph)
        _projected_attention(e, node, m)
        return
    dtype = node.inputs["query"].dtype
    embed, heads, kv = int(node.inputs["query"].shape[-1]), m.num_heads, m.kv_heads
    head = embed // heads
    fused = False
    if e.options.fused_attention and e.has("query"):
        why = _fused_obstacle(node, m)
        fused = why is None
        if why is not None:
            e.fallbacks.append((node.id, why))
    # the fused op adds the in-projection bias itself, but before rotary it must be added here
    q, k, v = _project(e, node, m, [embed, kv * head, kv * head], add_bias=not fused or m.rotary)
    out_w = e.weight("out_proj.weight", Init.uniform(1 / math.sqrt(embed)))
    out_b = e.weight("out_proj.bias", Init.constant(0.0)) if m.bias else None
    query = e.input("query")
    key = e.input("key") if e.has("key") else query
    if e.has("past_key"):  # a key/value cache (the derived with_past signature)
        y = _cached_attention(e, node, m, q, k, v)  # (B, H, Lq, hd)
        y = e.op1("Reshape", [e.op1("Transpose", [y], perm=[0, 2, 1, 3]), e.ints([0, 0, embed], "merge")])
    elif fused:
        y = _fused(e, node, m, q, k, v)  # (B, Lq, E)
    elif e.options.native_attention and not m.rotary:
        y = _native(e, node, q, k, v, m.causal, 1 / math.sqrt(head), heads, e.fresh("attention"), kv)
    elif e.options.native_attention:
        q, k, v = _mha_heads(e, node, m, q, k, v)
        y = _native(e, node, q, k, v, m.causal, 1 / math.sqrt(head), None, e.fresh("attention"))  # (B, H, Lq, hd)
        y = e.op1("Reshape", [e.op1("Transpose", [y], perm=[0, 2, 1, 3]), e.ints([0, 0, embed], "merge")])
    else:
        split = e.ints([0, 0, heads, head], "heads")  # (B, L, E) -> (B, L, H, hd)
        scale = e.const(1 / math.sqrt(head), "scale", dtype)
        if m.rotary:
            q, k, v = _mha_heads(e, node, m, q, k, v)
            q = e.op1("Mul", [q, scale])  # (B, H, Lq, hd)
            k = e.op1("Transpose", [k], perm=[0, 1, 3, 2])  # (B, Hkv, hd, Lk)
        else:
            q = e.op1("Mul", [q, scale])
            q = e.op1("Transpose", [e.op1("Reshape", [q, split])], perm=[0, 2, 1, 3])
            k = e.op1("Transpose", [e.op1("Reshape", [k, e.ints([0, 0, kv, head], "heads")])], perm=[0, 2, 3, 1])
            v = e.op1("Transpose", [e.op1("Reshape", [v, e.ints([0, 0, kv, head], "heads")])], perm=[0, 2, 1, 3])
        k = _repeat_kv(e, k, heads // kv, heads, [head, -1])  # (B, H, hd, Lk)
        v = _repeat_kv(e, v, heads // kv, heads, [-1, head])  # (B, H, Lk, hd)
        hidden = _hidden(e, node, m.causal, query, key, [1, 2])
        extra = _attn_mask(e, node, heads_axis=True)
        y = _attend(e, q, k, v, hidden, extra, _mask_is_bool(node), dtype, None,
                    e.has("key_padding_mask"))  # (B, H, Lq, hd)
        y = e.op1("Transpose", [y], perm=[0, 2, 1, 3])
        y = e.op1("Reshape", [y, e.ints([0, 0, embed], "merge")])  # (B, Lq, E)
    linear(e, y, 3, out_w, out_b, e.output())


# --- onnxruntime's fused MultiHeadAttention (Options.fused_attention) --------------------------

_FUSED_PORTS = frozenset({"query", "key", "value", "key_padding_mask", "attn_mask", "positions"})
"""The inputs the fused lowering maps onto com.microsoft.MultiHeadAttention's."""


def _fused_obstacle(node: Node, m: MultiHeadAttention) -> str | None:
    """Why com.microsoft.MultiHeadAttention cannot compute `node`, or None when it can."""
    q = node.inputs["query"]
    if m.kv_heads != m.num_heads:
        return (f"com.microsoft.MultiHeadAttention has no grouped-query attention ({m.kv_heads} key/value heads "
                f"for {m.num_heads} query heads)")
    other = sorted(set(node.inputs) - _FUSED_PORTS)
    if other:  # a key/value cache (past_key, past_value): the cached path keeps its own masks
        return f"the fused lowering does not take {' or '.join(other)}"
    if q.dtype not in ("float32", "float16"):  # the CPU kernel is float32; onnxruntime casts float16 to it
        return f"onnxruntime's CPU provider runs com.microsoft.MultiHeadAttention in float32 and float16, not {q.dtype}"
    mask = node.inputs.get("attn_mask")
    if mask is not None and tuple(mask.shape[-2:]) != (q.shape[1], node.inputs.get("key", q).shape[1]):
        return (f"attn_mask {tuple(mask.shape)} broadcasts over queries or keys, which the op's attention_bias "
                "(B|1, H|1, Lq, Lk) does not")
    return None


def _fused(e: Emitter, node: Node, m: MultiHeadAttention, q: str, k: str, v: str) -> str:
    """com.microsoft.MultiHeadAttention on the projected q, k, v (B, L, E), whose in-projection bias
    the op adds, unless rotary (its fused CPU kernel); returns (B, Lq, E).

    Self-attention's causal mask is the op's `unidirectional`; the key padding mask its int32
    key_padding_mask (1 = attend); attn_mask and a causal mask between different lengths its
    additive attention_bias (B|1, H|1, Lq, Lk).
    """
    q_t = node.inputs["query"]
    embed, heads = int(q_t.shape[-1]), m.num_heads
    head = embed // heads
    bias = ""
    if m.rotary:  # rotated per head: q back to (B, Lq, E), k and v in as (B, H, Lk, hd), which the op takes
        q, k, v = _mha_heads(e, node, m, q, k, v)
        q = e.op1("Reshape", [e.op1("Transpose", [q], perm=[0, 2, 1, 3]), e.ints([0, 0, embed], "merge")])
    elif m.bias:
        bias = e.weight("in_proj_bias", Init.constant(0.0))
    # equal lengths: PyTorch's top-left causal mask is the op's (which aligns the last query with the last key)
    unidirectional = m.causal and node.inputs.get("key", q_t).shape[1] == q_t.shape[1]
    pad = ""
    if e.has("key_padding_mask"):  # bool (B, Lk), True = padding -> int32, 1 = attend; one for every layer
        mask = e.input("key_padding_mask")
        key = ("fused_padding", mask)
        pad = e.memo.get(key) or e.memo.setdefault(key, e.op1("Where", [
            mask, e.const(np.asarray(0, dtype=np.int32), "zero_i32"), e.const(np.asarray(1, dtype=np.int32), "one_i32")]))
    inputs = [q, k, v, bias, pad, _fused_bias(e, node, m.causal and not unidirectional)]
    while not inputs[-1]:
        inputs.pop()
    return e.contrib("MultiHeadAttention", inputs, [e.fresh("attention")], num_heads=heads, scale=1 / math.sqrt(head),
                     unidirectional=1 if unidirectional else None)[0]


def _fused_bias(e: Emitter, node: Node, causal: bool) -> str:
    """The additive attention_bias (B|1, H|1, Lq, Lk): attn_mask (a bool one as 0 / -inf), plus -inf on
    the keys a causal mask hides; "" when there is neither. Built once for layers that share it."""
    q_t = node.inputs["query"]
    k_t = node.inputs.get("key", q_t)
    key = ("fused_bias", e.input("attn_mask") if e.has("attn_mask") else "", causal, q_t.shape[1], k_t.shape[1])
    if key in e.memo:
        return e.memo[key]
    dtype = q_t.dtype
    zero, neg_inf = e.const(0.0, "zero_f", dtype), e.const(-np.inf, "neg_inf", dtype)
    out = ""
    if e.has("attn_mask"):  # (Lq, Lk), (B, Lq, Lk) or (B|1, H|1, Lq, Lk)
        out = e.input("attn_mask")
        if _mask_is_bool(node):  # True = may attend
            out = e.op1("Where", [out, zero, neg_inf])
        rank = node.inputs["attn_mask"].rank
        if rank < 4:
            out = e.op1("Unsqueeze", [out, e.ints([0, 1] if rank == 2 else [1], "mask_axes")])
    if causal:  # query and key lengths may differ: PyTorch's top-left mask, (1, 1, Lq, Lk)
        query = e.input("query")
        hidden = _future(e, query, e.input("key") if e.has("key") else query, q_t.shape[1], k_t.shape[1])
        causal_bias = e.op1("Unsqueeze", [e.op1("Where", [hidden, neg_inf, zero]), e.ints([0, 1], "mask_axes")])
        out = e.op1("Add", [out, causal_bias]) if out else causal_bias
    e.memo[key] = out
    return out
