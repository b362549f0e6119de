"""Activations: elementwise nonlinearities and (log-)softmax."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..tensor import TensorType
from .base import Op, expect_float, register


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
