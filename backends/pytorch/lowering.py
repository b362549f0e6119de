"""The PyTorch lowering table: one small function per op of `builder.OPS`.

Each function receives the `Emitter` and the checked `Node`, creates at most one submodule
(named by the node id, sized from the node's inferred input types) and emits fx nodes. It
returns the node's outputs by port. Layers use torch.nn classes, so initialisation is
PyTorch's default for the layer unless the spec's `init:` says otherwise (see `emitter`);
ops without state emit torch functions or tensor methods.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from functools import reduce
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import fx
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nnspec.builder import Node, Op
from nnspec.builder.ops.activations import Gelu, LogSoftmax, Softmax
from nnspec.builder.ops.layers import (
    AvgPool1d,
    AvgPool2d,
    BatchNorm,
    Conv1d,
    Conv2d,
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    MaxPool1d,
    MaxPool2d,
    PositionEmbedding,
    SinusoidalPosition,
)
from nnspec.builder.ops.operands import ConstantOperand
from nnspec.builder.ops.sequence import Gru, Lstm, Rnn
from nnspec.builder.ops.tensor import Concat, Flatten, Mean, Permute, Reshape, Scale, Select, Slice, Split, Transpose

from .emitter import Ctor, Emitter, LowerFn, Outputs, TensorInit
from .table import LoweringTable

__all__ = ["TABLE"]

TABLE: LoweringTable[LowerFn] = LoweringTable("pytorch")
"""Op name to lowering function ``(Emitter, Node) -> {port: fx.Node}``."""

M = TypeVar("M", bound=Op)


def _args(n: Node, cls: type[M]) -> M:
    """The node's validated arguments, typed as its op's model."""
    if not isinstance(n.model, cls):  # pragma: no cover - the table is keyed by op name
        raise TypeError(f"node '{n.id}': expected a {cls.__name__} node, got {type(n.model).__name__}")
    return n.model


def _features(e: Emitter, port: str = "x") -> int:
    """The input's last dim, a fixed size (the shape rules guarantee it where a layer needs it)."""
    return int(e.type(port).shape[-1])


def _own_or_tied(e: Emitter, inits: dict[str, TensorInit]) -> dict[str, fx.Node]:
    """get_attr nodes for a node with tied weights: tied ones from their owner, the rest from a
    container of the node's own tensors (initialised as the torch.nn layer would)."""
    own = tuple(t for name, t in inits.items() if name not in e.node.ties)
    container = Ctor("", tensors=own) if own else None
    return {name: e.weight(name, container) for name in inits}


# --- tensor ops ------------------------------------------------------------------------

def _operands(e: Emitter, n: Node) -> list[Any]:
    """The numbered inputs, then the constant `value` where the node has one (an int for integer inputs)."""
    value = _args(n, ConstantOperand).value
    if value is None:
        return [e.x(p) for p in e.ports()]
    return [e.x(p) for p in e.ports()] + [int(value) if e.type("0").dtype.startswith("int") else value]


@TABLE.register("add")
def _add(e: Emitter, n: Node) -> Outputs:
    return {"y": reduce(lambda a, b: e.fn(operator.add, a, b), _operands(e, n))}


@TABLE.register("mul")
def _mul(e: Emitter, n: Node) -> Outputs:
    return {"y": reduce(lambda a, b: e.fn(operator.mul, a, b), _operands(e, n))}


@TABLE.register("scale")
def _scale(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(operator.mul, e.x(), _args(n, Scale).factor)}


@TABLE.register("matmul")
def _matmul(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.matmul, e.x("a"), e.x("b"))}


@TABLE.register("concat")
def _concat(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.cat, [e.x(p) for p in e.ports()], _args(n, Concat).dim)}


@TABLE.register("split")
def _split(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Split)
    parts = e.fn(torch.split, e.x(), list(m.sizes), m.dim)
    return {str(i): e.item(parts, i) for i in range(len(m.sizes))}


@TABLE.register("reshape")
def _reshape(e: Emitter, n: Node) -> Outputs:
    # 0 copies the input's size at that position (ONNX semantics): a literal where the size is
    # fixed, else read at run time so that symbolic dims stay dynamic.
    x, t = e.x(), e.type()
    sizes = [e.size(x, t, i) if s == 0 else s for i, s in enumerate(_args(n, Reshape).shape)]
    return {"y": e.method("reshape", x, *sizes)}


@TABLE.register("flatten")
def _flatten(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Flatten)
    return {"y": e.fn(torch.flatten, e.x(), m.start_dim, m.end_dim)}


@TABLE.register("transpose")
def _transpose(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Transpose)
    return {"y": e.fn(torch.transpose, e.x(), m.dim0, m.dim1)}


@TABLE.register("permute")
def _permute(e: Emitter, n: Node) -> Outputs:
    return {"y": e.method("permute", e.x(), *_args(n, Permute).dims)}


@TABLE.register("slice")
def _slice(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Slice)
    axis = e.type().axis(m.dim)
    index = (*(slice(None),) * axis, slice(m.start, m.end, m.step))
    return {"y": e.fn(operator.getitem, e.x(), index if axis else index[0])}


@TABLE.register("select")
def _select(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Select)
    return {"y": e.method("select", e.x(), m.dim, m.index)}


@TABLE.register("mean")
def _mean(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Mean)
    dim = m.dim if isinstance(m.dim, int) else tuple(m.dim)
    return {"y": e.method("mean", e.x(), dim, keepdim=m.keepdim)}


# --- layers ----------------------------------------------------------------------------

@TABLE.register("linear")
def _linear(e: Emitter, n: Node) -> Outputs:
    m, fan_in = _args(n, Linear), _features(e)
    if not n.ties:
        return {"y": e.call_module(Ctor.of("Linear", fan_in, m.out_features, bias=m.bias), e.x())}
    bound = 1 / math.sqrt(fan_in)  # torch.nn.Linear's default for both weight and bias
    inits = {"weight": TensorInit("weight", (m.out_features, fan_in), "uniform", bound)}
    if m.bias:
        inits["bias"] = TensorInit("bias", (m.out_features,), "uniform", bound)
    w = _own_or_tied(e, inits)
    return {"y": e.fn(F.linear, e.x(), w["weight"], w.get("bias"))}


def _conv(e: Emitter, m: Conv1d | Conv2d, cls: str) -> Outputs:
    ctor = Ctor.of(cls, int(e.type().shape[1]), m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                   dilation=m.dilation, groups=m.groups, bias=m.bias)
    return {"y": e.call_module(ctor, e.x())}


@TABLE.register("conv1d")
def _conv1d(e: Emitter, n: Node) -> Outputs:
    return _conv(e, _args(n, Conv1d), "Conv1d")


@TABLE.register("conv2d")
def _conv2d(e: Emitter, n: Node) -> Outputs:
    return _conv(e, _args(n, Conv2d), "Conv2d")


def _pool(e: Emitter, m: MaxPool1d | MaxPool2d | AvgPool1d | AvgPool2d, fn: Callable[..., torch.Tensor]) -> Outputs:
    """A pooling window as the functional call (a layer without state needs no submodule)."""
    stride = m.kernel_size if m.stride is None else m.stride
    return {"y": e.fn(fn, e.x(), m.kernel_size, stride, m.padding, ceil_mode=m.ceil_mode)}


@TABLE.register("max_pool1d")
def _max_pool1d(e: Emitter, n: Node) -> Outputs:
    return _pool(e, _args(n, MaxPool1d), F.max_pool1d)


@TABLE.register("max_pool2d")
def _max_pool2d(e: Emitter, n: Node) -> Outputs:
    return _pool(e, _args(n, MaxPool2d), F.max_pool2d)


@TABLE.register("avg_pool1d")
def _avg_pool1d(e: Emitter, n: Node) -> Outputs:
    return _pool(e, _args(n, AvgPool1d), F.avg_pool1d)


@TABLE.register("avg_pool2d")
def _avg_pool2d(e: Emitter, n: Node) -> Outputs:
    return _pool(e, _args(n, AvgPool2d), F.avg_pool2d)


@TABLE.register("embedding")
def _embedding(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Embedding)
    if not n.ties:
        ctor = Ctor.of("Embedding", m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx)
        return {"y": e.call_module(ctor, e.x())}
    w = _own_or_tied(e, {"weight": TensorInit("weight", (m.num_embeddings, m.embedding_dim), "normal", 1.0)})
    return {"y": e.fn(F.embedding, e.x(), w["weight"], m.padding_idx)}


@TABLE.register("position_embedding")
def _position_embedding(e: Emitter, n: Node) -> Outputs:
    x, d, m = e.x(), _features(e), _args(n, PositionEmbedding)
    if e.has("positions"):  # ([batch,] seq): a cache's offset, or left padding
        positions = e.x("positions")
    else:
        positions = e.named(e.fn(torch.arange, e.size(x, e.type(), 1), device=e.device(x)), "positions")  # (seq,)
    if n.ties:
        w = _own_or_tied(e, {"weight": TensorInit("weight", (m.max_len, d), "normal", 1.0)})
        table = e.fn(F.embedding, positions, w["weight"])
    else:
        table = e.call_module(Ctor.of("Embedding", m.max_len, d), positions)  # (seq, d)
    return {"y": e.fn(operator.add, x, table)}  # (batch, seq, d)


@TABLE.register("sinusoidal_position")
def _sinusoidal_position(e: Emitter, n: Node) -> Outputs:
    x, d = e.x(), _features(e)
    own = Ctor("", tensors=(TensorInit("pe", (_args(n, SinusoidalPosition).max_len, d), "sinusoid", buffer=True),))
    if e.has("positions"):  # ([batch,] seq) -> ([batch,] seq, d)
        table = e.fn(F.embedding, e.x("positions"), e.weight("pe", own))
    else:
        table = e.method("narrow", e.weight("pe", own), 0, 0, e.size(x, e.type(), 1))  # (seq, d)
    e.named(table, n.id.replace(".", "_") + "_table")
    return {"y": e.fn(operator.add, x, table)}


@TABLE.register("dropout")
def _dropout(e: Emitter, n: Node) -> Outputs:
    return {"y": e.call_module(Ctor.of("Dropout", p=_args(n, Dropout).p), e.x())}


@TABLE.register("batch_norm")
def _batch_norm(e: Emitter, n: Node) -> Outputs:
    m, t = _args(n, BatchNorm), e.type()
    cls = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}[t.rank]
    ctor = Ctor.of(cls, int(t.shape[1]), eps=m.eps, momentum=m.momentum, affine=m.affine)
    return {"y": e.call_module(ctor, e.x())}


@TABLE.register("layer_norm")
def _layer_norm(e: Emitter, n: Node) -> Outputs:
    m = _args(n, LayerNorm)
    ctor = Ctor.of("LayerNorm", _features(e), eps=m.eps, elementwise_affine=m.elementwise_affine)
    return {"y": e.call_module(ctor, e.x())}


# --- activations -----------------------------------------------------------------------

@TABLE.register("relu")
def _relu(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.relu, e.x())}


@TABLE.register("tanh")
def _tanh(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.tanh, e.x())}


@TABLE.register("sigmoid")
def _sigmoid(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.sigmoid, e.x())}


@TABLE.register("gelu")
def _gelu(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.gelu, e.x(), approximate=_args(n, Gelu).approximate)}


@TABLE.register("softmax")
def _softmax(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.softmax, e.x(), _args(n, Softmax).dim)}


@TABLE.register("log_softmax")
def _log_softmax(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.log_softmax, e.x(), _args(n, LogSoftmax).dim)}


# --- sequence --------------------------------------------------------------------------

def _recurrent(e: Emitter, m: Rnn | Lstm | Gru, cls: str) -> Outputs:
    extra = {"nonlinearity": m.nonlinearity} if isinstance(m, Rnn) else {}
    # torch warns about (and ignores) dropout on a single layer, whose output has no next layer
    dropout = m.dropout if m.num_layers > 1 else 0.0
    ctor = Ctor.of(cls, _features(e), m.hidden_size, num_layers=m.num_layers, bias=m.bias, batch_first=True,
                   dropout=dropout, bidirectional=m.bidirectional, **extra)
    x = e.x()
    args: list[object] = [x]
    if e.has("lengths"):  # padded batch: run each sequence to its own length (sorted inside, unsorted back)
        args[0] = e.named(e.fn(pack_padded_sequence, x, e.x("lengths"), batch_first=True, enforce_sorted=False),
                          "packed")
    if e.has("h0"):
        args.append((e.x("h0"), e.x("c0")) if cls == "LSTM" else e.x("h0"))
    result = e.call_module(ctor, *args)  # (output (batch, seq, dirs*hidden), state)
    state = e.item(result, 1)  # h, or (h, c): (layers*dirs, batch, hidden)
    output = e.item(result, 0)
    if e.has("lengths"):  # back to (batch, seq, dirs*hidden), zeros past each length
        total = e.size(x, e.type(), 1)
        padded = e.named(e.fn(pad_packed_sequence, output, batch_first=True, total_length=total), "padded")
        output = e.item(padded, 0)
    outs = {"output": output}
    if cls == "LSTM":
        outs.update(h=e.item(state, 0), c=e.item(state, 1))
    else:
        outs["h"] = state
    return outs


@TABLE.register("rnn")
def _rnn(e: Emitter, n: Node) -> Outputs:
    return _recurrent(e, _args(n, Rnn), "RNN")


@TABLE.register("lstm")
def _lstm(e: Emitter, n: Node) -> Outputs:
    return _recurrent(e, _args(n, Lstm), "LSTM")


@TABLE.register("gru")
def _gru(e: Emitter, n: Node) -> Outputs:
    return _recurrent(e, _args(n, Gru), "GRU")


# The other op families register into TABLE from their own modules (imported last: they need TABLE).
from . import ops_attention, ops_elementwise, ops_nonlinear, ops_spatial  # noqa: E402

_ = (ops_attention, ops_elementwise, ops_nonlinear, ops_spatial)
