"""Activations: elementwise nonlinearities (some with a learned slope), gated units and (log-)softmax."""

from __future__ import annotations

from typing import ClassVar, Literal

import sympy
from pydantic import Field, PositiveInt, model_validator

from ..tensor import ShapeError, TensorType, fmt_dim, same_dim
from .base import Op, WeightShapes, expect_float, register


class _Activation(Op):
    FAMILY: ClassVar[str] = "activation"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        expect_float(ins["x"], "x")
        return {"y": ins["x"]}


@register
class Relu(_Activation):
    """Rectified linear unit: y = max(x, 0).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["relu"]


@register
class Tanh(_Activation):
    """Hyperbolic tangent: y = tanh(x).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["tanh"]


@register
class Sigmoid(_Activation):
    """Logistic sigmoid: y = 1 / (1 + exp(-x)).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["sigmoid"]


@register
class Gelu(_Activation):
    """Gaussian error linear unit: y = x * Phi(x) (approximate 'tanh' as in GPT-2).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["gelu"]
    approximate: Literal["none", "tanh"] = "none"

    def label(self) -> str:
        return "" if self.approximate == "none" else "tanh approx."


@register
class Softmax(_Activation):
    """Softmax along a dimension: y_i = exp(x_i) / sum_j exp(x_j).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["softmax"]
    dim: int = Field(default=-1, description="The dimension that sums to one.")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        ins["x"].axis(self.dim)
        return super().infer(ins)

    def label(self) -> str:
        return f"dim {self.dim}"


@register
class LogSoftmax(Softmax):  # type: ignore[override]
    """Log of the softmax along a dimension, computed stably: y_i = x_i - logsumexp(x).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["log_softmax"]  # type: ignore[assignment]


# --- activations beyond the seed set ---------------------------------------------------------

@register
class Relu6(_Activation):
    """Rectified linear unit capped at 6 (MobileNet's): y = min(max(x, 0), 6).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["relu6"]


@register
class Hardtanh(_Activation):
    """Linear between two bounds, constant outside: y = min(max(x, min_val), max_val).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["hardtanh"]
    min_val: float = Field(default=-1.0, description="The lower bound.")
    max_val: float = Field(default=1.0, description="The upper bound; must exceed min_val.")

    @model_validator(mode="after")
    def _ordered(self) -> Hardtanh:
        if self.max_val <= self.min_val:
            raise ValueError(f"max_val ({self.max_val:g}) must be greater than min_val ({self.min_val:g})")
        return self

    def label(self) -> str:
        return f"[{self.min_val:g}, {self.max_val:g}]"


@register
class Clamp(_Activation):
    """Clip values to [min, max] (torch.clamp); either bound may be left out, not both.

    y = min(max(x, min), max)

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["clamp"]
    min: float | None = Field(default=None, description="The lower bound (none: no lower bound).")
    max: float | None = Field(default=None, description="The upper bound (none: no upper bound).")

    @model_validator(mode="after")
    def _bounds(self) -> Clamp:
        if self.min is None and self.max is None:
            raise ValueError("clamp needs at least one of min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must not be greater than max ({self.max:g})")
        return self

    def label(self) -> str:
        low = "-∞" if self.min is None else f"{self.min:g}"
        high = "∞" if self.max is None else f"{self.max:g}"
        return f"[{low}, {high}]"


@register
class LeakyRelu(_Activation):
    """Leaky rectified linear unit: y = x if x >= 0 else negative_slope * x.

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["leaky_relu"]
    negative_slope: float = Field(default=0.01, description="The slope for negative inputs.")

    def label(self) -> str:
        return f"slope {self.negative_slope:g}"


@register
class Elu(_Activation):
    """Exponential linear unit: y = x if x > 0 else alpha * (exp(x) - 1).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["elu"]
    alpha: float = Field(default=1.0, description="The saturation value for negative inputs is -alpha.")

    def label(self) -> str:
        return "" if self.alpha == 1.0 else f"α={self.alpha:g}"


@register
class Silu(_Activation):
    """Sigmoid linear unit (swish): y = x * sigmoid(x).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["silu"]


@register
class Mish(_Activation):
    """Mish: y = x * tanh(softplus(x)).

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["mish"]


@register
class Hardswish(_Activation):
    """Hard swish (MobileNetV3): y = x * relu6(x + 3) / 6.

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["hardswish"]


@register
class Hardsigmoid(_Activation):
    """Hard sigmoid as PyTorch defines it: y = relu6(x + 3) / 6.

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["hardsigmoid"]


@register
class Softplus(_Activation):
    """Smooth approximation of relu, linear above a threshold (torch.nn.Softplus).

    y = log(1 + exp(beta * x)) / beta, or y = x where beta * x > threshold

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["softplus"]
    beta: float = Field(default=1.0, gt=0, description="The sharpness: larger is closer to relu.")
    threshold: float = Field(default=20.0, description="Above this value of beta * x the output is x.")

    def label(self) -> str:
        return "" if self.beta == 1.0 else f"β={self.beta:g}"


@register
class Prelu(_Activation):
    """Leaky relu with a learned slope, one shared or one per channel (torch.nn.PReLU).

    y = x if x >= 0 else weight[c] * x, for channel c (dim 1)

    Input shape: any; (batch, C, *) when num_parameters = C. Output shape: same as the input.
    """

    op: Literal["prelu"]
    num_parameters: PositiveInt = Field(default=1, description="1 (one slope) or the channel count (dim 1).")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        expect_float(x, "x")
        if self.num_parameters > 1:
            if x.rank < 2:
                raise ShapeError(f"num_parameters {self.num_parameters} needs a channel dim (dim 1), got a "
                                 f"rank-{x.rank} input [{x}]", "x")
            if not same_dim(x.shape[1], sympy.Integer(self.num_parameters)):
                raise ShapeError(f"num_parameters ({self.num_parameters}) must be 1 or the channel count (dim 1), "
                                 f"got '{fmt_dim(x.shape[1])}' channels in [{x}]", "x")
        return {"y": x}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        return {"weight": (self.num_parameters,)}

    def label(self) -> str:
        return "" if self.num_parameters == 1 else f"{self.num_parameters} slopes"


@register
class Glu(_Activation):
    """Gated linear unit: split x in halves a, b along `dim`; y = a * sigmoid(b).

    Input shape: (*, 2n, *) with 2n at `dim`. Output shape: (*, n, *).
    """

    op: Literal["glu"]
    dim: int = Field(default=-1, description="The dimension split in halves; its size must be even.")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        expect_float(x, "x")
        axis = x.axis(self.dim)
        size = x.shape[axis]
        half = size / 2
        if not half.is_integer:
            why = "odd" if size.is_Integer else "not known to be even (give it a fixed size, or write it as 2*n)"
            raise ShapeError(f"glu halves dim {self.dim}, whose size must be even: '{fmt_dim(size)}' is {why} "
                             f"in [{x}]", "x")
        return {"y": x.with_shape((*x.shape[:axis], half, *x.shape[axis + 1:]))}

    def label(self) -> str:
        return "" if self.dim == -1 else f"dim {self.dim}"
