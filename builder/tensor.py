"""Tensor types with symbolic dimensions (sympy).

A dimension is a sympy expression: an Integer for a fixed size, a Symbol for a named size
(``batch``, ``seq``), or an expression built from them by shape rules
(``floor((H - 5)/2) + 1``). Symbols are positive integers, so sympy can simplify.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import sympy

__all__ = [
    "DTYPES", "Dim", "ShapeError", "TensorType", "dim", "dim_size", "fmt_dim", "is_int", "same_dim", "symbol",
]

Dim = sympy.Expr
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "bool")


class ShapeError(ValueError):
    """A shape rule's complaint: what was expected and what arrived, on which input port."""

    def __init__(self, message: str, port: str | None = None) -> None:
        super().__init__(message)
        self.port = port


@cache
def symbol(name: str) -> sympy.Symbol:
    """The symbol for a named dimension (a positive integer)."""
    return sympy.Symbol(name, integer=True, positive=True)


def dim(value: int | str | sympy.Expr) -> sympy.Expr:
    """A dimension from an int, a symbol name, or an expression."""
    if isinstance(value, sympy.Expr):
        return value
    if isinstance(value, bool):
        raise TypeError("a dimension cannot be a boolean")
    if isinstance(value, int):
        return sympy.Integer(value)
    return symbol(value)


def is_int(d: sympy.Expr) -> bool:
    return d.is_Integer is True


def same_dim(a: sympy.Expr, b: sympy.Expr) -> bool:
    """Whether two dims are provably equal."""
    if a == b:
        return True
    if a.is_Integer and b.is_Integer:
        return False
    return sympy.expand(a - b) == 0


def fmt_dim(d: sympy.Expr) -> str:
    return str(d).replace(" ", "")


def dim_size(text: str, sizes: Mapping[str, int], default: int) -> int:
    """The size of a dim as `fmt_dim` writes it: ``7``, ``seq``, or a sum such as
    ``past_sequence_length+seq``, its names read from `sizes` (missing ones: `default`). Other
    text (which may come from a foreign file, so it is never evaluated) is one unknown name."""
    if text in sizes:
        return int(sizes[text])
    terms = text.replace(" ", "").split("+")
    if len(terms) > 1 and all(_TERM.fullmatch(t) for t in terms):
        return sum(int(t) if t.isdigit() else int(sizes.get(t, default)) for t in terms)
    return int(text) if text.lstrip("-").isdigit() else default


_TERM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


@dataclass(frozen=True)
class TensorType:
    """A tensor's shape (sympy dims) and dtype name."""

    shape: tuple[sympy.Expr, ...]
    dtype: str = "float32"

    @classmethod
    def of(cls, shape: list[int | str | sympy.Expr] | tuple[int | str | sympy.Expr, ...],
           dtype: str = "float32") -> TensorType:
        return cls(tuple(dim(d) for d in shape), dtype)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def symbols(self) -> set[str]:
        return {s.name for d in self.shape for s in d.free_symbols}  # type: ignore[attr-defined]

    def axis(self, a: int, what: str = "dim") -> int:
        """Normalise a possibly negative axis, or complain that it is out of range."""
        if not -self.rank <= a < self.rank:
            raise ShapeError(f"{what} {a} is out of range for a rank-{self.rank} input {self}")
        return a % self.rank

    def with_shape(self, shape: tuple[sympy.Expr, ...]) -> TensorType:
        return TensorType(shape, self.dtype)

    def concrete(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The shape with every symbol replaced by its size in `sizes`."""
        subs = {symbol(k): v for k, v in sizes.items()}
        out = []
        for d in self.shape:
            v = d.subs(subs) if d.free_symbols else d
            if not v.is_Integer:
                raise ValueError(f"no size given for {sorted(s.name for s in v.free_symbols)}")  # type: ignore[attr-defined]
            out.append(int(v))
        return tuple(out)

    def __str__(self) -> str:
        return "×".join(fmt_dim(d) for d in self.shape) if self.shape else "scalar"

    def describe(self) -> str:
        return f"[{', '.join(fmt_dim(d) for d in self.shape)}] {self.dtype}"
