"""Elementwise arithmetic (sub, div, pow, sqrt, ..., where, masked_fill) and reductions
(sum, max, min) beside `mean`.

The binary ops take two tensors with NumPy broadcasting, or one tensor and a constant
`value` (``{op: div, in: x, value: 6}``): exactly one of the two forms. `add` and `mul`
(in `tensor.py`) take `value` the same way.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from ..tensor import ShapeError, TensorType, fmt_dim, same_dim
from .base import Op, broadcast, expect_float, register
from .operands import ConstantOperand, FillValue, check_value
from .tensor import Mean

__all__: list[str] = []


class _Binary(ConstantOperand):
    INPUTS: ClassVar[tuple[str, ...]] = ("a", "b")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"b"})
    FLOAT_ONLY: ClassVar[bool] = False
    SYMBOL: ClassVar[str] = ""

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        a = ins["a"]
        if self.FLOAT_ONLY:
            expect_float(a, "a")
        if "b" not in ins:
            if self.value is None:
                raise ShapeError(f"{self.op} needs a second input (b) or a constant value")
            check_value(a, self.value, "a")
            return {"y": a}
        b = ins["b"]
        if b.dtype != a.dtype:
            raise ShapeError(f"input b is {b.dtype}, input a is {a.dtype}; both must have one dtype", "b")
        return {"y": broadcast([a, b], ["a", "b"])}

    def label(self) -> str:
        return self.SYMBOL if self.value is None else f"{self.SYMBOL} {self.value:g}"


@register
class Sub(_Binary):
    """Elementwise difference with broadcasting, or minus a constant.

    y = a - b, or y = a - value

    Input shape: a and b mutually broadcastable (or a alone with value). Output shape: the broadcast shape.
    """

    op: Literal["sub"]
    SYMBOL: ClassVar[str] = "−"


@register
class Div(_Binary):
    """Elementwise true division with broadcasting, or by a constant.

    y = a / b, or y = a / value

    Input shape: a and b floating-point, mutually broadcastable (or a alone with value). Output shape: the
    broadcast shape.
    """

    op: Literal["div"]
    FLOAT_ONLY: ClassVar[bool] = True
    SYMBOL: ClassVar[str] = "÷"


@register
class Pow(_Binary):
    """Elementwise power with broadcasting, or to a constant exponent.

    y = a ** b, or y = a ** value

    Input shape: a and b floating-point, mutually broadcastable (or a alone with value). Output shape: the
    broadcast shape.
    """

    op: Literal["pow"]
    FLOAT_ONLY: ClassVar[bool] = True
    SYMBOL: ClassVar[str] = "^"


@register
class Minimum(_Binary):
    """Elementwise minimum with broadcasting, or against a constant (a clamp from above).

    y = min(a, b), or y = min(a, value)

    Input shape: a and b mutually broadcastable (or a alone with value). Output shape: the broadcast shape.
    """

    op: Literal["minimum"]
    SYMBOL: ClassVar[str] = "min"


@register
class Maximum(_Binary):
    """Elementwise maximum with broadcasting, or against a constant (a clamp from below).

    y = max(a, b), or y = max(a, value)

    Input shape: a and b mutually broadcastable (or a alone with value). Output shape: the broadcast shape.
    """

    op: Literal["maximum"]
    SYMBOL: ClassVar[str] = "max"


class _Unary(Op):
    FLOAT_ONLY: ClassVar[bool] = True

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        if self.FLOAT_ONLY:
            expect_float(x, "x")
        elif x.dtype == "bool":
            raise ShapeError("expected a numeric tensor, got bool", "x")
        return {"y": x}


@register
class Sqrt(_Unary):
    """Elementwise square root.

    y = sqrt(x)

    Input shape: any, floating-point. Output shape: same as the input.
    """

    op: Literal["sqrt"]


@register
class Rsqrt(_Unary):
    """Elementwise reciprocal square root.

    y = 1 / sqrt(x)

    Input shape: any, floating-point. Output shape: same as the input.
    """

    op: Literal["rsqrt"]


@register
class Exp(_Unary):
    """Elementwise exponential.

    y = e ** x

    Input shape: any, floating-point. Output shape: same as the input.
    """

    op: Literal["exp"]


@register
class Log(_Unary):
    """Elementwise natural logarithm.

    y = ln(x)

    Input shape: any, floating-point. Output shape: same as the input.
    """

    op: Literal["log"]


@register
class Neg(_Unary):
    """Elementwise negation.

    y = -x

    Input shape: any, numeric. Output shape: same as the input.
    """

    op: Literal["neg"]
    FLOAT_ONLY: ClassVar[bool] = False


@register
class Abs(_Unary):
    """Elementwise absolute value.

    y = |x|

    Input shape: any, numeric. Output shape: same as the input.
    """

    op: Literal["abs"]
    FLOAT_ONLY: ClassVar[bool] = False


@register
class Where(Op):
    """Pick from x where the condition holds, else from y (torch.where), with broadcasting.

    y = condition ? x : y

    Input shape: condition (bool), x and y (one dtype), mutually broadcastable. Output shape: the broadcast shape.
    """

    op: Literal["where"]
    INPUTS: ClassVar[tuple[str, ...]] = ("condition", "x", "y")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        cond, x, y = ins["condition"], ins["x"], ins["y"]
        if cond.dtype != "bool":
            raise ShapeError(f"expected a bool condition, got {cond.dtype}", "condition")
        if y.dtype != x.dtype:
            raise ShapeError(f"input y is {y.dtype}, input x is {x.dtype}; both must have one dtype", "y")
        return {"y": TensorType(broadcast([cond, x, y], ["condition", "x", "y"]).shape, x.dtype)}

    def label(self) -> str:
        return "cond ? x : y"


@register
class MaskedFill(Op):
    """Set the elements of x where the mask is True to a constant (Tensor.masked_fill), e.g. -inf before a softmax.

    y = mask ? value : x

    Input shape: x any; mask bool, broadcastable to x's shape. Output shape: same as x.
    """

    op: Literal["masked_fill"]
    value: FillValue = Field(description="The fill value; -inf and inf are allowed (YAML -.inf, or the text \"-inf\").")
    INPUTS: ClassVar[tuple[str, ...]] = ("x", "mask")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x, mask = ins["x"], ins["mask"]
        if mask.dtype != "bool":
            raise ShapeError(f"expected a bool mask, got {mask.dtype}", "mask")
        both = broadcast([x, mask], ["x", "mask"])
        if both.rank != x.rank or not all(same_dim(a, b) for a, b in zip(both.shape, x.shape, strict=True)):
            raise ShapeError(f"mask [{mask}] does not broadcast to x [{x}] (it would make "
                             f"[{', '.join(fmt_dim(d) for d in both.shape)}])", "mask")
        if x.dtype == "bool" and self.value not in (0.0, 1.0):
            raise ShapeError(f"value {self.value:g} does not fit the bool input (0 or 1)", "x")
        if x.dtype.startswith("int") and not (math.isfinite(self.value) and self.value.is_integer()):
            raise ShapeError(f"value {self.value:g} does not fit the {x.dtype} input", "x")
        return {"y": x}

    def label(self) -> str:
        return f"← {self.value:g}"


class _Reduction(Mean):
    """A reduction with `mean`'s arguments and shape rule, over numeric tensors."""

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        if ins["x"].dtype == "bool":
            raise ShapeError("expected a numeric tensor, got bool", "x")
        return super().infer(ins)


@register
class Sum(_Reduction):
    """Sum over one or more dimensions (torch.sum).

    Input shape: any, numeric. Output shape: the reduced dims removed, or kept as 1 with keepdim.
    """

    op: Literal["sum"]  # type: ignore[assignment]


@register
class Max(_Reduction):
    """Largest value over one or more dimensions (torch.amax: values only, no indices).

    Input shape: any, numeric. Output shape: the reduced dims removed, or kept as 1 with keepdim.
    """

    op: Literal["max"]  # type: ignore[assignment]


@register
class Min(_Reduction):
    """Smallest value over one or more dimensions (torch.amin: values only, no indices).

    Input shape: any, numeric. Output shape: the reduced dims removed, or kept as 1 with keepdim.
    """

    op: Literal["min"]  # type: ignore[assignment]
