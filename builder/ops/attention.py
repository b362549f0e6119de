"""Attention: scaled dot-product attention and multi-head attention, with masks."""

from __future__ import annotations

from typing import ClassVar, Literal

import sympy
from pydantic import Field, PositiveInt

from ..tensor import ShapeError, TensorType, fmt_dim, same_dim
from .base import Op, WeightShapes, expect_float, expect_rank, last_dim, register


def _check_padding_mask(mask: TensorType, batch: sympy.Expr, keys: sympy.Expr) -> None:
    if mask.dtype != "bool":
        raise ShapeError(f"key_padding_mask must be bool (True = padding, ignored), got {mask.dtype}",
                         "key_padding_mask")
    if mask.rank != 2 or not same_dim(mask.shape[0], batch) or not same_dim(mask.shape[1], keys):
        raise ShapeError(f"key_padding_mask must be (batch, key_len) = [{fmt_dim(batch)}×{fmt_dim(keys)}], "
                         f"got [{mask}]", "key_padding_mask")


@register
class Attention(Op):
    """Scaled dot-product attention (torch.nn.functional.scaled_dot_product_attention).

    y = softmax(q k^T * scale + mask) v, scale = 1/sqrt(E) unless given.

    Input shape: query (*, Lq, E), key (*, Lk, E), value (*, Lk, Ev), optional bool
    key_padding_mask (batch, Lk), True where a key is padding.
    Output shape: (*, Lq, Ev).
    """

    op: Literal["attention"]
    causal: bool = Field(default=False, description="Mask future positions (query i sees keys <= i).")
    scale: float | None = Field(default=None, description="Score scale; 1/sqrt(E) when omitted.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on attention weights while training.")
    INPUTS: ClassVar[tuple[str, ...]] = ("query", "key", "value", "key_padding_mask")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"key_padding_mask"})
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
        if "key_padding_mask" in ins:
            _check_padding_mask(ins["key_padding_mask"], q.shape[0], k.shape[-2])
        return {"y": q.with_shape((*q.shape[:-1], v.shape[-1]))}

    def label(self) -> str:
        return "causal" if self.causal else ""


@register
class MultiHeadAttention(Op):
    """Multi-head attention (torch.nn.MultiheadAttention, batch_first, packed in-projection).

    y = concat_h(attention(q W_q^h, k W_k^h, v W_v^h)) W_o; key and value default to query.

    Input shape: query (batch, Lq, E), key and value (batch, Lk, E), optional bool
    key_padding_mask (batch, Lk), True where a key is padding.
    Output shape: (batch, Lq, E).
    """

    op: Literal["multi_head_attention"]
    num_heads: PositiveInt
    causal: bool = Field(default=False, description="Mask future positions (query i sees keys <= i).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on attention weights while training.")
    bias: bool = True
    INPUTS: ClassVar[tuple[str, ...]] = ("query", "key", "value", "key_padding_mask")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"key", "value", "key_padding_mask"})
    FAMILY: ClassVar[str] = "attention"

    def _embed(self, ins: dict[str, TensorType]) -> int:
        q = ins["query"]
        expect_rank(q, 3, "query", "(batch, len, embed)")
        expect_float(q, "query")
        e = last_dim(q, "query", "embedding size")
        if e % self.num_heads:
            raise ShapeError(f"embedding size {e} is not divisible by num_heads {self.num_heads}", "query")
        return e

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        q = ins["query"]
        self._embed(ins)
        k = ins.get("key", q)
        v = ins.get("value", k)
        for port, t in (("key", k), ("value", v)):
            expect_rank(t, 3, port, "(batch, len, embed)")
            if not same_dim(t.shape[0], q.shape[0]) or not same_dim(t.shape[2], q.shape[2]):
                raise ShapeError(f"{port} must be (batch, len, {fmt_dim(q.shape[2])}) like the query [{q}], "
                                 f"got [{t}]", port)
        if not same_dim(k.shape[1], v.shape[1]):
            raise ShapeError(f"key and value lengths differ: [{k}] vs [{v}]", "value")
        if "key_padding_mask" in ins:
            _check_padding_mask(ins["key_padding_mask"], q.shape[0], k.shape[1])
        return {"y": q}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        e = self._embed(ins)
        w: WeightShapes = {"in_proj_weight": (3 * e, e)}
        if self.bias:
            w["in_proj_bias"] = (3 * e,)
        w["out_proj.weight"] = (e, e)
        if self.bias:
            w["out_proj.bias"] = (e,)
        return w

    def label(self) -> str:
        return f"{self.num_heads} heads" + (", causal" if self.causal else "")
