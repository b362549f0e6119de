"""Normalisation layers beyond batch and layer norm: RMSNorm, group norm, instance norm and the
channel-wise layer norm of NCHW tensors (ConvNeXt's)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt

from ..tensor import ShapeError, TensorType, fmt_dim
from .base import Op, WeightShapes, expect_float, expect_rank, last_dim, register


def _channels(x: TensorType, ranks: int | tuple[int, ...], what: str) -> int:
    """The channel count (dim 1) of a float tensor of one of `ranks`; it must be a fixed size."""
    expect_rank(x, ranks, "x", what)
    expect_float(x, "x")
    c = x.shape[1]
    if not c.is_Integer:
        raise ShapeError(f"the channel dim (dim 1) must be a fixed size, got '{fmt_dim(c)}' in [{x}]", "x")
    return int(c)


class _Norm(Op):
    FAMILY: ClassVar[str] = "norm"


@register
class RmsNorm(_Norm):
    """Root-mean-square normalisation over the last dimension (torch.nn.RMSNorm; Llama, T5).

    y = x / sqrt(mean(x^2) + eps) * weight

    Input shape: (*, d). Output shape: same as the input.
    """

    op: Literal["rms_norm"]
    eps: float | None = Field(default=None, gt=0, description="Added to the mean square; none: the dtype's "
                              "machine epsilon, as PyTorch (Llama uses 1e-5 or 1e-6).")
    elementwise_affine: bool = Field(default=True, description="Learn a per-feature scale `weight` (d,).")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        expect_float(ins["x"], "x")
        last_dim(ins["x"], "x", "normalized size")
        return {"y": ins["x"]}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        return {"weight": (last_dim(ins["x"], "x"),)} if self.elementwise_affine else {}

    def label(self) -> str:
        return "" if self.eps is None else f"ε={self.eps:g}"


@register
class GroupNorm(_Norm):
    """Group normalisation (torch.nn.GroupNorm): statistics per sample over groups of channels.

    Each group's channels and positions share one mean and variance; then a per-channel scale and shift.

    y = (x - mean_g) / sqrt(var_g + eps) * weight[c] + bias[c]

    Input shape: (batch, C, *), C divisible by num_groups. Output shape: same as the input.
    """

    op: Literal["group_norm"]
    num_groups: PositiveInt = Field(description="The number of channel groups; must divide the channel count.")
    eps: float = Field(default=1e-5, gt=0, description="Added to the variance.")
    affine: bool = Field(default=True, description="Learn a per-channel `weight` and `bias` (C,).")

    def _channels(self, x: TensorType) -> int:
        c = _channels(x, (2, 3, 4, 5), "(batch, channels, *)")
        if c % self.num_groups:
            raise ShapeError(f"{c} channels cannot be split into {self.num_groups} groups (num_groups must divide "
                             "the channel count)", "x")
        return c

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        self._channels(ins["x"])
        return {"y": ins["x"]}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        c = self._channels(ins["x"])
        return {"weight": (c,), "bias": (c,)} if self.affine else {}

    def label(self) -> str:
        return f"{self.num_groups} groups"


@register
class InstanceNorm(_Norm):
    """Instance normalisation (torch.nn.InstanceNorm1d/2d/3d): statistics per sample and channel.

    Mean and variance over the positions of each channel of each sample; no running statistics.

    y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]

    Input shape: (batch, C, L), (batch, C, H, W) or (batch, C, D, H, W). Output shape: same as the input.
    """

    op: Literal["instance_norm"]
    eps: float = Field(default=1e-5, gt=0, description="Added to the variance.")
    affine: bool = Field(default=False, description="Learn a per-channel `weight` and `bias` (C,).")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        _channels(ins["x"], (3, 4, 5), "(batch, channels, *spatial)")
        return {"y": ins["x"]}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        c = _channels(ins["x"], (3, 4, 5), "(batch, channels, *spatial)")
        return {"weight": (c,), "bias": (c,)} if self.affine else {}

    def label(self) -> str:
        return "affine" if self.affine else ""


@register
class LayerNorm2d(_Norm):
    """Layer normalisation over the channels of an NCHW tensor at each position (ConvNeXt's LayerNorm2d).

    As torchvision's LayerNorm2d: permute to NHWC, layer_norm over C, permute back.

    y = (x - mean_c) / sqrt(var_c + eps) * weight[c] + bias[c]

    Input shape: (batch, C, H, W). Output shape: same as the input.
    """

    op: Literal["layer_norm2d"]
    eps: float = Field(default=1e-6, gt=0, description="Added to the variance.")
    elementwise_affine: bool = Field(default=True, description="Learn a per-channel `weight` and `bias` (C,).")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        _channels(ins["x"], 4, "(batch, channels, height, width)")
        return {"y": ins["x"]}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        c = _channels(ins["x"], 4, "(batch, channels, height, width)")
        return {"weight": (c,), "bias": (c,)} if self.elementwise_affine else {}
