"""ONNX lowerings of the tensor ops and the activations."""

from __future__ import annotations

import math

import numpy as np

from nnspec.builder import Node
from nnspec.builder.ops.activations import Gelu, Softmax
from nnspec.builder.ops.operands import ConstantOperand
from nnspec.builder.ops.tensor import Concat, Flatten, Mean, Permute, Reshape, Scale, Select, Slice, Split, Transpose

from .table import DTYPES, LOWERINGS, Emitter

__all__: list[str] = []

INT64_MAX = int(np.iinfo(np.int64).max)


def _variadic(e: Emitter, node: Node) -> list[str]:
    """Values of the numbered ports 0, 1, ..., cast to the output's dtype where they differ."""
    out_dtype = node.outputs["y"].dtype
    values = []
    for port in sorted(node.bindings, key=int):
        name = e.input(port)
        if node.inputs[port].dtype != out_dtype:
            name = e.op1("Cast", [name], to=DTYPES[out_dtype])
        values.append(name)
    return values


def _fold(e: Emitter, op_type: str, values: list[str]) -> None:
    """Fold `values` with a binary op, writing the last result to the node's output."""
    acc = values[0]
    for i, v in enumerate(values[1:], start=2):
        acc = e.op1(op_type, [acc, v], e.output() if i == len(values) else None)


def _constant(e: Emitter, node: Node) -> list[str]:
    """The node's constant operand `value` as a scalar of the output's dtype, or nothing."""
    value = e.model(ConstantOperand).value
    return [] if value is None else [e.const(value, "value", node.outputs["y"].dtype)]


@LOWERINGS.register("add")
def lower_add(e: Emitter, node: Node) -> None:
    _fold(e, "Add", _variadic(e, node) + _constant(e, node))


@LOWERINGS.register("mul")
def lower_mul(e: Emitter, node: Node) -> None:
    _fold(e, "Mul", _variadic(e, node) + _constant(e, node))


@LOWERINGS.register("scale")
def lower_scale(e: Emitter, node: Node) -> None:
    factor = e.const(e.model(Scale).factor, "factor", node.inputs["x"].dtype)
    e.op1("Mul", [e.input("x"), factor], e.output())


@LOWERINGS.register("matmul")
def lower_matmul(e: Emitter, node: Node) -> None:
    e.op1("MatMul", [e.input("a"), e.input("b")], e.output())


@LOWERINGS.register("concat")
def lower_concat(e: Emitter, node: Node) -> None:
    e.op1("Concat", _variadic(e, node), e.output(), axis=e.model(Concat).dim)


@LOWERINGS.register("split")
def lower_split(e: Emitter, node: Node) -> None:
    m = e.model(Split)
    e.op("Split", [e.input("x"), e.ints(m.sizes, "sizes")], [e.output(p) for p in m.output_ports()], axis=m.dim)


@LOWERINGS.register("reshape")
def lower_reshape(e: Emitter, node: Node) -> None:
    e.op1("Reshape", [e.input("x"), e.ints(e.model(Reshape).shape)], e.output())  # 0 copies, -1 infers


@LOWERINGS.register("flatten")
def lower_flatten(e: Emitter, node: Node) -> None:
    m, x = e.model(Flatten), node.inputs["x"]
    a, b = x.axis(m.start_dim), x.axis(m.end_dim)
    if a == b:
        e.op1("Identity", [e.input("x")], e.output())
    elif a == 1 and b == x.rank - 1:
        e.op1("Flatten", [e.input("x")], e.output(), axis=1)  # (d0, d1*...*dn), as torch.flatten(x, 1)
    else:
        tail = x.shape[b + 1:]
        head = [0] * a + [-1]  # 0 copies the input's size at that position
        if all(d.is_Integer for d in tail):
            shape = e.ints([*head, *(int(d) for d in tail)])
        else:
            dims = e.op1("Shape", [e.input("x")], start=b + 1)
            shape = e.op1("Concat", [e.ints(head), dims], axis=0)
        e.op1("Reshape", [e.input("x"), shape], e.output())


@LOWERINGS.register("transpose")
def lower_transpose(e: Emitter, node: Node) -> None:
    m, x = e.model(Transpose), node.inputs["x"]
    perm = list(range(x.rank))
    a, b = x.axis(m.dim0), x.axis(m.dim1)
    perm[a], perm[b] = perm[b], perm[a]
    e.op1("Transpose", [e.input("x")], e.output(), perm=perm)


@LOWERINGS.register("permute")
def lower_permute(e: Emitter, node: Node) -> None:
    x = node.inputs["x"]
    e.op1("Transpose", [e.input("x")], e.output(), perm=[x.axis(d) for d in e.model(Permute).dims])


@LOWERINGS.register("slice")
def lower_slice(e: Emitter, node: Node) -> None:
    m = e.model(Slice)
    end = INT64_MAX if m.end is None else m.end
    e.op1("Slice", [e.input("x"), e.ints([m.start], "starts"), e.ints([end], "ends"), e.ints([m.dim], "axes"),
                    e.ints([m.step], "steps")], e.output())


@LOWERINGS.register("select")
def lower_select(e: Emitter, node: Node) -> None:
    m = e.model(Select)
    index = e.const(np.asarray(m.index, dtype=np.int64), "index")  # a scalar index drops the dim
    e.op1("Gather", [e.input("x"), index], e.output(), axis=m.dim)


@LOWERINGS.register("mean")
def lower_mean(e: Emitter, node: Node) -> None:
    m = e.model(Mean)
    axes = [m.dim] if isinstance(m.dim, int) else list(m.dim)
    if e.opset >= 18:
        e.op1("ReduceMean", [e.input("x"), e.ints(axes, "axes")], e.output(), keepdims=int(m.keepdim))
    else:
        e.op1("ReduceMean", [e.input("x")], e.output(), axes=axes, keepdims=int(m.keepdim))


@LOWERINGS.register("relu")
def lower_relu(e: Emitter, node: Node) -> None:
    e.op1("Relu", [e.input("x")], e.output())


@LOWERINGS.register("tanh")
def lower_tanh(e: Emitter, node: Node) -> None:
    e.op1("Tanh", [e.input("x")], e.output())


@LOWERINGS.register("sigmoid")
def lower_sigmoid(e: Emitter, node: Node) -> None:
    e.op1("Sigmoid", [e.input("x")], e.output())


@LOWERINGS.register("gelu")
def lower_gelu(e: Emitter, node: Node) -> None:
    approximate = e.model(Gelu).approximate
    x, dtype = e.input("x"), node.inputs["x"].dtype
    if e.options.native_gelu:
        e.op1("Gelu", [x], e.output(), approximate=approximate)
        return
    if approximate == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): the pattern onnxruntime fuses into FastGelu
        cube = e.op1("Mul", [x, e.op1("Mul", [x, x])])
        inner = e.op1("Add", [x, e.op1("Mul", [cube, e.const(0.044715, "gelu_c", dtype)])])
        t = e.op1("Tanh", [e.op1("Mul", [inner, e.const(math.sqrt(2 / math.pi), "sqrt_2_over_pi", dtype)])])
    else:
        # 0.5 x (1 + erf(x / sqrt 2)): the pattern onnxruntime fuses into Gelu
        t = e.op1("Erf", [e.op1("Div", [x, e.const(math.sqrt(2.0), "sqrt2", dtype)])])
    one, half = e.const(1.0, "one", dtype), e.const(0.5, "half", dtype)
    e.op1("Mul", [e.op1("Mul", [x, e.op1("Add", [t, one])]), half], e.output())


@LOWERINGS.register("softmax", "log_softmax")
def lower_softmax(e: Emitter, node: Node) -> None:
    op_type = "Softmax" if node.op == "softmax" else "LogSoftmax"
    rank, dim = node.inputs["x"].rank, e.model(Softmax).dim
    axis = dim % rank if rank else 0
    if e.opset >= 13 or axis == rank - 1:
        e.op1(op_type, [e.input("x")], e.output(), axis=dim)
        return
    # before opset 13 Softmax flattens the axes from `axis` on: move the dim last, and back
    perm = [*(i for i in range(rank) if i != axis), axis]
    inverse = [perm.index(i) for i in range(rank)]
    y = e.op1(op_type, [e.op1("Transpose", [e.input("x")], perm=perm)], axis=-1)
    e.op1("Transpose", [y], e.output(), perm=inverse)
