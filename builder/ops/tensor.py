"""Tensor ops: arithmetic, joining and splitting, reshaping, indexing and reductions."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import sympy
from pydantic import Field, PositiveInt, model_validator

from ..tensor import ShapeError, TensorType, fmt_dim, same_dim
from .base import VARIADIC, Op, broadcast, expect_rank, register
from .operands import ConstantOperand, check_value


class _Elementwise(ConstantOperand):
    INPUTS: ClassVar[tuple[str, ...]] = (VARIADIC,)
    MIN_INPUTS: ClassVar[int] = 1  # two or more tensors, or one and a constant `value`

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        if len(ins) == 1:
            ((port, x),) = ins.items()
            if self.value is None:
                raise ShapeError(f"{self.op} needs at least 2 inputs, or one input and a constant value")
            check_value(x, self.value, port)
            return {"y": x}
        return {"y": broadcast(list(ins.values()), list(ins))}

    def _label(self, symbol: str) -> str:
        return symbol if self.value is None else f"{symbol} {self.value:g}"


@register
class Add(_Elementwise):
    """Elementwise sum of two or more tensors, with broadcasting, or of one tensor and a constant.

    y = x0 + x1 + ..., or y = x0 + value

    Input shape: any, mutually broadcastable. Output shape: the broadcast shape.
    """

    op: Literal["add"]

    def label(self) -> str:
        return self._label("+")


@register
class Mul(_Elementwise):
    """Elementwise product of two or more tensors, with broadcasting, or of one tensor and a constant.

    y = x0 * x1 * ..., or y = x0 * value

    Input shape: any, mutually broadcastable. Output shape: the broadcast shape.
    """

    op: Literal["mul"]

    def label(self) -> str:
        return self._label("×")


@register
class Scale(Op):
    """Multiply by a constant, e.g. sqrt(d_model) after an embedding.

    y = factor * x

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["scale"]
    factor: float = Field(description="The constant multiplier.")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        return {"y": ins["x"]}

    def label(self) -> str:
        return f"×{self.factor:g}"


@register
class Matmul(Op):
    """Matrix product with batch broadcasting (torch.matmul on rank >= 2 inputs).

    y = a @ b

    Input shape: a (*, n, k), b (*, k, m). Output shape: (*, n, m).
    """

    op: Literal["matmul"]
    INPUTS: ClassVar[tuple[str, ...]] = ("a", "b")

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        a, b = ins["a"], ins["b"]
        expect_rank(a, range(2, 9), "a", "(*, n, k)")
        expect_rank(b, range(2, 9), "b", "(*, k, m)")
        if not same_dim(a.shape[-1], b.shape[-2]):
            raise ShapeError(f"inner dims differ: a is [{a}], b is [{b}] ({fmt_dim(a.shape[-1])} vs "
                             f"{fmt_dim(b.shape[-2])})", "b")
        batch = broadcast([a.with_shape(a.shape[:-2]), b.with_shape(b.shape[:-2])], ["a", "b"])
        return {"y": a.with_shape((*batch.shape, a.shape[-2], b.shape[-1]))}

    def label(self) -> str:
        return "@"


@register
class Concat(Op):
    """Join tensors along an existing dimension (torch.cat).

    Input shape: equal except along `dim`. Output shape: sizes along `dim` summed.
    """

    op: Literal["concat"]
    dim: int = Field(default=-1, description="The dimension to join along.")
    INPUTS: ClassVar[tuple[str, ...]] = (VARIADIC,)
    MIN_INPUTS: ClassVar[int] = 2

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        types = list(ins.values())
        first = types[0]
        axis = first.axis(self.dim)
        total: sympy.Expr = sympy.Integer(0)
        for port, t in ins.items():
            if t.rank != first.rank or any(
                    i != axis and not same_dim(a, b) for i, (a, b) in enumerate(zip(first.shape, t.shape, strict=True))):
                raise ShapeError(f"input {port} [{t}] does not match input 0 [{first}] outside dim {self.dim}", port)
            total = total + t.shape[axis]
        shape = list(first.shape)
        shape[axis] = total
        return {"y": first.with_shape(tuple(shape))}

    def label(self) -> str:
        return f"dim {self.dim}"


@register
class Split(Op):
    """Split a tensor along a dimension into pieces of the given sizes (ports 0, 1, ...).

    Input shape: (..., sum(sizes), ...). Output shapes: (..., sizes[i], ...).
    """

    op: Literal["split"]
    sizes: list[PositiveInt] = Field(min_length=1, description="Size of each piece along `dim`.")
    dim: int = Field(default=-1, description="The dimension to split.")

    def output_ports(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(len(self.sizes)))

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        axis = x.axis(self.dim)
        if not same_dim(x.shape[axis], sympy.Integer(sum(self.sizes))):
            raise ShapeError(f"sizes {self.sizes} add up to {sum(self.sizes)}, but dim {self.dim} of [{x}] "
                             f"is {fmt_dim(x.shape[axis])}", "x")
        out = {}
        for i, size in enumerate(self.sizes):
            shape = list(x.shape)
            shape[axis] = sympy.Integer(size)
            out[str(i)] = x.with_shape(tuple(shape))
        return out

    def label(self) -> str:
        return f"{self.sizes} dim {self.dim}"


@register
class Reshape(Op):
    """Reshape to `shape`: 0 copies the input's size at that position, -1 takes what is left.

    Input shape: any. Output shape: `shape`, with the same number of elements.
    """

    op: Literal["reshape"]
    shape: list[int] = Field(min_length=1, description="Target sizes; 0 copies the input's, one -1 is inferred.")

    @model_validator(mode="after")
    def _sizes(self) -> Reshape:
        if self.shape.count(-1) > 1 or any(s < -1 for s in self.shape):
            raise ValueError("shape may hold one -1 and no other negative size")
        return self

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        out: list[sympy.Expr | None] = []
        for i, s in enumerate(self.shape):
            if s == 0:
                if i >= x.rank:
                    raise ShapeError(f"size 0 at position {i} copies a dim that [{x}] does not have", "x")
                out.append(x.shape[i])
            else:
                out.append(None if s == -1 else sympy.Integer(s))
        total = sympy.Mul(*x.shape)
        known = sympy.Mul(*(d for d in out if d is not None))
        if None in out:
            rest = sympy.simplify(total / known)
            if sympy.fraction(sympy.together(rest))[1] != 1:  # 12/5, 4*batch/3, 64/batch
                some = " for every size of its symbolic dims" if not rest.is_Rational else ""
                raise ShapeError(f"cannot reshape [{x}] to {self.shape}: {fmt_dim(total)} elements "
                                 f"do not divide by {fmt_dim(known)}{some}", "x")
            out[out.index(None)] = rest
        elif not same_dim(total, known):
            raise ShapeError(f"cannot reshape [{x}] ({fmt_dim(total)} elements) to {self.shape} "
                             f"({fmt_dim(known)} elements)", "x")
        return {"y": x.with_shape(tuple(d for d in out if d is not None))}

    def label(self) -> str:
        return str(self.shape)


@register
class Flatten(Op):
    """Flatten dims start_dim..end_dim into one (torch.flatten).

    Input shape: (d0, ..., dn). Output shape: the product of the flattened dims in their place.
    """

    op: Literal["flatten"]
    start_dim: int = 1
    end_dim: int = -1

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        a, b = x.axis(self.start_dim, "start_dim"), x.axis(self.end_dim, "end_dim")
        if a > b:
            raise ShapeError(f"start_dim {self.start_dim} comes after end_dim {self.end_dim} for [{x}]", "x")
        return {"y": x.with_shape((*x.shape[:a], sympy.Mul(*x.shape[a:b + 1]), *x.shape[b + 1:]))}


@register
class Transpose(Op):
    """Swap two dimensions (torch.transpose).

    Input shape: (..., a, ..., b, ...). Output shape: (..., b, ..., a, ...).
    """

    op: Literal["transpose"]
    dim0: int
    dim1: int

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        a, b = x.axis(self.dim0, "dim0"), x.axis(self.dim1, "dim1")
        shape = list(x.shape)
        shape[a], shape[b] = shape[b], shape[a]
        return {"y": x.with_shape(tuple(shape))}

    def label(self) -> str:
        return f"{self.dim0}↔{self.dim1}"


@register
class Permute(Op):
    """Reorder all dimensions (torch.permute).

    Input shape: (d0, ..., dn). Output shape: (d[dims[0]], ..., d[dims[n]]).
    """

    op: Literal["permute"]
    dims: list[int] = Field(min_length=1)

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        if len(self.dims) != x.rank:
            raise ShapeError(f"dims {self.dims} name {len(self.dims)} dims, the input [{x}] has {x.rank}", "x")
        axes = [x.axis(d) for d in self.dims]
        if sorted(axes) != list(range(x.rank)):
            raise ShapeError(f"dims {self.dims} is not a permutation of 0..{x.rank - 1}", "x")
        return {"y": x.with_shape(tuple(x.shape[a] for a in axes))}

    def label(self) -> str:
        return str(self.dims)


@register
class Slice(Op):
    """Take a range along one dimension, like x[..., start:end:step].

    Input shape: (..., n, ...). Output shape: (..., len(range(start, end, step)), ...).
    """

    op: Literal["slice"]
    dim: int
    start: int = 0
    end: int | None = None
    step: PositiveInt = 1

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        axis = x.axis(self.dim)
        n = x.shape[axis]

        def clamp(v: int) -> sympy.Expr:
            e = n + v if v < 0 else sympy.Integer(v)
            return sympy.Max(0, sympy.Min(e, n))

        start = clamp(self.start)
        end = n if self.end is None else clamp(self.end)
        size = sympy.Max(0, sympy.ceiling((end - start) / self.step))
        if size == 0:
            raise ShapeError(f"slice {self.start}:{self.end}:{self.step} of dim {self.dim} of [{x}] is empty", "x")
        shape = list(x.shape)
        shape[axis] = size
        return {"y": x.with_shape(tuple(shape))}

    def label(self) -> str:
        return f"[{self.start}:{'' if self.end is None else self.end}{'' if self.step == 1 else f':{self.step}'}]"


@register
class Select(Op):
    """Pick one index along a dimension and drop it (torch.select), e.g. the [CLS] token.

    Input shape: (..., n, ...). Output shape: (..., ...) with that dim removed.
    """

    op: Literal["select"]
    dim: int
    index: int

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        axis = x.axis(self.dim)
        n = x.shape[axis]
        if n.is_Integer and not -int(n) <= self.index < int(n):
            raise ShapeError(f"index {self.index} is out of range for dim {self.dim} of size {n}", "x")
        return {"y": x.with_shape(x.shape[:axis] + x.shape[axis + 1:])}

    def label(self) -> str:
        return f"[{self.index}] dim {self.dim}"


@register
class Mean(Op):
    """Mean over one or more dimensions (torch.mean).

    Input shape: any. Output shape: the reduced dims removed, or kept as 1 with keepdim.
    """

    op: Literal["mean"]
    dim: int | Annotated[list[int], Field(min_length=1)] = Field(
        description="Dimension(s) to reduce (a list names at least one: torch reads [] as every dim).")
    keepdim: bool = False

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        dims = [self.dim] if isinstance(self.dim, int) else self.dim
        axes = {x.axis(d) for d in dims}
        if len(axes) != len(dims):
            raise ShapeError(f"dim {self.dim} names a dimension twice", "x")
        if self.keepdim:
            shape = tuple(sympy.Integer(1) if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return {"y": x.with_shape(shape)}

    def label(self) -> str:
        return f"dim {self.dim}"


