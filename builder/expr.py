"""`${...}` expressions: arithmetic over params, evaluated by an AST whitelist (never `eval`).

Allowed: numbers, param names, ``+ - * / // % **``, unary ``- +``, comparisons, ``and/or/not``,
``a if cond else b`` and the calls ``min max floor ceil abs int float round sqrt``. The sizes of
a tensor in scope (a block's inputs) are read as ``x.channels`` (dim 1), ``x.features`` (the
last dim), ``x.rank`` and ``x.shape[i]``; a text param compares with ``==``/``!=`` to quoted
text, and ``${name}`` alone is the param's value whatever its type. Anything else (other
attributes and subscripts, other calls, text arithmetic, lambdas) is refused.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ExprError", "TensorSizes", "evaluate", "substitute"]

Number = int | float | bool

_FULL = re.compile(r"^\$\{(.*)\}$", re.DOTALL)
_PART = re.compile(r"\$\{([^}]*)\}")

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}


def _round(x: Number, ndigits: int | None = None) -> Number:
    # round(5, -10**9) would compute 10**(10**9): no float has more than ~330 digits anyway.
    if ndigits is not None and abs(ndigits) > 400:
        raise ValueError(f"ndigits {ndigits} is out of range")
    return round(x, ndigits)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min, "max": max, "floor": math.floor, "ceil": math.ceil, "abs": abs, "int": int,
    "float": float, "round": _round, "sqrt": math.sqrt,
}


@dataclass(frozen=True)
class TensorSizes:
    """The shape of a tensor that expressions may read: fixed sizes as ints, symbolic ones as anything else
    (text, or a sympy expression: printed only in an error, since printing one takes long)."""

    name: str
    shape: tuple[object, ...]

    def dim(self, index: int, what: str) -> int:
        """The fixed size at `index`, or an error saying why there is none."""
        if not -len(self.shape) <= index < len(self.shape):
            raise ExprError(f"{what}: '{self.name}' has rank {len(self.shape)}, so no dim {index}")
        size = self.shape[index]
        if isinstance(size, bool) or not isinstance(size, int):
            shown = f"{self.name}.shape[{index}]"
            lead = shown if what == shown else f"{what} ({shown})"
            raise ExprError(f"{lead} is the symbolic '{size}'; a fixed size is needed here")
        return size


SIZES = ("channels", "features", "rank", "shape")
"""The sizes an expression reads from a tensor: ``x.channels``, ``x.features``, ``x.rank``, ``x.shape[i]``."""


class ExprError(ValueError):
    """An expression that is malformed, unsafe, or names an unknown param."""

    def __init__(self, message: str, unknown: str | None = None) -> None:
        super().__init__(message)
        self.unknown = unknown


def evaluate(text: str, params: Mapping[str, Any], max_int_bits: int = 64) -> Number:
    """Evaluate one expression (the text inside ``${...}``) over `params`."""
    try:
        tree = _parse(text) if len(text) > _CACHED_TEXT else _parse_cached(text)
        return _Evaluator(params, max_int_bits).visit(tree)
    except SyntaxError as exc:
        raise ExprError(f"invalid expression '{_shorten(text)}': {exc.msg}") from None
    except (RecursionError, MemoryError):  # `1+1+...` or `------1`, thousands deep
        raise ExprError(f"expression '{_shorten(text)}' is nested too deeply") from None


_CACHED_TEXT = 200
"""Longer expressions are parsed each time, so that the cache stays small whatever a spec holds."""


def _parse(text: str) -> ast.expr:
    return ast.parse(text.strip(), mode="eval").body


_parse_cached = functools.lru_cache(maxsize=1024)(_parse)
"""Parse each expression text once: a spec repeats its expressions in every copy of a block, and
parsing takes longer than evaluating. Trees are only read, never changed."""


def _shorten(text: str, size: int = 60) -> str:
    return text if len(text) <= size else text[:size] + "..."


def substitute(value: Any, params: Mapping[str, Any], max_int_bits: int = 64) -> Any:
    """Replace ``${...}`` in a string value; a string that is one whole expression becomes its value."""
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _FULL.match(value)
    if whole and "${" not in whole.group(1):
        return _value(whole.group(1), params, max_int_bits)
    return _PART.sub(lambda m: str(_value(m.group(1), params, max_int_bits)), value)


def _value(text: str, params: Mapping[str, Any], max_int_bits: int) -> Any:
    """A lone param name is its value (text too: ``op: ${norm}``); anything else is evaluated as arithmetic."""
    name = text.strip()
    value = params.get(name) if name.isidentifier() else None
    if isinstance(value, str):
        return value
    return evaluate(text, params, max_int_bits)


class _Evaluator:
    def __init__(self, params: Mapping[str, Any], max_int_bits: int) -> None:
        self.params = params
        self.limit = 2**max_int_bits

    def _check(self, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and abs(value) >= self.limit:
            raise ExprError(f"integer overflow: result has more than {self.limit.bit_length() - 1} bits")
        if isinstance(value, float) and not math.isfinite(value):
            raise ExprError("result is not a finite number")
        if not isinstance(value, int | float):  # (-8) ** 0.5 is complex
            raise ExprError(f"result {value} is not a real number")
        return value

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and node.value is not None:
            return self._check(node.value)
        if isinstance(node, ast.Name):
            if node.id in ("true", "True"):
                return True
            if node.id in ("false", "False"):
                return False
            if node.id not in self.params:
                raise ExprError(f"unknown param '{node.id}'", unknown=node.id)
            value = self.params[node.id]
            if isinstance(value, TensorSizes):
                raise ExprError(f"'{node.id}' is a tensor; read its sizes as {node.id}.channels, {node.id}.features, "
                                f"{node.id}.rank or {node.id}.shape[i]")
            if not isinstance(value, int | float):
                raise ExprError(f"param '{node.id}' is {type(value).__name__} {value!r}, not a number")
            return self._check(value)
        if isinstance(node, ast.Attribute):
            return self._size(node)
        if isinstance(node, ast.Subscript):
            return self._shape_item(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self.visit(node.left), self.visit(node.right)
            if isinstance(node.op, ast.Pow) and isinstance(right, int | float) and abs(right) > 4096:
                raise ExprError(f"exponent {right} is too large")
            try:
                return self._check(_BINARY[type(node.op)](left, right))
            except ZeroDivisionError:
                raise ExprError("division by zero") from None
            except OverflowError:
                raise ExprError("numeric overflow") from None
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return self._check(_UNARY[type(node.op)](self.visit(node.operand)))
        if isinstance(node, ast.BoolOp):
            values = [self.visit(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            text_ok = all(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops)
            left = self._operand(node.left, text_ok)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self._operand(comparator, text_ok)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            func = _FUNCTIONS.get(node.func.id)
            if func is None:
                raise ExprError(f"function '{node.func.id}' is not allowed (allowed: {', '.join(_FUNCTIONS)})")
            args = [self.visit(a) for a in node.args]  # their own errors (an unknown param) pass through as they are
            try:
                value = func(*args)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ExprError(f"{node.func.id}(): {exc}") from None
            return self._check(value)
        raise ExprError(f"'{_shorten(ast.unparse(node))}' is not allowed in an expression (only arithmetic over params)")

    def _operand(self, node: ast.expr, text_ok: bool) -> Any:
        """A comparison operand: text (a quoted constant or a text param) where the comparison is ``==``/``!=``."""
        if text_ok and isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if text_ok and isinstance(node, ast.Name) and isinstance(self.params.get(node.id), str):
            return self.params[node.id]
        return self.visit(node)

    def _tensor(self, node: ast.expr, text: str) -> TensorSizes:
        value = self.params.get(node.id) if isinstance(node, ast.Name) else None
        if not isinstance(value, TensorSizes):
            raise ExprError(f"'{_shorten(text)}' is not allowed in an expression (sizes are read from a tensor in "
                            "scope: x.channels, x.features, x.rank, x.shape[i])")
        return value

    def _size(self, node: ast.Attribute) -> int:
        text = ast.unparse(node)
        tensor = self._tensor(node.value, text)
        if node.attr not in SIZES:
            raise ExprError(f"'{_shorten(text)}': a tensor has no size '{node.attr}' (known: {', '.join(SIZES)})")
        if node.attr == "rank":
            return len(tensor.shape)
        if node.attr == "shape":
            raise ExprError(f"'{_shorten(text)}' needs an index: {text}[0], {text}[-1]")
        return tensor.dim(1 if node.attr == "channels" else -1, text)

    def _shape_item(self, node: ast.Subscript) -> int:
        text = ast.unparse(node)
        value = node.value
        if not (isinstance(value, ast.Attribute) and value.attr == "shape") or isinstance(node.slice, ast.Slice):
            raise ExprError(f"'{_shorten(text)}' is not allowed in an expression (only x.shape[i] is indexed)")
        tensor = self._tensor(value.value, text)
        index = self.visit(node.slice)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ExprError(f"'{_shorten(text)}': the index must be an integer, got {index!r}")
        return tensor.dim(index, f"{tensor.name}.shape[{index}]")
