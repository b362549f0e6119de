"""Tensor construction and indexing: squeeze/unsqueeze, expand, repeat, stack, gather,
index_select, `constant` and the learned free tensor `parameter`.

Sizes written in `constant` and `expand` may be symbolic: an integer, a dim name of the spec
(``batch``), or ``+ - *`` arithmetic over them (``seq + 1``). Backends compute such a size at
run time from a graph input that carries the symbol (`dim_sources`).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, ClassVar, Literal

import sympy
from pydantic import AfterValidator, Field, PositiveInt, model_validator

from ..tensor import DTYPES, ShapeError, TensorType, fmt_dim, same_dim, symbol
from .base import VARIADIC, Op, WeightShapes, register
from .operands import FillValue

__all__ = ["dim_sources", "parse_size"]

_ARITH: dict[type[ast.operator], str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


def _size_expr(node: ast.expr, text: str) -> sympy.Expr:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return sympy.Integer(node.value)
    if isinstance(node, ast.Name):
        return symbol(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_size_expr(node.operand, text)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        a, b = _size_expr(node.left, text), _size_expr(node.right, text)
        return a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
    raise ValueError(f"size '{text}' is not an integer, a dim name or + - * over them (such as seq + 1)")


def parse_size(value: int | str) -> sympy.Expr:
    """A size as written: an integer, a dim name (``batch``), or ``+ - *`` over them (``seq + 1``).

    Raises:
        ValueError: anything else (never evaluated as Python).
    """
    if isinstance(value, int):
        return sympy.Integer(value)
    if len(value) > 200:
        raise ValueError("size expression is too long")
    try:
        tree = ast.parse(value.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"size '{value}' is not an integer, a dim name or + - * over them (such as seq + 1)") from None
    return _size_expr(tree, value)


def _valid_size(value: int | str) -> int | str:
    if isinstance(value, str):
        parse_size(value)
    return value


Size = Annotated[int | str, AfterValidator(_valid_size)]
"""A size that may be symbolic (checked by `parse_size`)."""


def dim_sources(inputs: Mapping[str, TensorType]) -> dict[str, tuple[str, int]]:
    """Where each symbolic dim can be read at run time: symbol name to (graph input, axis), the first
    input (in the spec's order) and axis whose size is exactly that symbol."""
    out: dict[str, tuple[str, int]] = {}
    for name, t in inputs.items():
        for axis, d in enumerate(t.shape):
            if d.is_Symbol and str(d) not in out:
                out[str(d)] = (name, axis)
    return out


def _positive(d: sympy.Expr, what: str) -> sympy.Expr:
    if d.is_Integer and int(d) < 1:
        raise ShapeError(f"{what} must be at least 1, got {fmt_dim(d)}")
    return d


def _new_axis(dim: int, rank: int) -> int:
    """A dim of an op that adds one dimension (unsqueeze, stack): -rank-1 .. rank."""
    if not -rank - 1 <= dim <= rank:
        raise ShapeError(f"dim {dim} is out of range for a new dimension of a rank-{rank} input "
                         f"(expected {-rank - 1}..{rank})")
    return dim % (rank + 1)


@register
class Squeeze(Op):
    """Remove dimensions of size 1 (torch.squeeze with dims).

    Input shape: (..., 1, ...), the named dims of fixed size 1. Output shape: those dims removed.
    """

    op: Literal["squeeze"]
    dim: int | Annotated[list[int], Field(min_length=1)] = Field(
        description="The dimension(s) to remove; each must have size 1 (a list names at least one).")

    def axes(self, x: TensorType) -> list[int]:
        dims = [self.dim] if isinstance(self.dim, int) else self.dim
        axes = sorted({x.axis(d) for d in dims})
        if len(axes) != len(dims):
            raise ShapeError(f"dim {self.dim} names a dimension twice", "x")
        return axes

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        axes = self.axes(x)
        for a in axes:
            d = x.shape[a]
            if not d.is_Integer:
                raise ShapeError(f"dim {a} of [{x}] is '{fmt_dim(d)}', a symbolic size; squeeze needs a fixed size 1",
                                 "x")
            if int(d) != 1:
                raise ShapeError(f"dim {a} of [{x}] has size {d}, not 1", "x")
        return {"y": x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in axes))}

    def label(self) -> str:
        return f"dim {self.dim}"


@register
class Unsqueeze(Op):
    """Insert a dimension of size 1 (torch.unsqueeze).

    Input shape: (d0, ..., dn). Output shape: a 1 inserted at `dim` (rank n + 2).
    """

    op: Literal["unsqueeze"]
    dim: int = Field(description="Where the new dimension goes in the output (-rank-1 .. rank).")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        a = _new_axis(self.dim, x.rank)
        return {"y": x.with_shape((*x.shape[:a], sympy.Integer(1), *x.shape[a:]))}

    def label(self) -> str:
        return f"dim {self.dim}"


@register
class Expand(Op):
    """Broadcast size-1 dimensions to a larger size without copying (Tensor.expand).

    Input shape: (d0, ..., dn). Output shape: `shape`, where -1 keeps the input's size, a dim of size 1 may
    grow, and new leading dims may be added; sizes may be symbolic (``[batch, -1, -1]``).
    """

    op: Literal["expand"]
    shape: list[Size] = Field(min_length=1, description="Target sizes: -1 keeps a dim; names and seq + 1 allowed.")

    def sizes(self) -> list[sympy.Expr | None]:
        """The target sizes, None for -1."""
        return [None if s == -1 else parse_size(s) for s in self.shape]

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        target = self.sizes()
        new = len(target) - x.rank
        if new < 0:
            raise ShapeError(f"shape {self.shape} has {len(target)} sizes, fewer than the input's rank {x.rank}", "x")
        out: list[sympy.Expr] = []
        for i, t in enumerate(target):
            have = x.shape[i - new] if i >= new else None
            if t is None:
                if have is None:
                    raise ShapeError(f"size -1 at position {i} is a new leading dim, which has no size to keep", "x")
                out.append(have)
                continue
            _positive(t, f"size at position {i}")
            if have is not None and not (same_dim(have, t) or have == 1):
                raise ShapeError(f"cannot expand dim {i - new} of [{x}] (size {fmt_dim(have)}) to {fmt_dim(t)}: "
                                 "only size-1 dims grow", "x")
            out.append(t)
        return {"y": x.with_shape(tuple(out))}

    def label(self) -> str:
        return f"→ {self.shape}"


def _tile(x: TensorType, repeats: Sequence[int]) -> TensorType:
    """x repeated `repeats[i]` times along each dim, leading 1s added to whichever is shorter."""
    rank = max(x.rank, len(repeats))
    shape = [sympy.Integer(1)] * (rank - x.rank) + list(x.shape)
    reps = [1] * (rank - len(repeats)) + list(repeats)
    return x.with_shape(tuple(d * r for d, r in zip(shape, reps, strict=True)))


@register
class Repeat(Op):
    """Repeat the whole tensor along each dimension (Tensor.repeat, numpy.tile).

    y[i0, ..., in] = x[i0 mod d0, ..., in mod dn]

    Input shape: (d0, ..., dn). Output shape: (r0*d0, ..., rn*dn); more repeats than dims add leading dims.
    """

    op: Literal["repeat"]
    repeats: list[PositiveInt] = Field(min_length=1, description="How many copies along each dim (at least one per "
                                       "input dim; extra entries add leading dims).")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        if len(self.repeats) < x.rank:
            raise ShapeError(f"repeats {self.repeats} has {len(self.repeats)} entries, fewer than the input's rank "
                             f"{x.rank} (tile prepends 1s instead)", "x")
        return {"y": _tile(x, self.repeats)}

    def label(self) -> str:
        return f"×{self.repeats}"


@register
class Tile(Repeat):
    """Repeat the whole tensor along each dimension (numpy.tile, ONNX Tile; `repeat` under its other name).

    y[i0, ..., in] = x[i0 mod d0, ..., in mod dn]

    Input shape: (d0, ..., dn). Output shape: (r0*d0, ..., rn*dn); fewer repeats than dims are padded with
    leading 1s, more add leading dims.
    """

    op: Literal["tile"]  # type: ignore[assignment]

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        return {"y": _tile(ins["x"], self.repeats)}


@register
class Stack(Op):
    """Join tensors of one shape along a new dimension (torch.stack).

    Input shape: all the same, (d0, ..., dn). Output shape: the number of inputs inserted at `dim`.
    """

    op: Literal["stack"]
    dim: int = Field(default=0, description="Where the new dimension goes in the output.")
    INPUTS: ClassVar[tuple[str, ...]] = (VARIADIC,)

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        types = list(ins.values())
        first = types[0]
        for port, t in ins.items():
            if t.rank != first.rank or not all(same_dim(a, b) for a, b in zip(t.shape, first.shape, strict=True)):
                raise ShapeError(f"input {port} [{t}] differs from input 0 [{first}]; stack needs one shape", port)
            if t.dtype != first.dtype:
                raise ShapeError(f"input {port} is {t.dtype}, input 0 is {first.dtype}", port)
        a = _new_axis(self.dim, first.rank)
        return {"y": first.with_shape((*first.shape[:a], sympy.Integer(len(types)), *first.shape[a:]))}

    def label(self) -> str:
        return f"dim {self.dim}"


def _expect_index(t: TensorType, port: str = "index") -> None:
    if t.dtype != "int64":
        raise ShapeError(f"expected an int64 index tensor, got {t.dtype}", port)


@register
class Gather(Op):
    """Pick values along a dimension at the positions an index tensor gives (torch.gather).

    y[i][j][k] = x[index[i][j][k]][j][k] for dim 0 (likewise for the other dims)

    Input shape: x (d0, ..., dn); index int64 of the same rank, no larger than x outside `dim`.
    Output shape: the index's shape.
    """

    op: Literal["gather"]
    dim: int = Field(description="The dimension the indices select along.")
    INPUTS: ClassVar[tuple[str, ...]] = ("x", "index")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x, index = ins["x"], ins["index"]
        _expect_index(index)
        if index.rank != x.rank:
            raise ShapeError(f"index [{index}] has rank {index.rank}, x [{x}] has rank {x.rank}; they must match",
                             "index")
        axis = x.axis(self.dim)
        for i, (a, b) in enumerate(zip(index.shape, x.shape, strict=True)):
            if i == axis or same_dim(a, b) or (a.is_Integer and b.is_Integer and int(a) <= int(b)):
                continue
            raise ShapeError(f"dim {i} of index [{index}] is {fmt_dim(a)}, of x [{x}] {fmt_dim(b)}; outside dim "
                             f"{self.dim} the index may not be larger than x", "index")
        return {"y": x.with_shape(index.shape)}

    def label(self) -> str:
        return f"dim {self.dim}"


@register
class IndexSelect(Op):
    """Take whole slices along a dimension at the positions a 1-D index gives (torch.index_select).

    Input shape: x (..., n, ...); index int64 (k,). Output shape: (..., k, ...).
    """

    op: Literal["index_select"]
    dim: int = Field(description="The dimension to select along.")
    INPUTS: ClassVar[tuple[str, ...]] = ("x", "index")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x, index = ins["x"], ins["index"]
        _expect_index(index)
        if index.rank != 1:
            raise ShapeError(f"expected a 1-D index, got [{index}]", "index")
        axis = x.axis(self.dim)
        return {"y": x.with_shape((*x.shape[:axis], index.shape[0], *x.shape[axis + 1:]))}

    def label(self) -> str:
        return f"dim {self.dim}"


Dtype = Literal["float32", "float16", "bfloat16", "float64", "int64", "int32", "bool"]
assert set(Dtype.__args__) == set(DTYPES)  # type: ignore[attr-defined]


@register
class Constant(Op):
    """A fixed tensor, with no inputs: zeros, ones, a filled value, or a range (torch.zeros/ones/full/arange).

    y = zeros(shape) | ones(shape) | full(shape, value) | arange(start, end, step)

    Input shape: none. Output shape: `shape` (sizes may be symbolic: batch, seq + 1), or
    (ceil((end - start) / step),) for arange.
    """

    op: Literal["constant"]
    fill: Literal["zeros", "ones", "full", "arange"] = Field(description="What the tensor holds.")
    shape: list[Size] | None = Field(default=None, description="Sizes for zeros, ones and full; may be symbolic.")
    value: FillValue | None = Field(default=None, description="The value for fill: full (-inf and inf allowed).")
    start: float = Field(default=0, description="arange: the first value.")
    end: float | Size | None = Field(default=None, description="arange: the end (excluded); an int may be symbolic.")
    step: float = Field(default=1, description="arange: the step.")
    dtype: Dtype | None = Field(default=None, description="float32 by default; int64 for an arange of integers.")
    INPUTS: ClassVar[tuple[str, ...]] = ()
    MIN_INPUTS: ClassVar[int] = 0

    @model_validator(mode="after")
    def _fits_fill(self) -> Constant:
        sized = self.fill != "arange"
        if sized and self.shape is None:
            raise ValueError(f"fill: {self.fill} needs a shape")
        if not sized and self.shape is not None:
            raise ValueError("fill: arange takes start, end and step, not a shape")
        if (self.fill == "full") != (self.value is not None):
            raise ValueError("value goes with fill: full, and fill: full needs one")
        if not sized and self.end is None:
            raise ValueError("fill: arange needs an end")
        if sized and (self.end is not None or self.start != 0 or self.step != 1):
            raise ValueError(f"start, end and step go with fill: arange, not {self.fill}")
        if self.step == 0:
            raise ValueError("step must not be 0")
        if not sized and self.dtype == "bool":
            raise ValueError("fill: arange makes numbers, not bool (torch.arange has no bool kernel)")
        return self

    def out_dtype(self) -> str:
        if self.dtype is not None:
            return self.dtype
        if self.fill == "arange" and not any(isinstance(v, float) and not v.is_integer()
                                             for v in (self.start, self.end, self.step)):
            return "int64"
        return "float32"

    def sizes(self) -> list[sympy.Expr]:
        """The sizes of `shape` as sympy dims."""
        return [parse_size(s) for s in self.shape or []]

    def end_size(self) -> sympy.Expr:
        """arange's end as a dim (a number, or symbolic)."""
        assert self.end is not None
        return parse_size(self.end) if isinstance(self.end, str) else sympy.Rational(str(self.end))

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        dtype = self.out_dtype()
        if self.fill == "arange":
            if isinstance(self.end, str) and not (float(self.start).is_integer() and float(self.step).is_integer()):
                raise ShapeError("a symbolic end needs an integer start and step")
            span = (self.end_size() - sympy.Rational(str(self.start))) / sympy.Rational(str(self.step))
            n = sympy.ceiling(span)
            if n.is_Integer and int(n) < 1:
                raise ShapeError(f"arange({self.start:g}, {self.end}, {self.step:g}) is empty")
            return {"y": TensorType((n,), dtype)}
        value = {"zeros": 0.0, "ones": 1.0}.get(self.fill, self.value)
        assert value is not None
        if dtype == "bool" and value not in (0.0, 1.0):
            raise ShapeError(f"value {value:g} does not fit dtype bool")
        if dtype.startswith("int") and not value.is_integer():
            raise ShapeError(f"value {value:g} does not fit dtype {dtype}")
        return {"y": TensorType(tuple(_positive(d, f"size {i}") for i, d in enumerate(self.sizes())), dtype)}

    def label(self) -> str:
        if self.fill == "arange":
            return f"arange({self.start:g}, {self.end}, {self.step:g})"
        what = f"full {self.value:g}" if self.fill == "full" else self.fill
        return f"{what} {self.shape}"


@register
class Parameter(Op):
    """A learned free tensor with no inputs (nn.Parameter): a class token, a position table, a layer scale.

    Initialised to zeros unless the node's ``init: {weight: normal(std=0.02)}`` says otherwise.

    Input shape: none. Output shape: `shape`.
    """

    op: Literal["parameter"]
    shape: list[PositiveInt] = Field(min_length=1, description="The tensor's fixed sizes.")
    INPUTS: ClassVar[tuple[str, ...]] = ()
    MIN_INPUTS: ClassVar[int] = 0

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        return {"y": TensorType.of(list(self.shape))}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        return {"weight": tuple(self.shape)}

    def label(self) -> str:
        return f"{self.shape} = {math.prod(self.shape):,}"
