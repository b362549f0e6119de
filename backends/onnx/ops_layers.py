"""ONNX lowerings of the layers: linear, convolution, pooling, embeddings, normalisation, dropout.

Weights stay in PyTorch's layout under PyTorch's names (``f6.weight`` is (out, in)); where
ONNX wants another layout the graph transposes or splits the initializer, and onnxruntime
folds that into a constant when the session is created.
"""

from __future__ import annotations

import math

import numpy as np

from nnspec.builder import Node
from nnspec.builder.ops.layers import (
    AvgPool1d,
    AvgPool2d,
    BatchNorm,
    Conv1d,
    Conv2d,
    Embedding,
    LayerNorm,
    Linear,
    MaxPool1d,
    MaxPool2d,
    PositionEmbedding,
)

from .table import LOWERINGS, Emitter
from .weights import Init

__all__ = ["layer_norm", "linear"]


def linear(e: Emitter, x: str, rank: int, weight: str, bias: str | None, output: str | None = None) -> str:
    """y = x W^T + b over the last dim of a rank-`rank` x, for W in PyTorch's (out, in) layout."""
    if rank == 2:
        return e.op1("Gemm", [x, weight, *([bias] if bias else [])], output, transB=1)
    wt = e.op1("Transpose", [weight], perm=[1, 0])  # (in, out); folded to a constant by onnxruntime
    if bias is None:
        return e.op1("MatMul", [x, wt], output)
    return e.op1("Add", [e.op1("MatMul", [x, wt]), bias], output)


@LOWERINGS.register("linear")
def lower_linear(e: Emitter, node: Node) -> None:
    m, x = e.model(Linear), node.inputs["x"]
    bound = 1 / math.sqrt(node.inputs["x"].shape[-1])  # kaiming_uniform(a=sqrt(5)): 1/sqrt(fan_in)
    weight = e.weight("weight", Init.uniform(bound))
    bias = e.weight("bias", Init.uniform(bound)) if m.bias else None
    linear(e, e.input("x"), x.rank, weight, bias, e.output())


def _fan_in_bound(node: Node) -> float:
    w = node.weights.get("weight")
    if w is None:  # tied: the owner's shape is the same
        return 1.0
    return 1 / math.sqrt(math.prod(w[1:]))


@LOWERINGS.register("conv1d", "conv2d")
def lower_conv(e: Emitter, node: Node) -> None:
    m = e.model(Conv1d) if node.op == "conv1d" else e.model(Conv2d)
    k, s, d = m._kernel(), m._tuple(m.stride), m._tuple(m.dilation)
    if m.padding == "same":  # stride 1: total d(k-1), the odd one at the end, as PyTorch pads
        total = [dd * (kk - 1) for kk, dd in zip(k, d, strict=True)]
        pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    else:
        p = (0,) * m.SPATIAL if m.padding == "valid" else m._tuple(m.padding)
        pads = [*p, *p]
    bound = _fan_in_bound(node)
    inputs = [e.input("x"), e.weight("weight", Init.uniform(bound))]
    if m.bias:
        inputs.append(e.weight("bias", Init.uniform(bound)))
    e.op1("Conv", inputs, e.output(), kernel_shape=list(k), strides=list(s), dilations=list(d), pads=pads,
          group=m.groups)


@LOWERINGS.register("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d")
def lower_pool(e: Emitter, node: Node) -> None:
    m: MaxPool1d | MaxPool2d | AvgPool1d | AvgPool2d = (
        e.model(MaxPool1d) if node.op == "max_pool1d" else e.model(MaxPool2d) if node.op == "max_pool2d"
        else e.model(AvgPool1d) if node.op == "avg_pool1d" else e.model(AvgPool2d))
    k, s = m._t(m.kernel_size), m._t(m.stride)
    x = e.input("x")
    unbatched = node.inputs["x"].rank == m.SPATIAL + 1  # (C, *spatial): ONNX pools want (N, C, *spatial)
    if unbatched:
        x = e.op1("Unsqueeze", [x, e.ints([0], "axes")])
    attrs = {"kernel_shape": list(k), "strides": list(s), "pads": [m.padding] * (2 * m.SPATIAL),
             "ceil_mode": int(m.ceil_mode)}
    out = None if unbatched else e.output()
    if node.op.startswith("max"):
        y = e.op1("MaxPool", [x], out, **attrs)
    else:
        y = e.op1("AveragePool", [x], out, count_include_pad=1, **attrs)  # PyTorch counts the padding
    if unbatched:
        e.op1("Squeeze", [y, e.ints([0], "axes")], e.output())


@LOWERINGS.register("embedding")
def lower_embedding(e: Emitter, node: Node) -> None:
    m = e.model(Embedding)
    weight = e.weight("weight", Init.normal(1.0, zero_row=m.zero_rows().get("weight")))
    e.op1("Gather", [weight, e.input("x")], e.output(), axis=0)


def _seq_len(e: Emitter, node: Node) -> str:
    """The sequence length of a (batch, seq, d) input, as a 1-element int64 vector."""
    seq = node.inputs["x"].shape[1]
    if seq.is_Integer:
        return e.ints([int(seq)], "seq_len")
    return e.op1("Shape", [e.input("x")], start=1, end=2)


@LOWERINGS.register("position_embedding")
def lower_position_embedding(e: Emitter, node: Node) -> None:
    e.model(PositionEmbedding)
    table = e.weight("weight", Init.normal(1.0))  # (max_len, d)
    if e.has("positions"):  # ([batch,] seq): a cache's offset, or left padding
        rows = e.op1("Gather", [table, e.input("positions")], axis=0)  # ([batch,] seq, d)
    else:
        rows = e.op1("Slice", [table, e.ints([0], "starts"), _seq_len(e, node), e.ints([0], "axes")])  # (seq, d)
    e.op1("Add", [e.input("x"), rows], e.output())


@LOWERINGS.register("sinusoidal_position")
def lower_sinusoidal_position(e: Emitter, node: Node) -> None:
    x = node.inputs["x"]
    d = int(x.shape[-1])
    dtype = x.dtype
    # PE[t, 2i] = sin(t * w_i), PE[t, 2i+1] = cos(t * w_i), w_i = exp(-2i ln(10000) / d), computed in
    # float32 as PyTorch computes the table, for t < seq only (no max_len table in the file)
    freqs = np.exp(np.arange(0, d, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / d)).reshape(1, -1)
    if e.has("positions"):  # ([batch,] seq): a cache's offset, or left padding
        t = e.op1("Cast", [e.input("positions")], to=1)
        merged, axis = [0] * node.inputs["positions"].rank + [d], e.ints([-1], "axes_last")
    else:
        n = e.op1("Cast", [e.op1("Squeeze", [_seq_len(e, node)])], to=1)
        t = e.op1("Range", [e.const(np.float32(0), "zero"), n, e.const(np.float32(1), "one")])  # (seq,)
        merged, axis = [-1, d], e.ints([1], "axes")
    angles = e.op1("Mul", [e.op1("Unsqueeze", [t, axis]), e.const(freqs, "freqs")])  # ([batch,] seq, d/2)
    last = e.ints([-1], "axes_last")
    sin = e.op1("Unsqueeze", [e.op1("Sin", [angles]), last])
    cos = e.op1("Unsqueeze", [e.op1("Cos", [angles]), last])
    pe = e.op1("Reshape", [e.op1("Concat", [sin, cos], axis=-1), e.ints(merged)])  # (…, d/2, 2) -> (…, d)
    if dtype != "float32":
        from .dtypes import DTYPES

        pe = e.op1("Cast", [pe], to=DTYPES[dtype])
    e.op1("Add", [e.input("x"), pe], e.output())


@LOWERINGS.register("dropout")
def lower_dropout(e: Emitter, node: Node) -> None:
    e.op1("Identity", [e.input("x")], e.output())  # inference: dropout is the identity


@LOWERINGS.register("batch_norm")
def lower_batch_norm(e: Emitter, node: Node) -> None:
    m, c = e.model(BatchNorm), int(node.inputs["x"].shape[1])
    if m.affine:
        scale, bias = e.weight("weight", Init.constant(1.0)), e.weight("bias", Init.constant(0.0))
    else:
        dtype = node.inputs["x"].dtype
        scale, bias = e.const(np.ones(c), "scale", dtype), e.const(np.zeros(c), "bias", dtype)
    mean = e.buffer("running_mean", (c,), Init.constant(0.0))
    var = e.buffer("running_var", (c,), Init.constant(1.0))
    e.op1("BatchNormalization", [e.input("x"), scale, bias, mean, var], e.output(), epsilon=m.eps)


@LOWERINGS.register("layer_norm")
def lower_layer_norm(e: Emitter, node: Node) -> None:
    m, d = e.model(LayerNorm), int(node.inputs["x"].shape[-1])
    if m.elementwise_affine:
        inputs = [e.input("x"), e.weight("weight", Init.constant(1.0)), e.weight("bias", Init.constant(0.0))]
    else:
        inputs = [e.input("x"), e.const(np.ones(d), "scale", node.inputs["x"].dtype)]
    layer_norm(e, inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, m.eps, node.inputs["x"].dtype, e.output())


def layer_norm(e: Emitter, x: str, scale: str, bias: str | None, eps: float, dtype: str, output: str | None = None) -> str:
    """Normalise over the last axis: LayerNormalization from opset 17, its formula before
    ((x - mean) / sqrt(var + eps) * scale + bias, the pattern onnxruntime fuses back)."""
    if e.opset >= 17:
        return e.op1("LayerNormalization", [x, scale, *([bias] if bias else [])], output, axis=-1, epsilon=eps)
    centred = e.op1("Sub", [x, e.op1("ReduceMean", [x], axes=[-1], keepdims=1)])
    var = e.op1("ReduceMean", [e.op1("Mul", [centred, centred])], axes=[-1], keepdims=1)
    std = e.op1("Sqrt", [e.op1("Add", [var, e.const(float(eps), "eps", dtype)])])
    scaled = e.op1("Mul", [e.op1("Div", [centred, std]), scale], None if bias else output)
    return e.op1("Add", [scaled, bias], output) if bias else scaled
