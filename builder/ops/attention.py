"""Attention: scaled dot-product attention, multi-head attention (grouped-query, rotary), and
rotary position embedding."""

from __future__ import annotations

from typing import ClassVar, Literal, NamedTuple

import sympy
from pydantic import Field, PositiveFloat, PositiveInt, PrivateAttr, model_validator

from ..tensor import ShapeError, TensorType, fmt_dim, same_dim
from .base import Op, WeightShapes, broadcast, expect_float, expect_rank, last_dim, register

__all__ = ["Attention", "MultiHeadAttention", "Rope", "Rotary"]


class Rope(NamedTuple):
    """Rotary position embedding settings shared by `rotary` and `multi_head_attention`.

    Feature pairs (x_i, x_j) of the first `dim` features are rotated by the angle
    pos / scaling * theta^(-2k/dim) of their pair index k: y_i = x_i cos - x_j sin,
    y_j = x_j cos + x_i sin. Half-split layout (GPT-NeoX, Hugging Face Llama): j = i + dim/2;
    interleaved (GPT-J, Meta's original Llama): (i, j) = (2k, 2k+1).
    """

    theta: float
    fraction: float
    interleaved: bool
    scaling: float | None

    def dim(self, features: int, port: str) -> int:
        """The number of rotated features out of `features` (int(fraction * features), even)."""
        rot = int(features * self.fraction)
        if rot < 2 or rot % 2:
            raise ShapeError(f"rotary embedding needs an even number (>= 2) of rotated features, but "
                             f"{self.fraction} x {features} features gives {rot}", port)
        return rot

    def label(self) -> str:
        parts = ["rope"] + ([f"{self.fraction:g}"] if self.fraction != 1 else [])
        return " ".join(parts + (["interleaved"] if self.interleaved else []))


def _check_padding_mask(mask: TensorType, batch: sympy.Expr, keys: sympy.Expr) -> None:
    if mask.dtype != "bool":
        raise ShapeError(f"key_padding_mask must be bool (True = padding, ignored), got {mask.dtype}",
                         "key_padding_mask")
    if mask.rank != 2 or not same_dim(mask.shape[0], batch) or not same_dim(mask.shape[1], keys):
        raise ShapeError(f"key_padding_mask must be (batch, key_len) = [{fmt_dim(batch)}×{fmt_dim(keys)}], "
                         f"got [{mask}]", "key_padding_mask")


def _check_attn_mask(mask: TensorType, scores: tuple[sympy.Expr, ...], dtype: str) -> None:
    """`mask` (bool, True = may attend; or additive float of the query's dtype) must broadcast to `scores`."""
    if mask.dtype != "bool" and mask.dtype != dtype:
        raise ShapeError(f"attn_mask must be bool (True = may attend) or additive {dtype} like the query, "
                         f"got {mask.dtype}", "attn_mask")
    target = TensorType(scores, dtype)
    shape = "×".join(fmt_dim(d) for d in scores)
    if not 2 <= mask.rank <= len(scores):
        raise ShapeError(f"attn_mask must have rank 2..{len(scores)} and broadcast to the scores [{shape}], "
                         f"got [{mask}]", "attn_mask")
    try:
        out = broadcast([mask, target], ["attn_mask", "query"])
    except ShapeError:
        out = None
    if out is None or not all(same_dim(a, b) for a, b in zip(out.shape, scores, strict=True)):
        raise ShapeError(f"attn_mask [{mask}] does not broadcast to the scores [{shape}]", "attn_mask")


def _check_positions(pos: TensorType, batch: sympy.Expr, length: sympy.Expr, port: str = "positions") -> None:
    if pos.dtype not in ("int64", "int32"):
        raise ShapeError(f"positions must be int64 (or int32), got {pos.dtype}", port)
    ok = (pos.rank == 1 and same_dim(pos.shape[0], length)) or (
        pos.rank == 2 and same_dim(pos.shape[0], batch) and same_dim(pos.shape[1], length))
    if not ok:
        raise ShapeError(f"positions must be (len,) = [{fmt_dim(length)}] or (batch, len) = "
                         f"[{fmt_dim(batch)}×{fmt_dim(length)}], got [{pos}]", port)


def _fixed(d: sympy.Expr, port: str, what: str) -> int:
    if not d.is_Integer:
        raise ShapeError(f"the {what} must be a fixed size, got '{fmt_dim(d)}'", port)
    return int(d)


@register
class Attention(Op):
    """Scaled dot-product attention (torch.nn.functional.scaled_dot_product_attention).

    y = softmax(q k^T * scale + mask) v, scale = 1/sqrt(E) unless given. With 4-D inputs key
    and value may have fewer heads Hkv dividing H (grouped-query attention: kv head j serves
    query heads j*H/Hkv .. (j+1)*H/Hkv - 1, as SDPA's enable_gqa and Llama's repeat_kv).

    Input shape: query (B, [H,] Lq, E), key (B, [Hkv,] Lk, E), value (B, [Hkv,] Lk, Ev),
    optional bool key_padding_mask (B, Lk), True where a key is padding, optional attn_mask
    broadcastable to (B, [H,] Lq, Lk): bool (True = may attend) or additive float.
    Output shape: (B, [H,] Lq, Ev).
    """

    op: Literal["attention"]
    causal: bool = Field(default=False, description="Mask future positions (query i sees keys <= i).")
    scale: float | None = Field(default=None, description="Score scale; 1/sqrt(E) when omitted.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on attention weights while training.")
    INPUTS: ClassVar[tuple[str, ...]] = ("query", "key", "value", "key_padding_mask", "attn_mask")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"key_padding_mask", "attn_mask"})
    FAMILY: ClassVar[str] = "attention"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        q, k, v = ins["query"], ins["key"], ins["value"]
        for port, t in (("query", q), ("key", k), ("value", v)):
            expect_rank(t, (3, 4), port, "(batch, [heads,] len, features)")
            expect_float(t, port)
        if not (q.rank == k.rank == v.rank):
            raise ShapeError(f"query, key and value must have the same rank, got [{q}], [{k}], [{v}]", "key")
        if not same_dim(q.shape[-1], k.shape[-1]):
            raise ShapeError(f"query and key feature sizes differ: [{q}] vs [{k}]", "key")
        if not same_dim(k.shape[-2], v.shape[-2]):
            raise ShapeError(f"key and value lengths differ: [{k}] vs [{v}]", "value")
        if q.rank == 4:
            self.kv_groups(ins)
        if "key_padding_mask" in ins:
            _check_padding_mask(ins["key_padding_mask"], q.shape[0], k.shape[-2])
        if "attn_mask" in ins:
            _check_attn_mask(ins["attn_mask"], (*q.shape[:-1], k.shape[-2]), q.dtype)
        return {"y": q.with_shape((*q.shape[:-1], v.shape[-1]))}

    def kv_groups(self, ins: dict[str, TensorType]) -> int:
        """Query heads per key/value head: 1, or H/Hkv for grouped-query attention (4-D inputs)."""
        q, k, v = ins["query"], ins["key"], ins["value"]
        if q.rank != 4:
            return 1
        if not same_dim(k.shape[1], v.shape[1]):
            raise ShapeError(f"key and value must have the same number of heads: [{k}] vs [{v}]", "value")
        if same_dim(q.shape[1], k.shape[1]):
            return 1
        h, hkv = _fixed(q.shape[1], "query", "head count (dim 1)"), _fixed(k.shape[1], "key", "head count (dim 1)")
        if h % hkv:
            raise ShapeError(f"key/value heads ({hkv}) must divide query heads ({h}) for grouped-query attention, "
                             f"got [{q}] and [{k}]", "key")
        return h // hkv

    def label(self) -> str:
        return "causal" if self.causal else ""


_ROPE_ARGS = ("rope_theta", "rotary_fraction", "rotary_interleaved", "rope_scaling")


@register
class MultiHeadAttention(Op):
    """Multi-head attention (torch.nn.MultiheadAttention, batch_first, packed in-projection).

    y = concat_h(attention(rope(q W_q^h), rope(k W_k^g(h)), v W_v^g(h))) W_o; key and value
    default to query. With num_kv_heads < num_heads (grouped-query attention) key/value
    head g serves num_heads/num_kv_heads query heads and in_proj_weight is
    (E + 2 * num_kv_heads * E/num_heads, E): q rows, then k, then v. With `rotary`, q and k
    are rotated per head after projection (Hugging Face LlamaAttention's rotate_half layout,
    or interleaved pairs); positions default to 0..Lq-1 for q and 0..Lk-1 for k.

    Input shape: query (B, Lq, E), key and value (B, Lk, E), optional bool key_padding_mask
    (B, Lk), True where a key is padding, optional attn_mask (Lq, Lk), (B, Lq, Lk) or
    (B, H, Lq, Lk), each dim possibly 1: bool (True = may attend) or additive float; optional
    int64 positions (Lq,) or (B, Lq) for rotary self-attention; optional past_key and
    past_value (B, Hkv, P, E/H), the projected (and rotated) keys and values of P earlier
    positions, for cached causal self-attention (masks then cover P + Lq keys, query i sits at
    position P + i, and rotary needs the new tokens' positions); optional projected_key and
    projected_value (B, Hkv, Lk, E/H) in place of key and value: keys and values already
    projected into heads (a cross-attention's, computed once from the encoder's memory).
    Output shape: y (B, Lq, E); with past_key, also present_key and present_value
    (B, Hkv, P + Lq, E/H): the past with this call's keys and values appended.

    A derived graph (`nnspec.builder.kv_cache`) may hold the node reduced to its key/value
    projection (`key_value_projection`): key (and value) in, projected_key and projected_value
    out, with the same weights.
    """

    op: Literal["multi_head_attention"]
    num_heads: PositiveInt
    num_kv_heads: PositiveInt | None = Field(
        default=None, description="Key/value heads (grouped-query attention); must divide num_heads. Default num_heads.")
    causal: bool = Field(default=False, description="Mask future positions (query i sees keys <= i).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on attention weights while training.")
    bias: bool = True
    rotary: bool = Field(default=False, description="Rotary position embedding on q and k after projection.")
    rope_theta: PositiveFloat = Field(default=10000.0, description="Rotary base (Llama 2: 10000, Llama 3: 500000).")
    rotary_fraction: float = Field(default=1.0, gt=0.0, le=1.0,
                                   description="Share of each head's features that rotate (GPT-NeoX/Phi partial).")
    rotary_interleaved: bool = Field(default=False,
                                     description="Rotate pairs (x0,x1),(x2,x3) (GPT-J) instead of halves (NeoX/HF).")
    rope_scaling: PositiveFloat | None = Field(default=None,
                                               description="Linear position interpolation: positions / factor.")
    INPUTS: ClassVar[tuple[str, ...]] = ("query", "key", "value", "key_padding_mask", "attn_mask", "positions",
                                         "past_key", "past_value", "projected_key", "projected_value")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"key", "value", "key_padding_mask", "attn_mask", "positions",
                                                    "past_key", "past_value", "projected_key", "projected_value"})
    FAMILY: ClassVar[str] = "attention"
    CACHE_OUTPUTS: ClassVar[tuple[str, ...]] = ("present_key", "present_value")
    PROJECTED: ClassVar[tuple[str, ...]] = ("projected_key", "projected_value")
    _projection: bool = PrivateAttr(default=False)  # set by key_value_projection() only: no spec can ask for it

    def cached(self) -> bool:
        """Whether the node takes a key/value cache (its `in` binds past_key)."""
        return isinstance(self.in_, dict) and "past_key" in self.in_

    @property
    def projection_only(self) -> bool:
        """Whether this is the node's key/value projection alone (see `key_value_projection`)."""
        return self._projection

    def key_value_projection(self, key: str, value: str) -> MultiHeadAttention:
        """This attention reduced to its key and value projections, over the refs `key` and `value`.

        Its outputs are projected_key and projected_value (B, Hkv, Lk, E/H), which the attention
        takes in place of key and value: a cross-attention's keys and values computed once.
        """
        if self.rotary:  # rotated keys would need the key positions here and the query's there
            raise ValueError("a rotary attention's keys and values are not projected alone")
        out = self.model_copy(update={"in_": {"key": key, "value": value}})
        out._projection = True
        return out

    def output_ports(self) -> tuple[str, ...]:
        if self._projection:
            return self.PROJECTED
        return ("y", *self.CACHE_OUTPUTS) if self.cached() else self.OUTPUTS

    @model_validator(mode="after")
    def _check_args(self) -> MultiHeadAttention:
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads {self.num_kv_heads} must divide num_heads {self.num_heads}")
        given = [a for a in _ROPE_ARGS if a in self.model_fields_set]
        if given and not self.rotary:
            raise ValueError(f"{', '.join(given)} given but rotary is false (set rotary: true)")
        return self

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    def rope(self) -> Rope | None:
        """The rotary settings, or None without `rotary`."""
        if not self.rotary:
            return None
        return Rope(self.rope_theta, self.rotary_fraction, self.rotary_interleaved, self.rope_scaling)

    def _embed(self, ins: dict[str, TensorType]) -> int:
        port = "key" if self._projection else "query"  # the projection alone has no query
        q = ins[port]
        expect_rank(q, 3, port, "(batch, len, embed)")
        expect_float(q, port)
        e = last_dim(q, port, "embedding size")
        if e % self.num_heads:
            raise ShapeError(f"embedding size {e} is not divisible by num_heads {self.num_heads}", port)
        return e

    def _heads(self, x: TensorType, port: str) -> TensorType:
        """The type of `x` (B, L, E) projected and split into key/value heads: (B, Hkv, L, E/H)."""
        expect_rank(x, 3, port, "(batch, len, embed)")
        e = int(x.shape[2])
        return x.with_shape((x.shape[0], sympy.Integer(self.kv_heads), x.shape[1], sympy.Integer(e // self.num_heads)))

    def _infer_projection(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        e = self._embed(ins)
        k = ins["key"]
        v = ins.get("value", k)
        pk, pv = self._heads(k, "key"), self._heads(v, "value")
        if not same_dim(v.shape[0], k.shape[0]) or not same_dim(v.shape[1], k.shape[1]) or v.shape[2] != e:
            raise ShapeError(f"value must be (batch, len, embed) like the key [{k}], got [{v}]", "value")
        return {"projected_key": pk, "projected_value": pv}

    def _projected(self, ins: dict[str, TensorType], e: int) -> TensorType | None:
        """The given projected keys' type (B, Hkv, Lk, hd), checked, or None when key/value are projected here."""
        if "projected_key" not in ins and "projected_value" not in ins:
            return None
        q = ins["query"]
        if "projected_key" not in ins or "projected_value" not in ins:
            raise ShapeError("projected_key and projected_value come together",
                             "projected_value" if "projected_key" in ins else "projected_key")
        clash = [p for p in ("key", "value", "past_key") if p in ins]
        if clash:
            raise ShapeError(f"projected_key and projected_value take the place of key and value; {clash[0]} is "
                             "given too", "projected_key")
        if self.causal or self.rotary:
            raise ShapeError("projected keys and values are a cross-attention's (causal and rotary false)",
                             "projected_key")
        pk = ins["projected_key"]
        want = f"(batch, {self.kv_heads}, len, {e // self.num_heads})"
        for port, t in (("projected_key", pk), ("projected_value", ins["projected_value"])):
            ok = (t.rank == 4 and same_dim(t.shape[0], q.shape[0]) and same_dim(t.shape[1], sympy.Integer(self.kv_heads))
                  and same_dim(t.shape[3], sympy.Integer(e // self.num_heads)) and same_dim(t.shape[2], pk.shape[2]))
            if not ok or t.dtype != q.dtype:
                raise ShapeError(f"{port} must be {want} of {q.dtype} like the query [{q}], got [{t}]", port)
        return pk

    def _past(self, ins: dict[str, TensorType], e: int) -> TensorType | None:
        """The past keys' type (B, Hkv, P, hd), checked, or None without a cache."""
        if "past_key" not in ins and "past_value" not in ins:
            return None
        q = ins["query"]
        if "past_key" not in ins or "past_value" not in ins:
            raise ShapeError("past_key and past_value come together", "past_value" if "past_key" in ins else "past_key")
        if "key" in ins or "value" in ins or not self.causal:
            raise ShapeError("a key/value cache (past_key, past_value) is for causal self-attention: no key or value "
                             "inputs, causal: true", "past_key")
        pk, pv = ins["past_key"], ins["past_value"]
        want = f"(batch, {self.kv_heads}, past, {e // self.num_heads})"
        for port, t in (("past_key", pk), ("past_value", pv)):
            ok = (t.rank == 4 and same_dim(t.shape[0], q.shape[0]) and same_dim(t.shape[1], sympy.Integer(self.kv_heads))
                  and same_dim(t.shape[3], sympy.Integer(e // self.num_heads)) and same_dim(t.shape[2], pk.shape[2]))
            if not ok or t.dtype != q.dtype:
                raise ShapeError(f"{port} must be {want} of {q.dtype} like the query [{q}], got [{t}]", port)
        if self.rotary and "positions" not in ins:
            raise ShapeError("rotary attention with a key/value cache needs the new tokens' positions", "positions")
        return pk

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        if self._projection:
            return self._infer_projection(ins)
        q = ins["query"]
        e = self._embed(ins)
        past = self._past(ins, e)
        projected = self._projected(ins, e)
        k = ins.get("key", q)
        v = ins.get("value", k)
        for port, t in (("key", k), ("value", v)):
            expect_rank(t, 3, port, "(batch, len, embed)")
            if not same_dim(t.shape[0], q.shape[0]) or not same_dim(t.shape[2], q.shape[2]):
                raise ShapeError(f"{port} must be (batch, len, {fmt_dim(q.shape[2])}) like the query [{q}], "
                                 f"got [{t}]", port)
        if not same_dim(k.shape[1], v.shape[1]):
            raise ShapeError(f"key and value lengths differ: [{k}] vs [{v}]", "value")
        keys = (projected.shape[2] if projected is not None else k.shape[1] if past is None
                else past.shape[2] + k.shape[1])
        if "key_padding_mask" in ins:
            _check_padding_mask(ins["key_padding_mask"], q.shape[0], keys)
        if "attn_mask" in ins:
            mask = ins["attn_mask"]
            b, lq, lk = q.shape[0], q.shape[1], keys
            scores = (b, lq, lk) if mask.rank == 3 else (b, sympy.Integer(self.num_heads), lq, lk)
            _check_attn_mask(mask, scores, q.dtype)
        rope = self.rope()
        if rope is not None:
            rope.dim(e // self.num_heads, "query")
        if "positions" in ins:
            if rope is None:
                raise ShapeError("positions are only used with rotary: true", "positions")
            if "key" in ins and not same_dim(k.shape[1], q.shape[1]):
                raise ShapeError(f"positions need query and key of the same length (self-attention), got [{q}] "
                                 f"and [{k}]", "positions")
            _check_positions(ins["positions"], q.shape[0], q.shape[1])
        if past is None:
            return {"y": q}
        present = past.with_shape((*past.shape[:2], keys, past.shape[3]))  # (B, Hkv, P + Lq, hd)
        return {"y": q, "present_key": present, "present_value": present}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        e = self._embed(ins)
        rows = e + 2 * self.kv_heads * (e // self.num_heads)
        w: WeightShapes = {"in_proj_weight": (rows, e)}
        if self.bias:
            w["in_proj_bias"] = (rows,)
        w["out_proj.weight"] = (e, e)
        if self.bias:
            w["out_proj.bias"] = (e,)
        return w

    def label(self) -> str:
        parts = [f"{self.num_heads} heads" + (f" ({self.kv_heads} kv)" if self.kv_heads != self.num_heads else "")]
        if self._projection:
            return f"{parts[0]}, keys and values only"
        rope = self.rope()
        if rope is not None:
            parts.append(rope.label())
        if self.causal:
            parts.append("causal")
        return ", ".join(parts)


@register
class Rotary(Op):
    """Rotary position embedding (RoFormer; GPT-NeoX, Llama, GPT-J) on heads-split q or k.

    y[..., i] = x_i cos(a) - x_j sin(a), y[..., j] = x_j cos(a) + x_i sin(a) for each pair (i, j)
    of the first R = fraction*D features, a = pos/scaling * theta^(-2k/R) for pair k; pairs are
    (k, k + R/2) (half-split, rotate_half) or (2k, 2k+1) (interleaved); features past R pass.

    Input shape: x (B, H, T, D), optional int64 positions (T,) or (B, T) (default 0..T-1).
    Output shape: (B, H, T, D).
    """

    op: Literal["rotary"]
    theta: PositiveFloat = Field(default=10000.0, description="Frequency base (Llama 2: 10000, Llama 3: 500000).")
    fraction: float = Field(default=1.0, gt=0.0, le=1.0,
                            description="Share of the features that rotate (GPT-NeoX/Phi partial rotary).")
    interleaved: bool = Field(default=False,
                              description="Rotate pairs (x0,x1),(x2,x3) (GPT-J) instead of halves (NeoX/HF).")
    scaling: PositiveFloat | None = Field(default=None, description="Linear position interpolation: positions / factor.")
    INPUTS: ClassVar[tuple[str, ...]] = ("x", "positions")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"positions"})
    FAMILY: ClassVar[str] = "attention"

    def rope(self) -> Rope:
        return Rope(self.theta, self.fraction, self.interleaved, self.scaling)

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        expect_rank(x, 4, "x", "(batch, heads, len, head_dim)")
        expect_float(x, "x")
        self.rope().dim(last_dim(x, "x", "head size"), "x")
        if "positions" in ins:
            _check_positions(ins["positions"], x.shape[0], x.shape[2])
        return {"y": x}

    def label(self) -> str:
        return self.rope().label().removeprefix("rope").strip()
