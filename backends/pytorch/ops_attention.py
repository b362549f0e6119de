"""PyTorch lowerings of attention, multi_head_attention and rotary.

Masks are combined into one `attn_mask` for `scaled_dot_product_attention`: bool (True =
attend) while every mask is bool, else additive float (hidden positions -inf). Grouped-query
attention uses SDPA's ``enable_gqa``; rotary embedding is written out as Hugging Face's
LlamaRotaryEmbedding computes it (float32 angles, cos/sin cast to the input's dtype), so that
transplanted weights give the same numbers.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx

from nnspec.builder import Node
from nnspec.builder.ops.attention import Attention, MultiHeadAttention, Rope, Rotary

from .emitter import Ctor, Emitter, LoweringError, Outputs, TensorInit
from .lowering import TABLE, _args, _features

__all__: list[str] = []

_TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


# --- masks -----------------------------------------------------------------------------------

def _causal_mask(e: Emitter, q: fx.Node, k: fx.Node, axis: int, keep: bool) -> fx.Node:
    """A (Lq, Lk) bool mask where query i may see key j <= i. `keep`: True where attending
    (scaled_dot_product_attention's convention), else True where masked (nn.MultiheadAttention's)."""
    tq = e.type("query")
    tk = e.type("key") if e.has("key") else tq
    ones = e.method("new_ones", q, (e.size(q, tq, axis), e.size(k, tk, axis)), dtype=torch.bool)  # (Lq, Lk)
    mask = e.method("tril", ones) if keep else e.method("triu", ones, 1)
    return e.named(mask, "causal_keep" if keep else "causal_mask")


def _with_attn_mask(e: Emitter, allowed: fx.Node | None, heads_axis: bool) -> fx.Node | None:
    """`allowed` (bool, True = attend, or None) combined with the node's `attn_mask`, if any.

    `heads_axis`: a rank-3 attn_mask is (B, Lq, Lk) and the scores are (B, H, Lq, Lk).
    """
    if not e.has("attn_mask"):
        return allowed
    mask = e.x("attn_mask")
    if heads_axis and e.type("attn_mask").rank == 3:
        mask = e.method("unsqueeze", mask, 1)  # (B, 1, Lq, Lk)
    if allowed is None:
        return mask
    if e.type("attn_mask").dtype == "bool":
        return e.fn(operator.and_, allowed, mask)
    return e.fn(torch.where, allowed, mask, float("-inf"))  # additive, -inf where hidden


# --- attention -------------------------------------------------------------------------------

@TABLE.register("attention")
def _attention(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Attention)
    q, k, v = e.x("query"), e.x("key"), e.x("value")
    rank = e.type("query").rank
    groups = m.kv_groups(n.inputs)
    allowed: fx.Node | None = None  # bool, broadcastable to (*, Lq, Lk); True = attend
    if e.has("key_padding_mask"):
        allowed = e.method("logical_not", e.x("key_padding_mask"))  # (batch, Lk)
        for _ in range(rank - 2):
            allowed = e.method("unsqueeze", allowed, 1)  # (batch, 1, [1,] Lk)
    if m.causal and (allowed is not None or m.dropout > 0 or e.has("attn_mask")):
        causal = _causal_mask(e, q, k, rank - 2, keep=True)  # (Lq, Lk)
        allowed = causal if allowed is None else e.fn(operator.and_, causal, allowed)
    mask = _with_attn_mask(e, allowed, heads_axis=False)
    if m.dropout == 0:
        kwargs: dict[str, object] = {}
        if mask is not None:
            kwargs["attn_mask"] = mask
        elif m.causal:
            kwargs["is_causal"] = True
        if m.scale is not None:
            kwargs["scale"] = m.scale
        if groups > 1:
            kwargs["enable_gqa"] = True
        return {"y": e.fn(F.scaled_dot_product_attention, q, k, v, **kwargs)}
    # Dropout on the attention weights depends on train/eval, so it is a submodule, and the
    # attention is written out: softmax(q k^T * scale, masked) -> dropout -> @ v.
    if groups > 1:  # (B, Hkv, Lk, E) -> (B, H, Lk, E): kv head j serves query heads j*groups ...
        k, v = e.method("repeat_interleave", k, groups, 1), e.method("repeat_interleave", v, groups, 1)
    t = e.type("query")
    scale = m.scale if m.scale is not None else e.fn(operator.pow, e.size(q, t, rank - 1), -0.5)
    scores = e.fn(operator.mul, e.fn(torch.matmul, q, e.method("transpose", k, -2, -1)), scale)  # (*, Lq, Lk)
    if mask is not None and mask is allowed:
        scores = e.method("masked_fill", scores, e.method("logical_not", allowed), float("-inf"))
    elif mask is not None and e.type("attn_mask").dtype == "bool":
        scores = e.fn(torch.where, mask, scores, float("-inf"))
    elif mask is not None:
        scores = e.fn(operator.add, scores, mask)
    weights = e.call_module(Ctor.of("Dropout", p=m.dropout), e.fn(torch.softmax, scores, -1))
    return {"y": e.fn(torch.matmul, weights, v)}  # (*, Lq, Ev)


# --- rotary position embedding ---------------------------------------------------------------

def _angles(e: Emitter, like: fx.Node, rope: Rope, rot: int, positions: fx.Node | None, length: int | fx.Node,
            dtype: str) -> tuple[fx.Node, fx.Node]:
    """cos and sin of pos * inv_freq: (T, R/2), or (B, 1, T, R/2) for (B, T) positions."""
    dev = e.device(like)
    exponent = e.method("div", e.fn(torch.arange, 0, rot, 2, dtype=torch.float32, device=dev), rot)
    inv_freq = e.method("reciprocal", e.fn(torch.pow, rope.theta, exponent))  # (R/2,) as HF: 1 / theta^(2k/R)
    if rope.scaling is not None:  # linear position interpolation
        inv_freq = e.method("div", inv_freq, rope.scaling)
    inv_freq = e.named(inv_freq, "inv_freq")
    if positions is None:
        pos = e.fn(torch.arange, length, dtype=torch.float32, device=dev)  # (T,)
    else:
        pos = e.method("float", positions)  # ([B,] T)
    freqs = e.fn(operator.mul, e.method("unsqueeze", pos, -1), inv_freq)  # ([B,] T, R/2)
    if positions is not None and e.type("positions").rank == 2:
        freqs = e.method("unsqueeze", freqs, 1)  # (B, 1, T, R/2): one angle per batch row, all heads
    cos, sin = e.method("cos", freqs), e.method("sin", freqs)
    if dtype in _TORCH_DTYPES:
        cos, sin = e.method("to", cos, _TORCH_DTYPES[dtype]), e.method("to", sin, _TORCH_DTYPES[dtype])
    return e.named(cos, "rope_cos"), e.named(sin, "rope_sin")


def _rotate(e: Emitter, x: fx.Node, features: int, rot: int, interleaved: bool, cos: fx.Node,
            sin: fx.Node) -> fx.Node:
    """x (..., D) with its first `rot` features rotated: pairs (i, i + R/2), or (2k, 2k+1) if interleaved."""
    rest: fx.Node | None = None
    if rot < features:
        parts = e.method("split", x, [rot, features - rot], -1)
        x, rest = e.item(parts, 0), e.item(parts, 1)  # (..., R), (..., D - R) passes unchanged
    if interleaved:
        pairs = e.method("unbind", e.method("unflatten", x, -1, (rot // 2, 2)), -1)  # x[..., 0::2], x[..., 1::2]
    else:
        pairs = e.method("chunk", x, 2, -1)  # x[..., :R/2], x[..., R/2:]
    x1, x2 = e.item(pairs, 0), e.item(pairs, 1)
    # as HF's q * cos + rotate_half(q) * sin, half by half (the same float operations)
    y1 = e.fn(operator.sub, e.fn(operator.mul, x1, cos), e.fn(operator.mul, x2, sin))
    y2 = e.fn(operator.add, e.fn(operator.mul, x2, cos), e.fn(operator.mul, x1, sin))
    if interleaved:
        y = e.method("flatten", e.fn(torch.stack, [y1, y2], -1), -2)  # (..., R)
    else:
        y = e.fn(torch.cat, [y1, y2], -1)
    return y if rest is None else e.fn(torch.cat, [y, rest], -1)


@TABLE.register("rotary")
def _rotary(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Rotary)
    x, t = e.x(), e.type()
    features = _features(e)
    rope = m.rope()
    rot = rope.dim(features, "x")
    positions = e.x("positions") if e.has("positions") else None
    cos, sin = _angles(e, x, rope, rot, positions, e.size(x, t, 2), t.dtype)
    return {"y": _rotate(e, x, features, rot, rope.interleaved, cos, sin)}


# --- multi-head attention --------------------------------------------------------------------

def _gqa_container(embed: int, rows: int, bias: bool) -> Ctor:
    """nn.MultiheadAttention's tensors and initialisation for a (rows, E) packed in-projection."""
    tensors = [TensorInit("in_proj_weight", (rows, embed), "uniform", math.sqrt(6 / (rows + embed)))]  # xavier
    if bias:
        tensors.append(TensorInit("in_proj_bias", (rows,), "zeros"))
    tensors.append(TensorInit("out_proj.weight", (embed, embed), "uniform", 1 / math.sqrt(embed)))
    if bias:
        tensors.append(TensorInit("out_proj.bias", (embed,), "zeros"))
    return Ctor("", tensors=tuple(tensors))


def _mha_rope(e: Emitter, n: Node, m: MultiHeadAttention, q: fx.Node, k: fx.Node, query: fx.Node,
              key: fx.Node) -> tuple[fx.Node, fx.Node]:
    """q (B, H, Lq, hd) and k (B, Hkv, Lk, hd) rotated; one cos/sin when both have the same positions."""
    rope = m.rope()
    assert rope is not None
    head = _features(e, "query") // m.num_heads
    rot = rope.dim(head, "query")
    positions = e.x("positions") if e.has("positions") else None
    tq = e.type("query")
    tk = e.type("key") if e.has("key") else tq
    dtype = tq.dtype
    cos_q, sin_q = _angles(e, query, rope, rot, positions, e.size(query, tq, 1), dtype)
    if positions is not None or not e.has("key") or tq.shape[1] == tk.shape[1]:
        cos_k, sin_k = cos_q, sin_q
    else:
        cos_k, sin_k = _angles(e, query, rope, rot, None, e.size(key, tk, 1), dtype)
    return (_rotate(e, q, head, rot, rope.interleaved, cos_q, sin_q),
            _rotate(e, k, head, rot, rope.interleaved, cos_k, sin_k))


def _mha_mask(e: Emitter, m: MultiHeadAttention, query: fx.Node) -> dict[str, object]:
    """SDPA's masking keyword arguments for the node's causal flag and mask inputs."""
    kwargs: dict[str, object] = {}
    allowed: fx.Node | None = None  # bool, True = attend
    if e.has("key_padding_mask"):  # (batch, Lk), True = padding -> (batch, 1, 1, Lk), True = attend
        pad = e.x("key_padding_mask")
        allowed = e.method("unsqueeze", e.method("unsqueeze", e.method("logical_not", pad), 1), 1)
    if m.causal and (allowed is not None or e.has("attn_mask")):
        causal = _causal_mask(e, query, e.x("key") if e.has("key") else query, 1, keep=True)
        allowed = causal if allowed is None else e.fn(operator.and_, causal, allowed)
    mask = _with_attn_mask(e, allowed, heads_axis=True)
    if mask is not None:
        kwargs["attn_mask"] = mask
    elif m.causal:
        kwargs["is_causal"] = True
    return kwargs


def _cached_mask(e: Emitter, q: fx.Node, k: fx.Node) -> dict[str, object]:
    """SDPA's attn_mask for cached causal self-attention: q (B, H, Lq, hd) after P cached positions,
    k (B, Hkv, P + Lq, hd). Query i sits at position P + i and sees keys j <= P + i that are not
    padding, and always itself (a padding query that saw nothing would give NaN, and its NaN
    values would reach later layers through the cache)."""
    past = e.size(e.x("past_key"), e.type("past_key"), 2)
    ones = e.method("new_ones", q, (e.size(e.x("query"), e.type("query"), 1), e.method("size", k, 2)),
                    dtype=torch.bool)  # (Lq, P + Lq)
    allowed = e.named(e.method("tril", ones, past), "causal_keep")  # j <= P + i
    if e.has("key_padding_mask"):  # (batch, P + Lq), True = padding -> (batch, 1, 1, P + Lq), True = attend
        keep = e.method("unsqueeze", e.method("unsqueeze", e.method("logical_not", e.x("key_padding_mask")), 1), 1)
        itself = e.method("triu", allowed, past)  # j == P + i
        allowed = e.fn(operator.or_, e.fn(operator.and_, allowed, keep), itself)
    mask = _with_attn_mask(e, allowed, heads_axis=True)
    return {"attn_mask": mask}


@TABLE.register("multi_head_attention")
def _multi_head_attention(e: Emitter, n: Node) -> Outputs:
    """nn.MultiheadAttention's parameters (packed in-projection, `out_proj`), computed as nanoGPT
    does: one projection, heads split by views, `scaled_dot_product_attention`, one projection.

    Calling nn.MultiheadAttention itself costs layout copies that SDPA does not need; keeping
    its parameters keeps the state_dict keys and PyTorch's initialisation. With fewer key/value
    heads (grouped-query) the same tensors live in a plain container (nn.MultiheadAttention
    cannot hold them).
    """
    m = _args(n, MultiHeadAttention)
    embed, heads, kv_heads = _features(e, "key" if m.projection_only else "query"), m.num_heads, m.kv_heads
    head = embed // heads
    sizes = (embed, kv_heads * head, kv_heads * head)  # q, k, v rows of the in-projection
    if kv_heads == heads:
        own = Ctor.of("MultiheadAttention", embed, heads, dropout=m.dropout, bias=m.bias, batch_first=True)
    else:
        own = _gqa_container(embed, sum(sizes), m.bias)
    if n.ties:  # the container holds all four tensors; a tie would leave a stray copy in it
        raise LoweringError(f"node '{n.id}': the PyTorch backend cannot tie weight(s) {', '.join(n.ties)} of op "
                            f"'{n.op}'")
    w_in = e.weight("in_proj_weight", own)
    b_in = e.weight("in_proj_bias", own) if m.bias else None
    w_out = e.weight("out_proj.weight", own)
    b_out = e.weight("out_proj.bias", own) if m.bias else None

    def project(x: fx.Node, first: int, parts: int) -> list[fx.Node]:
        """x through the in-projection rows of q, k, v [first, first + parts), split into (batch, L, size) values."""
        group = sizes[first:first + parts]
        rows = slice(sum(sizes[:first]), sum(sizes[:first + parts])) if (first, parts) != (0, 3) else slice(None)
        w = w_in if rows == slice(None) else e.item(w_in, rows)
        b = b_in if b_in is None or rows == slice(None) else e.item(b_in, rows)
        y = e.fn(F.linear, x, w, b)
        if parts == 1:
            return [y]
        chunks = e.method("split", y, group[0] if len(set(group)) == 1 else list(group), -1)
        return [e.item(chunks, i) for i in range(parts)]

    def split(t: fx.Node, name: str, h: int) -> fx.Node:  # (batch, L, h * hd) -> (batch, h, L, hd)
        return e.named(e.method("transpose", e.method("unflatten", t, -1, (h, head)), 1, 2),
                       f"{n.id}_{name}".replace(".", "_"))

    if m.projection_only:  # the keys and values alone, computed once (a cross-attention's, see kv_cache)
        key = e.x("key")
        (k, v) = project(key, 1, 2) if e.x("value") is key else (*project(key, 1, 1), *project(e.x("value"), 2, 1))
        return {"projected_key": split(k, "k", kv_heads), "projected_value": split(v, "v", kv_heads)}
    query = e.x("query")
    key = e.x("key") if e.has("key") else query
    if e.has("projected_key"):  # keys and values projected once, before decoding: the query alone here
        (q,) = project(query, 0, 1)
        q, k, v = split(q, "q", heads), e.x("projected_key"), e.x("projected_value")
    else:
        if not e.has("key"):  # self-attention: one (batch, L, E + 2 kv) projection
            q, k, v = project(query, 0, 3)
        elif not e.has("value"):  # value = key: one (batch, Lk, 2 kv) projection
            (q,), (k, v) = project(query, 0, 1), project(key, 1, 2)
        else:
            (q,), (k,), (v,) = project(query, 0, 1), project(key, 1, 1), project(e.x("value"), 2, 1)
        q, k, v = split(q, "q", heads), split(k, "k", kv_heads), split(v, "v", kv_heads)  # (batch, h, L, hd)
    if m.rotary:
        q, k = _mha_rope(e, n, m, q, k, query, key)
    outs: Outputs = {}
    if e.has("past_key"):  # cached self-attention: append this call's keys and values to the past
        prefix = n.id.replace(".", "_")
        k = e.named(e.fn(torch.cat, [e.x("past_key"), k], 2), f"{prefix}_present_key")  # (B, Hkv, P + Lq, hd)
        v = e.named(e.fn(torch.cat, [e.x("past_value"), v], 2), f"{prefix}_present_value")
        outs = {"present_key": k, "present_value": v}
        kwargs = _cached_mask(e, q, k)
    else:
        kwargs = _mha_mask(e, m, query)
    if m.dropout > 0:  # attention dropout only while training
        kwargs["dropout_p"] = e.fn(operator.mul, e.fx.get_attr("training"), m.dropout)
    if kv_heads != heads:
        kwargs["enable_gqa"] = True
    y = e.fn(F.scaled_dot_product_attention, q, k, v, **kwargs)  # (batch, heads, Lq, hd)
    y = e.method("flatten", e.method("transpose", y, 1, 2), 2)  # (batch, Lq, E)
    return {"y": e.fn(F.linear, y, w_out, b_out), **outs}

