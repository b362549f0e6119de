"""Layers with weights: linear, convolution, embeddings, normalisation; and pooling, dropout."""

from __future__ import annotations

from typing import ClassVar, Literal

import sympy
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from ..tensor import ShapeError, TensorType, fmt_dim, same_dim
from .base import Int2, Op, WeightShapes, conv_len, expect_float, expect_rank, last_dim, register


@register
class Linear(Op):
    """Affine map over the last dimension (torch.nn.Linear); in_features is inferred.

    y = x W^T + b

    Input shape: (*, in_features). Output shape: (*, out_features).
    """

    op: Literal["linear"]
    out_features: PositiveInt
    bias: bool = True
    FAMILY: ClassVar[str] = "linear"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        expect_float(x, "x")
        last_dim(x, "x", "in_features")
        return {"y": x.with_shape((*x.shape[:-1], sympy.Integer(self.out_features)))}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        w: WeightShapes = {"weight": (self.out_features, last_dim(ins["x"], "x"))}
        if self.bias:
            w["bias"] = (self.out_features,)
        return w

    def label(self) -> str:
        return f"→ {self.out_features}"


class _Conv(Op):
    out_channels: PositiveInt
    stride: Int2 = 1
    padding: NonNegativeInt | tuple[NonNegativeInt, NonNegativeInt] | Literal["same", "valid"] = 0
    dilation: Int2 = 1
    groups: PositiveInt = 1
    bias: bool = True
    FAMILY: ClassVar[str] = "conv"
    SPATIAL: ClassVar[int] = 2

    def _kernel(self) -> tuple[int, ...]:
        k = self.kernel_size  # type: ignore[attr-defined]
        return (k,) * self.SPATIAL if isinstance(k, int) else tuple(k)

    def _tuple(self, v: int | tuple[int, ...]) -> tuple[int, ...]:
        return (v,) * self.SPATIAL if isinstance(v, int) else tuple(v)

    @model_validator(mode="after")
    def _same_needs_stride_1(self) -> _Conv:
        if self.padding == "same" and self._tuple(self.stride) != (1,) * self.SPATIAL:
            raise ValueError("padding 'same' needs stride 1")
        if self.out_channels % self.groups:
            raise ValueError(f"out_channels {self.out_channels} is not divisible by groups {self.groups}")
        return self

    def _in_channels(self, x: TensorType) -> int:
        expect_rank(x, self.SPATIAL + 2, "x", "(batch, channels, L)" if self.SPATIAL == 1 else "(batch, channels, H, W)")
        expect_float(x, "x")
        c = x.shape[1]
        if not c.is_Integer:
            raise ShapeError(f"the channel dim (dim 1) must be a fixed size, got '{fmt_dim(c)}'", "x")
        if int(c) % self.groups:
            raise ShapeError(f"{c} input channels are not divisible by groups {self.groups}", "x")
        return int(c)

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        self._in_channels(x)
        k, s, d = self._kernel(), self._tuple(self.stride), self._tuple(self.dilation)
        if self.padding == "same":
            sizes = x.shape[2:]
        else:
            p = (0,) * self.SPATIAL if self.padding == "valid" else self._tuple(self.padding)
            try:
                sizes = tuple(conv_len(n, kk, ss, pp, dd) for n, kk, ss, pp, dd in zip(x.shape[2:], k, s, p, d, strict=True))
            except ShapeError as exc:
                raise ShapeError(f"{exc} in [{x}]", "x") from None
        return {"y": x.with_shape((x.shape[0], sympy.Integer(self.out_channels), *sizes))}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        c = self._in_channels(ins["x"])
        w: WeightShapes = {"weight": (self.out_channels, c // self.groups, *self._kernel())}
        if self.bias:
            w["bias"] = (self.out_channels,)
        return w

    def label(self) -> str:
        return f"{self.out_channels}@{'x'.join(map(str, self._kernel()))}"


@register
class Conv1d(_Conv):
    """1-D convolution (torch.nn.Conv1d); in_channels is inferred.

    Input shape: (batch, C_in, L). Output shape: (batch, out_channels, floor((L + 2p - d(k-1) - 1)/s) + 1).
    """

    op: Literal["conv1d"]
    kernel_size: PositiveInt
    stride: PositiveInt = 1
    padding: NonNegativeInt | Literal["same", "valid"] = 0
    dilation: PositiveInt = 1
    SPATIAL: ClassVar[int] = 1


@register
class Conv2d(_Conv):
    """2-D convolution (torch.nn.Conv2d); in_channels is inferred.

    Input shape: (batch, C_in, H, W). Output shape: (batch, out_channels, H', W') with
    H' = floor((H + 2p - d(k-1) - 1)/s) + 1.
    """

    op: Literal["conv2d"]
    kernel_size: Int2


class _Pool(Op):
    padding: NonNegativeInt = 0
    ceil_mode: bool = False
    FAMILY: ClassVar[str] = "pool"
    SPATIAL: ClassVar[int] = 2

    def _t(self, v: int | tuple[int, ...] | None) -> tuple[int, ...]:
        if v is None:
            return self._t(self.kernel_size)  # type: ignore[attr-defined]
        return (v,) * self.SPATIAL if isinstance(v, int) else tuple(v)

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        expect_rank(x, (self.SPATIAL + 1, self.SPATIAL + 2), "x", "(batch, channels, spatial...)")
        k, s = self._t(self.kernel_size), self._t(self.stride)  # type: ignore[attr-defined]
        if self.padding * 2 > min(k):
            raise ShapeError(f"padding {self.padding} is more than half the kernel {k}", "x")
        lead = x.shape[: x.rank - self.SPATIAL]
        try:
            sizes = tuple(conv_len(n, kk, ss, self.padding, 1, self.ceil_mode)
                          for n, kk, ss in zip(x.shape[-self.SPATIAL:], k, s, strict=True))
        except ShapeError as exc:
            raise ShapeError(f"{exc} in [{x}]", "x") from None
        return {"y": x.with_shape((*lead, *sizes))}

    def label(self) -> str:
        k = self._t(self.kernel_size)  # type: ignore[attr-defined]
        s = self._t(self.stride)  # type: ignore[attr-defined]
        return "x".join(map(str, k)) + ("" if s == k else f" /{'x'.join(map(str, s))}")


@register
class MaxPool1d(_Pool):
    """1-D max pooling (torch.nn.MaxPool1d); stride defaults to the kernel size.

    Input shape: (batch, C, L). Output shape: (batch, C, floor((L + 2p - k)/s) + 1).
    """

    op: Literal["max_pool1d"]
    kernel_size: PositiveInt
    stride: PositiveInt | None = None
    SPATIAL: ClassVar[int] = 1


@register
class MaxPool2d(_Pool):
    """2-D max pooling (torch.nn.MaxPool2d); stride defaults to the kernel size.

    Input shape: (batch, C, H, W). Output shape: (batch, C, floor((H + 2p - k)/s) + 1, ...).
    """

    op: Literal["max_pool2d"]
    kernel_size: Int2
    stride: Int2 | None = None


@register
class AvgPool1d(_Pool):
    """1-D average pooling (torch.nn.AvgPool1d, padding counted); stride defaults to the kernel size.

    Input shape: (batch, C, L). Output shape: (batch, C, floor((L + 2p - k)/s) + 1).
    """

    op: Literal["avg_pool1d"]
    kernel_size: PositiveInt
    stride: PositiveInt | None = None
    SPATIAL: ClassVar[int] = 1


@register
class AvgPool2d(_Pool):
    """2-D average pooling (torch.nn.AvgPool2d, padding counted); stride defaults to the kernel size.

    Input shape: (batch, C, H, W). Output shape: (batch, C, floor((H + 2p - k)/s) + 1, ...).
    """

    op: Literal["avg_pool2d"]
    kernel_size: Int2
    stride: Int2 | None = None


@register
class Embedding(Op):
    """Look up integer ids in a table of vectors (torch.nn.Embedding).

    Input shape: (*) int64 ids. Output shape: (*, embedding_dim) float32.
    """

    op: Literal["embedding"]
    num_embeddings: PositiveInt
    embedding_dim: PositiveInt
    padding_idx: int | None = None
    FAMILY: ClassVar[str] = "embedding"

    @model_validator(mode="after")
    def _padding_in_range(self) -> Embedding:
        if self.padding_idx is not None and not -self.num_embeddings <= self.padding_idx < self.num_embeddings:
            raise ValueError(f"padding_idx {self.padding_idx} is out of range for {self.num_embeddings} embeddings")
        return self

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        if x.dtype not in ("int64", "int32"):
            raise ShapeError(f"expected integer ids (int64), got {x.dtype}", "x")
        return {"y": TensorType((*x.shape, sympy.Integer(self.embedding_dim)), "float32")}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def zero_rows(self) -> dict[str, int]:
        """The padding row, which nn.Embedding keeps zero."""
        return {} if self.padding_idx is None else {"weight": self.padding_idx % self.num_embeddings}

    def label(self) -> str:
        return f"{self.num_embeddings}→{self.embedding_dim}"


def _check_positions(ins: dict[str, TensorType], max_len: int) -> None:
    x = ins["x"]
    expect_rank(x, 3, "x", "(batch, seq, features)")
    expect_float(x, "x")
    last_dim(x, "x")
    seq = x.shape[1]
    if "positions" in ins:  # explicit positions (a cache's offset, left padding): any seq, ids below max_len
        pos = ins["positions"]
        if pos.dtype not in ("int64", "int32"):
            raise ShapeError(f"positions must be int64 (or int32), got {pos.dtype}", "positions")
        ok = (pos.rank == 1 and same_dim(pos.shape[0], seq)) or (
            pos.rank == 2 and same_dim(pos.shape[0], x.shape[0]) and same_dim(pos.shape[1], seq))
        if not ok:
            raise ShapeError(f"positions must be (seq,) or (batch, seq) like x [{x}], got [{pos}]", "positions")
    elif seq.is_Integer and int(seq) > max_len:
        raise ShapeError(f"sequence length {seq} is longer than max_len {max_len}", "x")




@register
class PositionEmbedding(Op):
    """Add a learned position embedding (BERT, GPT): y[:, t] = x[:, t] + P[pos_t], pos_t = t by default.

    Input shape: x (batch, seq, d) with seq <= max_len; optional int64 positions (seq,) or
    (batch, seq), each below max_len (a cache's offset, left padding).
    Output shape: same as x.
    """

    op: Literal["position_embedding"]
    max_len: PositiveInt
    INPUTS: ClassVar[tuple[str, ...]] = ("x", "positions")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"positions"})
    FAMILY: ClassVar[str] = "embedding"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        _check_positions(ins, self.max_len)
        return {"y": ins["x"]}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        return {"weight": (self.max_len, last_dim(ins["x"], "x"))}

    def label(self) -> str:
        return f"learned ≤{self.max_len}"


@register
class SinusoidalPosition(Op):
    """Add the fixed sinusoidal position encoding of Vaswani et al. (2017).

    PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(t / 10000^(2i/d)); y = x + PE[pos],
    pos = 0..seq-1 by default.

    Input shape: x (batch, seq, d), d even; optional int64 positions (seq,) or (batch, seq),
    each below max_len. Output shape: same as x.
    """

    op: Literal["sinusoidal_position"]
    max_len: PositiveInt = 5000
    INPUTS: ClassVar[tuple[str, ...]] = ("x", "positions")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"positions"})
    FAMILY: ClassVar[str] = "embedding"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        _check_positions(ins, self.max_len)
        if last_dim(x, "x") % 2:
            raise ShapeError(f"the feature size must be even, got {last_dim(x, 'x')}", "x")
        return {"y": x}

    def buffers(self, ins: dict[str, TensorType]) -> WeightShapes:
        return {"pe": (self.max_len, last_dim(ins["x"], "x"))}

    def label(self) -> str:
        return "sinusoidal"


@register
class Dropout(Op):
    """Zero elements with probability p while training, scaling the rest by 1/(1-p); identity in eval.

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["dropout"]
    p: float = Field(default=0.5, ge=0.0, lt=1.0)
    FAMILY: ClassVar[str] = "regularization"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        return {"y": ins["x"]}

    def label(self) -> str:
        return f"p={self.p:g}"


@register
class BatchNorm(Op):
    """Batch normalisation over dim 1 (torch.nn.BatchNorm1d/2d); running stats as buffers.

    y = (x - mean) / sqrt(var + eps) * weight + bias

    Input shape: (batch, C) or (batch, C, *). Output shape: same as the input.
    """

    op: Literal["batch_norm"]
    eps: float = Field(default=1e-5, gt=0)
    momentum: float = Field(default=0.1, ge=0, le=1)
    affine: bool = True
    FAMILY: ClassVar[str] = "norm"

    def _channels(self, x: TensorType) -> int:
        expect_rank(x, (2, 3, 4, 5), "x", "(batch, channels, *)")
        expect_float(x, "x")
        c = x.shape[1]
        if not c.is_Integer:
            raise ShapeError(f"the channel dim (dim 1) must be a fixed size, got '{fmt_dim(c)}'", "x")
        return int(c)

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        self._channels(ins["x"])
        return {"y": ins["x"]}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        c = self._channels(ins["x"])
        return {"weight": (c,), "bias": (c,)} if self.affine else {}


@register
class LayerNorm(Op):
    """Layer normalisation over the last dimension (torch.nn.LayerNorm).

    y = (x - mean) / sqrt(var + eps) * weight + bias

    Input shape: (*, d). Output shape: same as the input.
    """

    op: Literal["layer_norm"]
    eps: float = Field(default=1e-5, gt=0)
    elementwise_affine: bool = True
    FAMILY: ClassVar[str] = "norm"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        expect_float(ins["x"], "x")
        last_dim(ins["x"], "x", "normalized size")
        return {"y": ins["x"]}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        d = last_dim(ins["x"], "x")
        return {"weight": (d,), "bias": (d,)} if self.elementwise_affine else {}


