"""ONNX lowerings of elementwise arithmetic, reductions, and tensor construction and indexing.

Sizes that are symbolic in the checked graph (a `constant` of shape ``[batch, seq + 1]``, an
`expand` to ``[batch, 1, 768]``) are computed in the graph from the shape of a graph input that
carries the symbol (Shape, then Add/Mul), so exported models keep their dynamic axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sympy

from nnspec.builder import Node, TensorRef
from nnspec.builder.ops.elementwise import MaskedFill
from nnspec.builder.ops.operands import ConstantOperand
from nnspec.builder.ops.shaping import (
    Constant,
    Expand,
    Gather,
    IndexSelect,
    Parameter,
    Repeat,
    Squeeze,
    Stack,
    Unsqueeze,
    dim_sources,
)
from nnspec.builder.ops.tensor import Mean
from nnspec.builder.tensor import same_dim

from .dtypes import np_dtype
from .table import DTYPES, LOWERINGS, Emitter, Init

__all__ = ["shape_vector", "size_vector"]


# --- sizes known only at run time ----------------------------------------------------------

def size_vector(e: Emitter, d: sympy.Expr) -> str:
    """Dim `d` as a 1-element int64 vector: a constant, or computed from the shapes of the graph
    inputs that carry its symbols (each read once per graph)."""
    if d.is_Integer:
        return e.ints([int(d)], "size")
    if d.is_Symbol:
        where = dim_sources(e.inputs).get(str(d))
        if where is None:
            have = ", ".join(f"{k} [{t}]" for k, t in e.inputs.items())
            raise ValueError(f"size '{d}' is no dim of a graph input, so it is unknown at run time (inputs: {have})")
        name, axis = where
        key = ("run_time_dim", name, axis)
        if key not in e.memo:
            e.memo[key] = e.op1("Shape", [e.values[TensorRef(name, "y")]], start=axis, end=axis + 1)
        return e.memo[key]
    if isinstance(d, sympy.Add | sympy.Mul):
        op_type = "Add" if isinstance(d, sympy.Add) else "Mul"
        terms = [size_vector(e, t) for t in d.args]
        acc = terms[0]
        for t in terms[1:]:
            acc = e.op1(op_type, [acc, t])
        return acc
    if isinstance(d, sympy.Pow) and d.exp.is_Integer and int(d.exp) > 0:
        base = size_vector(e, d.base)
        acc = base
        for _ in range(int(d.exp) - 1):
            acc = e.op1("Mul", [acc, base])
        return acc
    raise ValueError(f"cannot compute size '{d}' at run time")


def shape_vector(e: Emitter, dims: Sequence[sympy.Expr]) -> str:
    """A 1-D int64 shape: one constant when every size is fixed, else a Concat of constant runs and
    sizes computed at run time."""
    if all(d.is_Integer for d in dims):
        return e.ints([int(d) for d in dims])
    pieces: list[str] = []
    run: list[int] = []
    for d in dims:
        if d.is_Integer:
            run.append(int(d))
            continue
        if run:
            pieces.append(e.ints(run))
            run = []
        pieces.append(size_vector(e, d))
    if run:
        pieces.append(e.ints(run))
    return e.op1("Concat", pieces, axis=0)


# --- elementwise arithmetic ----------------------------------------------------------------

_BINARY = {"sub": "Sub", "div": "Div", "pow": "Pow", "minimum": "Min", "maximum": "Max"}


@LOWERINGS.register(*_BINARY)
def lower_binary(e: Emitter, node: Node) -> None:
    a = e.input("a")
    if e.has("b"):
        b = e.input("b")
    else:
        value = e.model(ConstantOperand).value
        assert value is not None  # the shape rule holds it
        b = e.const(value, "value", node.inputs["a"].dtype)
    e.op1(_BINARY[node.op], [a, b], e.output())


_UNARY = {"sqrt": "Sqrt", "exp": "Exp", "log": "Log", "neg": "Neg", "abs": "Abs"}


@LOWERINGS.register(*_UNARY)
def lower_unary(e: Emitter, node: Node) -> None:
    e.op1(_UNARY[node.op], [e.input("x")], e.output())


@LOWERINGS.register("rsqrt")
def lower_rsqrt(e: Emitter, node: Node) -> None:
    e.op1("Reciprocal", [e.op1("Sqrt", [e.input("x")])], e.output())


@LOWERINGS.register("where")
def lower_where(e: Emitter, node: Node) -> None:
    e.op1("Where", [e.input("condition"), e.input("x"), e.input("y")], e.output())


@LOWERINGS.register("masked_fill")
def lower_masked_fill(e: Emitter, node: Node) -> None:
    fill = e.const(e.model(MaskedFill).value, "fill", node.inputs["x"].dtype)
    e.op1("Where", [e.input("mask"), fill, e.input("x")], e.output())


# --- reductions ----------------------------------------------------------------------------

_REDUCE = {"sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin"}


@LOWERINGS.register(*_REDUCE)
def lower_reduce(e: Emitter, node: Node) -> None:
    m = e.model(Mean)
    axes = [m.dim] if isinstance(m.dim, int) else list(m.dim)
    op_type = _REDUCE[node.op]
    if op_type == "ReduceSum" or e.opset >= 18:  # ReduceSum takes axes as an input from opset 13, the others from 18
        e.op1(op_type, [e.input("x"), e.ints(axes, "axes")], e.output(), keepdims=int(m.keepdim))
    else:
        e.op1(op_type, [e.input("x")], e.output(), axes=axes, keepdims=int(m.keepdim))


# --- tensor construction and indexing ------------------------------------------------------

@LOWERINGS.register("squeeze")
def lower_squeeze(e: Emitter, node: Node) -> None:
    axes = e.model(Squeeze).axes(node.inputs["x"])
    e.op1("Squeeze", [e.input("x"), e.ints(axes, "axes")], e.output())


@LOWERINGS.register("unsqueeze")
def lower_unsqueeze(e: Emitter, node: Node) -> None:
    e.op1("Unsqueeze", [e.input("x"), e.ints([e.model(Unsqueeze).dim], "axes")], e.output())


@LOWERINGS.register("expand")
def lower_expand(e: Emitter, node: Node) -> None:
    # ONNX Expand broadcasts both ways: a 1 keeps the input's size, so kept dims need no run-time read.
    x = node.inputs["x"]
    target = e.model(Expand).sizes()
    new = len(target) - x.rank
    one = sympy.Integer(1)
    dims = [one if d is None or (i >= new and same_dim(d, x.shape[i - new])) else d for i, d in enumerate(target)]
    e.op1("Expand", [e.input("x"), shape_vector(e, dims)], e.output())


@LOWERINGS.register("repeat", "tile")
def lower_tile(e: Emitter, node: Node) -> None:
    reps = list(e.model(Repeat).repeats)
    rank = node.inputs["x"].rank
    x = e.input("x")
    if len(reps) > rank:  # new leading dims of size 1 first: Tile takes one repeat per dim
        x = e.op1("Unsqueeze", [x, e.ints(list(range(len(reps) - rank)), "axes")])
    reps = [1] * (rank - len(reps)) + reps
    e.op1("Tile", [x, e.ints(reps, "repeats")], e.output())


@LOWERINGS.register("stack")
def lower_stack(e: Emitter, node: Node) -> None:
    rank = next(iter(node.inputs.values())).rank
    axis = e.model(Stack).dim % (rank + 1)
    axes = e.ints([axis], "axes")
    parts = [e.op1("Unsqueeze", [e.input(p), axes]) for p in sorted(node.bindings, key=int)]
    e.op1("Concat", parts, e.output(), axis=axis)


@LOWERINGS.register("gather")
def lower_gather(e: Emitter, node: Node) -> None:
    axis = node.inputs["x"].axis(e.model(Gather).dim)  # non-negative: onnx.reference misreads a negative one
    e.op1("GatherElements", [e.input("x"), e.input("index")], e.output(), axis=axis)


@LOWERINGS.register("index_select")
def lower_index_select(e: Emitter, node: Node) -> None:
    e.op1("Gather", [e.input("x"), e.input("index")], e.output(), axis=e.model(IndexSelect).dim)


_RANGE_DTYPES = ("int32", "int64", "float32", "float64")
"""The dtypes onnxruntime's Range computes in; others are computed in float32 and cast."""


@LOWERINGS.register("constant")
def lower_constant(e: Emitter, node: Node) -> None:
    m = e.model(Constant)
    dtype = m.out_dtype()
    if m.fill != "arange":
        value = {"zeros": 0.0, "ones": 1.0}.get(m.fill, m.value)
        assert value is not None
        scalar = e.const(np.asarray(value).astype(np_dtype(dtype)), "fill")
        e.op1("Expand", [scalar, shape_vector(e, m.sizes())], e.output())
        return
    work = dtype if dtype in _RANGE_DTYPES else "float32"
    start = e.const(np.asarray(m.start).astype(np_dtype(work)), "start")
    step = e.const(np.asarray(m.step).astype(np_dtype(work)), "step")
    if isinstance(m.end, str):  # a size read at run time: an int64 scalar
        end = e.op1("Squeeze", [size_vector(e, m.end_size()), e.ints([0], "axes")])
        if work != "int64":
            end = e.op1("Cast", [end], to=DTYPES[work])
    else:
        assert m.end is not None
        end = e.const(np.asarray(m.end).astype(np_dtype(work)), "end")
    if work == dtype:
        e.op1("Range", [start, end, step], e.output())
    else:
        e.op1("Cast", [e.op1("Range", [start, end, step])], e.output(), to=DTYPES[dtype])


@LOWERINGS.register("parameter")
def lower_parameter(e: Emitter, node: Node) -> None:
    _ = e.model(Parameter)
    e.op1("Identity", [e.weight("weight", Init.constant(0.0))], e.output())
