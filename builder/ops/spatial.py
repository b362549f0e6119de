"""Spatial ops beyond the seed set: transposed and 3-D convolution, 3-D and adaptive pooling,
resampling (upsample/interpolate, pixel shuffle) and padding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import sympy
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from ..tensor import ShapeError, TensorType, fmt_dim
from .base import Int2, Op, WeightShapes, expect_float, expect_rank, register
from .layers import _Conv, _Pool

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AvgPool3d", "Conv3d",
    "ConvTranspose1d", "ConvTranspose2d", "Interpolate", "MaxPool3d", "Pad", "PixelShuffle", "PixelUnshuffle",
    "Upsample",
]

Int3 = PositiveInt | tuple[PositiveInt, PositiveInt, PositiveInt]
Pad2 = NonNegativeInt | tuple[NonNegativeInt, NonNegativeInt]
Pad3 = NonNegativeInt | tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt]
_LAYOUTS = {1: "(batch, channels, L)", 2: "(batch, channels, H, W)", 3: "(batch, channels, D, H, W)"}


def _fixed_channels(x: TensorType, port: str = "x", axis: int = 1) -> int:
    """The channel dim, which must be a fixed size (a weight or a channel count depends on it)."""
    c = x.shape[axis]
    if not c.is_Integer:
        raise ShapeError(f"the channel dim (dim {axis}) must be a fixed size, got '{fmt_dim(c)}' in [{x}]", port)
    return int(c)


def _spatial_tuple(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


# --- convolution ---------------------------------------------------------------------------

@register
class Conv3d(_Conv):
    """3-D convolution (torch.nn.Conv3d); in_channels is inferred.

    Input shape: (batch, C_in, D, H, W). Output shape: (batch, out_channels, D', H', W') with
    D' = floor((D + 2p - d(k-1) - 1)/s) + 1, and likewise H', W'.
    """

    op: Literal["conv3d"]
    kernel_size: Int3
    # 3-tuples where the 2-D base class has pairs
    stride: Int3 = 1  # type: ignore[assignment]
    padding: Pad3 | Literal["same", "valid"] = 0  # type: ignore[assignment]
    dilation: Int3 = 1  # type: ignore[assignment]
    SPATIAL: ClassVar[int] = 3

    def _in_channels(self, x: TensorType) -> int:
        expect_rank(x, 5, "x", _LAYOUTS[3])  # before the base class's check, which names the 2-D layout
        return super()._in_channels(x)


class _ConvTranspose(Op):
    """Shared argument checks, shape rule and weights of the transposed convolutions."""

    out_channels: PositiveInt
    groups: PositiveInt = 1
    bias: bool = True
    FAMILY: ClassVar[str] = "conv"
    SPATIAL: ClassVar[int] = 2

    def _t(self, name: str) -> tuple[int, ...]:
        return _spatial_tuple(getattr(self, name), self.SPATIAL)

    @model_validator(mode="after")
    def _check_args(self) -> _ConvTranspose:
        if self.out_channels % self.groups:
            raise ValueError(f"out_channels {self.out_channels} is not divisible by groups {self.groups}")
        for i, (op, s, d) in enumerate(zip(self._t("output_padding"), self._t("stride"), self._t("dilation"),
                                           strict=True)):
            if op >= s and op >= d:  # PyTorch's rule: below the stride or below the dilation
                where = f" (dim {i})" if self.SPATIAL > 1 else ""
                raise ValueError(f"output_padding {op} must be smaller than either stride {s} or dilation {d}{where}")
        return self

    def _in_channels(self, x: TensorType) -> int:
        expect_rank(x, self.SPATIAL + 2, "x", _LAYOUTS[self.SPATIAL])
        expect_float(x, "x")
        c = _fixed_channels(x)
        if c % self.groups:
            raise ShapeError(f"{c} input channels are not divisible by groups {self.groups}", "x")
        return c

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        self._in_channels(x)
        sizes = []
        for n, k, s, p, op, d in zip(x.shape[2:], self._t("kernel_size"), self._t("stride"), self._t("padding"),
                                     self._t("output_padding"), self._t("dilation"), strict=True):
            size = (n - 1) * s - 2 * p + d * (k - 1) + op + 1  # (L-1)s - 2p + d(k-1) + output_padding + 1
            if size.is_Integer and int(size) <= 0:
                raise ShapeError(f"the output size {size} is not positive: kernel {k}, stride {s}, padding {p} "
                                 f"and dilation {d} do not fit an input of size {fmt_dim(n)} in [{x}]", "x")
            sizes.append(sympy.expand(size))
        return {"y": x.with_shape((x.shape[0], sympy.Integer(self.out_channels), *sizes))}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        c = self._in_channels(ins["x"])
        w: WeightShapes = {"weight": (c, self.out_channels // self.groups, *self._t("kernel_size"))}
        if self.bias:
            w["bias"] = (self.out_channels,)
        return w

    def label(self) -> str:
        s = self._t("stride")
        up = "" if set(s) == {1} else f" ↑{s[0]}" if len(set(s)) == 1 else f" ↑{'x'.join(map(str, s))}"
        return f"{self.out_channels}@{'x'.join(map(str, self._t('kernel_size')))}{up}"


@register
class ConvTranspose1d(_ConvTranspose):
    """1-D transposed convolution (torch.nn.ConvTranspose1d); in_channels is inferred.

    Input shape: (batch, C_in, L). Output shape: (batch, out_channels, (L-1)s - 2p + d(k-1) + output_padding + 1).
    """

    op: Literal["conv_transpose1d"]
    kernel_size: PositiveInt
    stride: PositiveInt = 1
    padding: NonNegativeInt = 0
    output_padding: NonNegativeInt = 0
    dilation: PositiveInt = 1
    SPATIAL: ClassVar[int] = 1


@register
class ConvTranspose2d(_ConvTranspose):
    """2-D transposed convolution (torch.nn.ConvTranspose2d); in_channels is inferred.

    Input shape: (batch, C_in, H, W). Output shape: (batch, out_channels, H', W') with
    H' = (H-1)s - 2p + d(k-1) + output_padding + 1.
    """

    op: Literal["conv_transpose2d"]
    kernel_size: Int2
    stride: Int2 = 1
    padding: Pad2 = 0
    output_padding: Pad2 = 0
    dilation: Int2 = 1


# --- 3-D pooling ---------------------------------------------------------------------------

@register
class MaxPool3d(_Pool):
    """3-D max pooling (torch.nn.MaxPool3d); stride defaults to the kernel size.

    Input shape: (batch, C, D, H, W). Output shape: (batch, C, floor((D + 2p - k)/s) + 1, ...).
    """

    op: Literal["max_pool3d"]
    kernel_size: Int3
    stride: Int3 | None = None
    SPATIAL: ClassVar[int] = 3


@register
class AvgPool3d(_Pool):
    """3-D average pooling (torch.nn.AvgPool3d); stride defaults to the kernel size.

    y = the mean over each window; with count_include_pad, padded zeros count in the divisor.

    Input shape: (batch, C, D, H, W). Output shape: (batch, C, floor((D + 2p - k)/s) + 1, ...).
    """

    op: Literal["avg_pool3d"]
    kernel_size: Int3
    stride: Int3 | None = None
    count_include_pad: bool = True
    SPATIAL: ClassVar[int] = 3


# --- adaptive pooling ----------------------------------------------------------------------

class _AdaptivePool(Op):
    FAMILY: ClassVar[str] = "pool"
    SPATIAL: ClassVar[int] = 2

    def sizes(self) -> tuple[int | None, ...]:
        """The output size per spatial dim; None keeps the input's size."""
        v = self.output_size  # type: ignore[attr-defined]
        return (v,) * self.SPATIAL if isinstance(v, int) else tuple(v)

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        expect_rank(x, (self.SPATIAL + 1, self.SPATIAL + 2), "x", "(batch, channels, spatial...)")
        lead, spatial = x.shape[: x.rank - self.SPATIAL], x.shape[x.rank - self.SPATIAL:]
        out = tuple(n if s is None else sympy.Integer(s) for n, s in zip(spatial, self.sizes(), strict=True))
        return {"y": x.with_shape((*lead, *out))}

    def label(self) -> str:
        return "→ " + "x".join("*" if s is None else str(s) for s in self.sizes())


@register
class AdaptiveAvgPool1d(_AdaptivePool):
    """1-D adaptive average pooling (torch.nn.AdaptiveAvgPool1d): `output_size` bins of near-equal width.

    y[i] = mean(x[floor(i L / n) : ceil((i + 1) L / n)]) for n = output_size.

    Input shape: (batch, C, L) or (C, L). Output shape: (batch, C, output_size).
    """

    op: Literal["adaptive_avg_pool1d"]
    output_size: PositiveInt
    SPATIAL: ClassVar[int] = 1


@register
class AdaptiveAvgPool2d(_AdaptivePool):
    """2-D adaptive average pooling (torch.nn.AdaptiveAvgPool2d): bins of near-equal size; None keeps a dim.

    y[i, j] = mean over rows [floor(i H / h), ceil((i + 1) H / h)) and the same bins of columns.

    Input shape: (batch, C, H, W) or (C, H, W). Output shape: (batch, C, h, w) for output_size (h, w).
    """

    op: Literal["adaptive_avg_pool2d"]
    output_size: PositiveInt | tuple[PositiveInt | None, PositiveInt | None]


@register
class AdaptiveMaxPool1d(_AdaptivePool):
    """1-D adaptive max pooling (torch.nn.AdaptiveMaxPool1d): `output_size` bins of near-equal width.

    y[i] = max(x[floor(i L / n) : ceil((i + 1) L / n)]) for n = output_size.

    Input shape: (batch, C, L) or (C, L). Output shape: (batch, C, output_size).
    """

    op: Literal["adaptive_max_pool1d"]
    output_size: PositiveInt
    SPATIAL: ClassVar[int] = 1


@register
class AdaptiveMaxPool2d(_AdaptivePool):
    """2-D adaptive max pooling (torch.nn.AdaptiveMaxPool2d): bins of near-equal size; None keeps a dim.

    y[i, j] = max over rows [floor(i H / h), ceil((i + 1) H / h)) and the same bins of columns.

    Input shape: (batch, C, H, W) or (C, H, W). Output shape: (batch, C, h, w) for output_size (h, w).
    """

    op: Literal["adaptive_max_pool2d"]
    output_size: PositiveInt | tuple[PositiveInt | None, PositiveInt | None]


# --- resampling ----------------------------------------------------------------------------

_MODE_RANK = {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5}
"""The input rank each interpolating mode needs (PyTorch's rule); nearest modes take 3, 4 or 5."""


@register
class Interpolate(Op):
    """Resample the spatial dims (torch.nn.functional.interpolate), to a `size` or by a `scale_factor`.

    Output size = size, or floor(L * scale_factor); values by nearest neighbour or (bi/tri)linear
    or bicubic interpolation, with PyTorch's coordinate rules (`align_corners`).

    Input shape: (batch, C, L), (batch, C, H, W) or (batch, C, D, H, W).
    Output shape: (batch, C, *size) or (batch, C, floor(L * scale_factor), ...).
    """

    op: Literal["interpolate"]
    size: PositiveInt | list[PositiveInt] | None = Field(
        default=None, description="The output size: one for every spatial dim, or a list (one per dim).")
    scale_factor: PositiveFloat | list[PositiveFloat] | None = Field(
        default=None, description="Multiplier of the spatial sizes: one number, or a list (one per dim).")
    mode: Literal["nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear"] = "nearest"
    align_corners: bool | None = Field(
        default=None, description="Align the corner pixels of input and output (interpolating modes only).")
    FAMILY: ClassVar[str] = "pool"

    @model_validator(mode="after")
    def _check_args(self) -> Interpolate:
        if (self.size is None) == (self.scale_factor is None):
            raise ValueError("give exactly one of size and scale_factor")
        if self.align_corners is not None and self.mode not in _MODE_RANK:
            raise ValueError(f"align_corners can only be set with the interpolating modes "
                             f"({' | '.join(_MODE_RANK)}), not with mode '{self.mode}'")
        return self

    def _per_dim(self, value: float | list[float] | int | list[int], n: int, name: str, x: TensorType) -> list:
        if not isinstance(value, list):
            return [value] * n
        if len(value) != n:
            raise ShapeError(f"{name} has {len(value)} entries, but the input has {n} spatial dims [{x}]", "x")
        return list(value)

    def scales(self, x: TensorType) -> list[float] | None:
        """The scale factor per spatial dim, or None when the op is given a `size`."""
        if self.scale_factor is None:
            return None
        return [float(s) for s in self._per_dim(self.scale_factor, x.rank - 2, "scale_factor", x)]

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        expect_rank(x, _MODE_RANK.get(self.mode, (3, 4, 5)), "x",
                    f"mode '{self.mode}': (batch, channels, spatial...)")
        expect_float(x, "x")
        scales = self.scales(x)
        if scales is None:
            assert self.size is not None
            sizes = [sympy.Integer(s) for s in self._per_dim(self.size, x.rank - 2, "size", x)]
        else:
            sizes = [_scaled(n, s) for n, s in zip(x.shape[2:], scales, strict=True)]
            if any(d.is_Integer and int(d) <= 0 for d in sizes):
                raise ShapeError(f"scale_factor {self.scale_factor} leaves no output for [{x}]", "x")
        return {"y": x.with_shape((*x.shape[:2], *sizes))}

    def label(self) -> str:
        if self.scale_factor is not None:
            s = self.scale_factor if isinstance(self.scale_factor, list) else [self.scale_factor]
            what = "×" + "x".join(f"{v:g}" for v in s)
        else:
            what = "→ " + ("x".join(map(str, self.size)) if isinstance(self.size, list) else str(self.size))
        return f"{what} {self.mode}"


def _scaled(n: sympy.Expr, scale: float) -> sympy.Expr:
    """floor(n * scale), as PyTorch computes it (in double) for a fixed n; exactly otherwise."""
    if n.is_Integer:
        return sympy.Integer(math.floor(float(int(n)) * scale))
    return sympy.floor(n * sympy.Rational(repr(scale)))


@register
class Upsample(Interpolate):
    """Resample the spatial dims (torch.nn.Upsample): the same op as `interpolate`, under its module name.

    Output size = size, or floor(L * scale_factor); nearest, (bi/tri)linear or bicubic interpolation.

    Input shape: (batch, C, L), (batch, C, H, W) or (batch, C, D, H, W).
    Output shape: (batch, C, *size) or (batch, C, floor(L * scale_factor), ...).
    """

    op: Literal["upsample"]  # type: ignore[assignment]


class _Shuffle(Op):
    FAMILY: ClassVar[str] = "pool"

    def _check(self, x: TensorType) -> int:
        expect_rank(x, (3, 4), "x", "(batch, channels, H, W)")
        return _fixed_channels(x, "x", x.rank - 3)


@register
class PixelShuffle(_Shuffle):
    """Move channel blocks into space (torch.nn.PixelShuffle): sub-pixel upsampling by r.

    y[c, h r + i, w r + j] = x[c r² + i r + j, h, w].

    Input shape: (batch, C r², H, W). Output shape: (batch, C, H r, W r).
    """

    op: Literal["pixel_shuffle"]
    upscale_factor: PositiveInt

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x, r = ins["x"], self.upscale_factor
        c = self._check(x)
        if c % (r * r):
            raise ShapeError(f"{c} channels are not divisible by upscale_factor² = {r * r} [{x}]", "x")
        *lead, _, h, w = x.shape
        return {"y": x.with_shape((*lead, sympy.Integer(c // (r * r)), h * r, w * r))}

    def label(self) -> str:
        return f"×{self.upscale_factor}"


@register
class PixelUnshuffle(_Shuffle):
    """Move spatial blocks into channels (torch.nn.PixelUnshuffle), the inverse of pixel_shuffle.

    y[c r² + i r + j, h, w] = x[c, h r + i, w r + j].

    Input shape: (batch, C, H r, W r). Output shape: (batch, C r², H, W).
    """

    op: Literal["pixel_unshuffle"]
    downscale_factor: PositiveInt

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x, r = ins["x"], self.downscale_factor
        c = self._check(x)
        *lead, _, h, w = x.shape
        for name, d in (("height", h), ("width", w)):
            if d.is_Integer and int(d) % r:
                raise ShapeError(f"the {name} {d} is not divisible by downscale_factor {r} [{x}]", "x")
        return {"y": x.with_shape((*lead, sympy.Integer(c * r * r), h / r, w / r))}

    def label(self) -> str:
        return f"/{self.downscale_factor}"


# --- padding -------------------------------------------------------------------------------

@register
class Pad(Op):
    """Pad the last dims (torch.nn.functional.pad); `pads` as PyTorch writes it, last dim first.

    pads = [left_last, right_last, left_second_last, right_second_last, ...]; the new entries
    are `value` (constant), a mirror image without the edge (reflect), the edge (replicate) or
    the other end (circular). Negative pads crop (constant mode).

    Input shape: (*, L). Output shape: (*, L + left + right), and likewise for each padded dim.
    """

    op: Literal["pad"]
    pads: list[int] = Field(min_length=2, description="Pairs (before, after), last dim first, as in F.pad.")
    mode: Literal["constant", "reflect", "replicate", "circular"] = "constant"
    value: float = Field(default=0.0, description="The fill value of constant padding.")
    FAMILY: ClassVar[str] = "pool"

    @model_validator(mode="after")
    def _check_args(self) -> Pad:
        if len(self.pads) % 2:
            raise ValueError(f"pads must be pairs (before, after) per dim, got {len(self.pads)} numbers")
        if self.mode != "constant" and self.value != 0:
            raise ValueError(f"mode '{self.mode}' takes no value (only constant padding fills with one)")
        if self.mode != "constant" and any(p < 0 for p in self.pads):
            raise ValueError(f"negative pads crop, which only mode 'constant' does; got {self.pads}")
        if self.mode != "constant" and len(self.pads) > 6:
            raise ValueError(f"mode '{self.mode}' pads at most the last 3 dims, got {len(self.pads) // 2}")
        return self

    def per_axis(self, rank: int) -> list[tuple[int, int]]:
        """(before, after) for every axis of a rank-`rank` input, first axis first."""
        pairs = [(self.pads[i], self.pads[i + 1]) for i in range(0, len(self.pads), 2)][::-1]
        return [(0, 0)] * (rank - len(pairs)) + pairs

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x, n = ins["x"], len(self.pads) // 2
        if self.mode != "constant":  # PyTorch pads the last n of a (n+1)- or (n+2)-dim tensor
            expect_rank(x, (n + 1, n + 2), "x", f"'{self.mode}' padding of the last {n} dim(s)")
        elif x.rank < n:
            raise ShapeError(f"pads cover {n} dims, but the input has rank {x.rank} [{x}]", "x")
        sizes = []
        for axis, (d, (a, b)) in enumerate(zip(x.shape, self.per_axis(x.rank), strict=True)):
            self._check_fits(x, axis, d, a, b)
            sizes.append(d + a + b)
        return {"y": x.with_shape(tuple(sizes))}

    def _check_fits(self, x: TensorType, axis: int, d: sympy.Expr, a: int, b: int) -> None:
        if not d.is_Integer:
            return
        size = int(d)
        if self.mode == "reflect" and max(a, b) >= size:
            raise ShapeError(f"reflect padding {max(a, b)} must be smaller than the size {size} of dim {axis} "
                             f"[{x}]", "x")
        if self.mode == "circular" and max(a, b) > size:
            raise ShapeError(f"circular padding {max(a, b)} is more than the size {size} of dim {axis} [{x}]", "x")
        if size + a + b <= 0:
            raise ShapeError(f"pads ({a}, {b}) leave nothing of dim {axis} (size {size}) [{x}]", "x")

    def label(self) -> str:
        return f"{','.join(map(str, self.pads))} {self.mode}"
