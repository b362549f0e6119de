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

__all__ = ["ExprError", "ExprLimitError", "Expressions", "TensorSizes", "evaluate", "substitute"]

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


class ExprLimitError(Exception):
    """The expressions of one spec need more work than `Limits.max_expr_chars` allows.

    Not an `ExprError`: it stops the whole load or expansion (every later expression would fail
    the same way), where an `ExprError` is one bad expression among others.
    """


def evaluate(text: str, params: Mapping[str, Any], max_int_bits: int = 64) -> Number:
    """Evaluate one expression (the text inside ``${...}``) over `params`."""
    return _run(_tree(text), text, params, max_int_bits)


def _tree(text: str) -> ast.expr:
    try:
        return _parse(text) if len(text) > _CACHED_TEXT else _parse_cached(text)
    except SyntaxError as exc:
        raise ExprError(f"invalid expression '{_shorten(text)}': {exc.msg}") from None
    except (RecursionError, MemoryError):  # `1+1+...` or `------1`, thousands deep
        raise ExprError(f"expression '{_shorten(text)}' is nested too deeply") from None


def _run(tree: ast.expr, text: str, params: Mapping[str, Any], max_int_bits: int) -> Number:
    try:
        return _Evaluator(params, max_int_bits).visit(tree)
    except (RecursionError, MemoryError):
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
    return Expressions(max_int_bits).substitute(value, params)


class Expressions:
    """The ``${...}`` evaluator of one spec's load, or of one expansion of its graph.

    A spec repeats its expressions in every copy of a block, so each result is remembered by its
    text and the values of the names the text reads: 100,000 copies with the same params cost one
    evaluation. What is evaluated afresh counts against `max_chars` (the characters of each text
    evaluated), so that copies which each need new work (a block reading its input's sizes, which
    change from copy to copy) stop at a limit instead of running for minutes. Within one instance
    the count is the same for the same spec, run after run. `max_chars` None counts without a limit.
    """

    def __init__(self, max_int_bits: int = 64, max_chars: int | None = None) -> None:
        self.max_int_bits = max_int_bits
        self.max_chars = max_chars
        self.spent = 0
        """Characters of the texts evaluated afresh so far."""
        self._templates: dict[str, tuple[Any, ...]] = {}  # value -> (True, expression) or (False, text, expr, ...)
        self._names: dict[str, tuple[str, ...]] = {}  # expression -> the names it reads, once parsed
        self._results: dict[tuple[Any, ...], Number] = {}
        self._trees: dict[str, ast.expr] = {}  # parsing takes 4-10 times longer than evaluating
        self._tree_chars = 0

    def substitute(self, value: Any, params: Mapping[str, Any]) -> Any:
        """Replace ``${...}`` in a string value; a string that is one whole expression becomes its value."""
        if not isinstance(value, str) or "${" not in value:
            return value
        template = self._templates.get(value)
        if template is None:  # split once: a 60 KB text is not scanned again in each copy of its block
            whole = _FULL.match(value)
            template = (True, whole.group(1)) if whole and "${" not in whole.group(1) else (False, *_PART.split(value))
            self._templates[value] = template
        if template[0]:
            return self.value(template[1], params)
        parts = template[1:]  # text, expression, text, ..., text
        return "".join(p if i % 2 == 0 else str(self.value(p, params)) for i, p in enumerate(parts))

    def value(self, text: str, params: Mapping[str, Any]) -> Any:
        """A lone param name is its value (text too: ``op: ${norm}``); anything else is evaluated as arithmetic."""
        name = text.strip()
        value = params.get(name) if name.isidentifier() else None
        if isinstance(value, str):
            return value
        return self.evaluate(text, params)

    def evaluate(self, text: str, params: Mapping[str, Any]) -> Number:
        """Evaluate one expression over `params`, or give back the result it had with the same values.

        Raises:
            ExprError: the expression is malformed, unsafe, or names an unknown param.
            ExprLimitError: evaluating it would pass `max_chars`.
        """
        names = self._names.get(text)
        key = None if names is None else _key(text, names, params)
        if key is not None and key in self._results:
            return self._results[key]
        self.spent += len(text)
        if self.max_chars is not None and self.spent > self.max_chars:
            raise ExprLimitError(f"the spec's expressions take more than {self.max_chars:,} characters of evaluation "
                                 f"(each text counted once per distinct set of values it reads)")
        tree = self._trees.get(text)
        if tree is None:
            tree = _tree(text)
            if self._tree_chars + len(text) <= _KEPT_TREE_CHARS:  # a tree takes 100-400 bytes per character
                self._trees[text] = tree
                self._tree_chars += len(text)
        if names is None:
            names = self._names[text] = tuple(sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}))
            key = _key(text, names, params)
        result = _run(tree, text, params, self.max_int_bits)
        if key is not None:
            self._results[key] = result
        return result


_ABSENT = object()
_KEPT_TREE_CHARS = 2**18
"""The characters of expression text whose parsed trees one `Expressions` keeps (tens of MB of trees)."""


def _key(text: str, names: tuple[str, ...], params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What a result is remembered by: the text and the type and value of each name it reads (``2`` and
    ``2.0`` differ in what they make); None when a value cannot be hashed (a list param)."""
    values = [params.get(n, _ABSENT) for n in names]
    key = (text, *((type(v), v) for v in values))
    try:
        hash(key)
    except TypeError:
        return None
    return key


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
