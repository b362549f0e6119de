"""PyTorch lowerings of elementwise arithmetic, reductions, and tensor construction and indexing.

Sizes that are symbolic in the checked graph (a `constant` of shape ``[batch, seq + 1]``, an
`expand` to ``[batch, 1, 768]``) are read at run time from a graph input that carries the
symbol (``x.size(0) + 1``), so the module keeps working for every size.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import reduce
from typing import Any

import sympy
import torch
from torch import fx

from nnspec.builder import Node, TensorRef, graph_inputs
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

from .emitter import Ctor, Emitter, LoweringError, Outputs, TensorInit
from .lowering import TABLE, _args

__all__ = ["run_time_size"]

Size = int | fx.Node


# --- sizes known only at run time ----------------------------------------------------------

def run_time_size(e: Emitter, d: sympy.Expr) -> Size:
    """Dim `d` of the checked graph as a value: a literal, or computed from the sizes of the graph
    inputs that carry its symbols (``seq + 1`` -> ``x.size(1) + 1``)."""
    if d.is_Integer:
        return int(d)
    if d.is_Symbol:
        inputs = graph_inputs(e.source)
        where = dim_sources(inputs).get(str(d))
        if where is None:
            have = ", ".join(f"{k} [{t}]" for k, t in inputs.items())
            raise LoweringError(f"node '{e.node.id}': size '{d}' is no dim of a graph input, so it is unknown at "
                                f"run time (inputs: {have})")
        name, axis = where
        return e.size(e.values[TensorRef(name, "y")], inputs[name], axis)
    if isinstance(d, sympy.Add | sympy.Mul):
        fn = operator.add if isinstance(d, sympy.Add) else operator.mul
        return reduce(lambda a, b: e.fn(fn, a, b), [run_time_size(e, t) for t in d.args])  # type: ignore[arg-type]
    if isinstance(d, sympy.Pow) and d.exp.is_Integer and int(d.exp) > 0:
        base = run_time_size(e, d.base)
        return reduce(lambda a, b: e.fn(operator.mul, a, b), [base] * int(d.exp))  # type: ignore[arg-type]
    raise LoweringError(f"node '{e.node.id}': cannot compute size '{d}' at run time")


def _device(e: Emitter) -> fx.Node:
    """Where tensors created in forward go: the device of the first graph input."""
    return e.device(e.values[TensorRef(e.source.graph["inputs"][0], "y")])


def _literal(n: Node, value: float) -> float | int:
    """A constant operand in the input's dtype (an int for integer tensors, so that torch keeps the dtype)."""
    first = next(iter(n.inputs.values()))
    return int(value) if first.dtype.startswith("int") else value


# --- elementwise arithmetic ----------------------------------------------------------------

def _binary(op: str, fn: Callable[..., Any], with_value: Callable[[Emitter, fx.Node, float | int], fx.Node]) -> None:
    @TABLE.register(op)
    def lower(e: Emitter, n: Node) -> Outputs:
        a = e.x("a")
        if e.has("b"):
            return {"y": e.fn(fn, a, e.x("b"))}
        value = _args(n, ConstantOperand).value
        assert value is not None  # the shape rule holds it
        return {"y": with_value(e, a, _literal(n, value))}


_binary("sub", operator.sub, lambda e, a, v: e.fn(operator.sub, a, v))
_binary("div", torch.div, lambda e, a, v: e.fn(torch.div, a, v))
_binary("pow", operator.pow, lambda e, a, v: e.fn(operator.pow, a, v))
_binary("minimum", torch.minimum, lambda e, a, v: e.fn(torch.clamp, a, max=v))
_binary("maximum", torch.maximum, lambda e, a, v: e.fn(torch.clamp, a, min=v))


def _unary(op: str, fn: Callable[..., Any]) -> None:
    TABLE.register(op)(lambda e, n: {"y": e.fn(fn, e.x())})


for _op, _fn in (("sqrt", torch.sqrt), ("rsqrt", torch.rsqrt), ("exp", torch.exp), ("log", torch.log),
                 ("neg", torch.neg), ("abs", torch.abs)):
    _unary(_op, _fn)


@TABLE.register("where")
def _where(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.where, e.x("condition"), e.x("x"), e.x("y"))}


@TABLE.register("masked_fill")
def _masked_fill(e: Emitter, n: Node) -> Outputs:
    value = _args(n, MaskedFill).value
    if n.inputs["x"].dtype == "bool":
        fill: float | int | bool = bool(value)
    else:
        fill = _literal(n, value)
    return {"y": e.method("masked_fill", e.x("x"), e.x("mask"), fill)}


# --- reductions ----------------------------------------------------------------------------

def _reduction(op: str, fn: Callable[..., Any]) -> None:
    @TABLE.register(op)
    def lower(e: Emitter, n: Node) -> Outputs:
        m = _args(n, Mean)
        dim = m.dim if isinstance(m.dim, int) else tuple(m.dim)
        return {"y": e.fn(fn, e.x(), dim, keepdim=m.keepdim)}


_reduction("sum", torch.sum)
_reduction("max", torch.amax)
_reduction("min", torch.amin)


# --- tensor construction and indexing ------------------------------------------------------

@TABLE.register("squeeze")
def _squeeze(e: Emitter, n: Node) -> Outputs:
    axes = _args(n, Squeeze).axes(e.type())
    return {"y": e.method("squeeze", e.x(), axes[0] if len(axes) == 1 else tuple(axes))}


@TABLE.register("unsqueeze")
def _unsqueeze(e: Emitter, n: Node) -> Outputs:
    return {"y": e.method("unsqueeze", e.x(), _args(n, Unsqueeze).dim)}


@TABLE.register("expand")
def _expand(e: Emitter, n: Node) -> Outputs:
    x, t = e.x(), e.type()
    target = _args(n, Expand).sizes()
    new = len(target) - t.rank
    sizes: list[Size] = []
    for i, d in enumerate(target):
        keep = d is None or (i >= new and same_dim(d, t.shape[i - new]))
        sizes.append(-1 if keep or d is None else run_time_size(e, d))
    return {"y": e.method("expand", x, *sizes)}


@TABLE.register("repeat")
def _repeat(e: Emitter, n: Node) -> Outputs:
    return {"y": e.method("repeat", e.x(), *_args(n, Repeat).repeats)}


@TABLE.register("tile")
def _tile(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.tile, e.x(), tuple(_args(n, Repeat).repeats))}


@TABLE.register("stack")
def _stack(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.stack, [e.x(p) for p in e.ports()], _args(n, Stack).dim)}


@TABLE.register("gather")
def _gather(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.gather, e.x("x"), _args(n, Gather).dim, e.x("index"))}


@TABLE.register("index_select")
def _index_select(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.index_select, e.x("x"), _args(n, IndexSelect).dim, e.x("index"))}


@TABLE.register("constant")
def _constant(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Constant)
    dtype = getattr(torch, m.out_dtype())
    device = _device(e)
    if m.fill == "arange":
        integral = not dtype.is_floating_point
        start, step = (int(m.start), int(m.step)) if integral else (m.start, m.step)
        end: Any = run_time_size(e, m.end_size()) if isinstance(m.end, str) else m.end
        if integral and isinstance(end, float):
            end = int(end) if end.is_integer() else end
        return {"y": e.fn(torch.arange, start, end, step, dtype=dtype, device=device)}
    sizes = [run_time_size(e, d) for d in m.sizes()]
    if m.fill == "full":
        assert m.value is not None
        value: Any = bool(m.value) if dtype == torch.bool else int(m.value) if not dtype.is_floating_point else m.value
        return {"y": e.fn(torch.full, sizes, value, dtype=dtype, device=device)}
    fn = torch.zeros if m.fill == "zeros" else torch.ones
    return {"y": e.fn(fn, sizes, dtype=dtype, device=device)}


@TABLE.register("parameter")
def _parameter(e: Emitter, n: Node) -> Outputs:
    shape = tuple(_args(n, Parameter).shape)
    return {"y": e.weight("weight", Ctor("", tensors=(TensorInit("weight", shape, "zeros"),)))}
