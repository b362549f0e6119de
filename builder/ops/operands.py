"""Ops with a constant operand: a second tensor, or a constant `value` in its place
(``{op: add, in: x, value: 3}``); shared by `add`/`mul` (tensor.py) and the binary ops of
elementwise.py."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from ..tensor import ShapeError, TensorType
from .base import Op

__all__ = ["ConstantOperand", "FillValue", "check_value", "count_inputs"]


def _not_nan(value: float) -> float:
    if math.isnan(value):
        raise ValueError("value must be a number, -inf or inf, not nan")
    return value


FillValue = Annotated[float, Field(allow_inf_nan=True), AfterValidator(_not_nan)]
"""A float that may be -inf or inf (written -.inf in YAML, or as the text "-inf"), never nan."""


def count_inputs(value: Any) -> int | None:
    """How many tensors an `in:` value names (None when it is absent)."""
    if value is None:
        return None
    return 1 if isinstance(value, str) else len(value)


def _one_input_with_value(value: float | None, info: ValidationInfo) -> float | None:
    """With a constant operand the node takes exactly one input."""
    given = count_inputs(info.data.get("in_"))
    if value is not None and given is not None and given != 1:
        raise ValueError(f"with a constant value the op takes one input, but in: names {given}; "
                         "give either the tensors or one input and value")
    return value


def check_value(x: TensorType, value: float, port: str) -> None:
    """A constant operand keeps the input's dtype: integral for integer tensors, none for bool."""
    if x.dtype == "bool":
        raise ShapeError("a constant value cannot be combined with a bool tensor", port)
    if x.dtype.startswith("int") and not (math.isfinite(value) and float(value).is_integer()):
        raise ShapeError(f"value {value:g} is not an integer, but the input is {x.dtype}", port)


class ConstantOperand(Op):
    """Base of ops whose second operand may be a constant `value` instead of a tensor."""

    value: float | None = Field(default=None, description="A constant operand; the node then takes one input.")

    _one_input = field_validator("value")(_one_input_with_value)
