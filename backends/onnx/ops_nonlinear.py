"""ONNX lowerings of the activations beyond the seed set and the new normalisation layers.

Every op type emitted here exists at `MIN_OPSET` (17) and has an onnxruntime CPU kernel at
the default opset, so these ops neither raise the lowest opset nor lower the default one.
Where ONNX has a native op that onnxruntime runs only as a function (Mish, HardSwish) or
only from a later opset (RMSNormalization at 23), or whose semantics changed across opsets
(GroupNormalization, 18 vs 21), the lowering writes the formula out instead.
"""

from __future__ import annotations

import numpy as np

from nnspec.builder import Node
from nnspec.builder.ops.activations import Clamp, Elu, Glu, Hardtanh, LeakyRelu, Prelu, Softplus
from nnspec.builder.ops.norms import GroupNorm, InstanceNorm, LayerNorm2d, RmsNorm

from .ops_layers import layer_norm
from .table import LOWERINGS, Emitter
from .weights import Init

__all__: list[str] = []

MACHINE_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}
"""torch.finfo(dtype).eps: torch.nn.RMSNorm's eps when none is given."""


def _dtype(node: Node) -> str:
    return node.inputs["x"].dtype


def _clip(e: Emitter, node: Node, low: float | None, high: float | None) -> None:
    """Clip with bounds as inputs (opset 11+); "" leaves a bound out."""
    dtype = _dtype(node)
    bounds = ["" if b is None else e.const(float(b), "clip_bound", dtype) for b in (low, high)]
    while bounds and bounds[-1] == "":
        bounds.pop()
    e.op1("Clip", [e.input("x"), *bounds], e.output())


def _channel_view(e: Emitter, value: str, c: int, rank: int) -> str:
    """A (C,) tensor as (C, 1, ..., 1), to broadcast over dim 1 of a rank-`rank` (batch, C, *) tensor."""
    if rank <= 2:
        return value  # (C,) already lines up with the last dim of (batch, C)
    return e.op1("Reshape", [value, e.ints([c] + [1] * (rank - 2), "channel_shape")])


def _reduce_mean(e: Emitter, x: str, axes: list[int]) -> str:
    """ReduceMean keeping dims: axes are an input from opset 18, an attribute before."""
    if e.opset >= 18:
        return e.op1("ReduceMean", [x, e.ints(axes, "axes")], keepdims=1)
    return e.op1("ReduceMean", [x], axes=axes, keepdims=1)


# --- activations beyond the seed set ---------------------------------------------------------

@LOWERINGS.register("relu6")
def lower_relu6(e: Emitter, node: Node) -> None:
    _clip(e, node, 0.0, 6.0)


@LOWERINGS.register("hardtanh")
def lower_hardtanh(e: Emitter, node: Node) -> None:
    m = e.model(Hardtanh)
    _clip(e, node, m.min_val, m.max_val)


@LOWERINGS.register("clamp")
def lower_clamp(e: Emitter, node: Node) -> None:
    m = e.model(Clamp)
    _clip(e, node, m.min, m.max)


@LOWERINGS.register("leaky_relu")
def lower_leaky_relu(e: Emitter, node: Node) -> None:
    e.op1("LeakyRelu", [e.input("x")], e.output(), alpha=float(e.model(LeakyRelu).negative_slope))


@LOWERINGS.register("elu")
def lower_elu(e: Emitter, node: Node) -> None:
    e.op1("Elu", [e.input("x")], e.output(), alpha=float(e.model(Elu).alpha))


@LOWERINGS.register("silu")
def lower_silu(e: Emitter, node: Node) -> None:
    x = e.input("x")
    e.op1("Mul", [x, e.op1("Sigmoid", [x])], e.output())  # the pattern onnxruntime fuses into QuickGelu/Swish


@LOWERINGS.register("mish")
def lower_mish(e: Emitter, node: Node) -> None:
    # ONNX Mish (opset 18) has no onnxruntime CPU kernel: x * tanh(softplus(x)) at every opset
    x = e.input("x")
    e.op1("Mul", [x, e.op1("Tanh", [e.op1("Softplus", [x])])], e.output())


def _hardsigmoid(e: Emitter, x: str, output: str | None = None) -> str:
    """PyTorch's hardsigmoid relu6(x + 3) / 6 as ONNX's max(0, min(1, x/6 + 1/2))."""
    return e.op1("HardSigmoid", [x], output, alpha=1.0 / 6.0, beta=0.5)


@LOWERINGS.register("hardswish")
def lower_hardswish(e: Emitter, node: Node) -> None:
    # ONNX HardSwish has no onnxruntime CPU kernel (it runs as a function); its body, written out
    x = e.input("x")
    e.op1("Mul", [x, _hardsigmoid(e, x)], e.output())


@LOWERINGS.register("hardsigmoid")
def lower_hardsigmoid(e: Emitter, node: Node) -> None:
    _hardsigmoid(e, e.input("x"), e.output())


SOFTPLUS_EXACT_ABOVE = 20.0
"""With beta 1 and a threshold at least this, ONNX's Softplus alone matches PyTorch's: above the
threshold log(1 + exp(x)) - x < exp(-20) ~ 2e-9, below float32's resolution there."""


@LOWERINGS.register("softplus")
def lower_softplus(e: Emitter, node: Node) -> None:
    m, x, dtype = e.model(Softplus), e.input("x"), _dtype(node)
    if m.beta == 1.0 and m.threshold >= SOFTPLUS_EXACT_ABOVE:
        e.op1("Softplus", [x], e.output())
        return
    # y = softplus(beta x) / beta, or x where beta x > threshold (PyTorch's exact rule)
    bx = x if m.beta == 1.0 else e.op1("Mul", [x, e.const(float(m.beta), "beta", dtype)])
    soft = e.op1("Softplus", [bx])
    if m.beta != 1.0:
        soft = e.op1("Div", [soft, e.const(float(m.beta), "beta", dtype)])
    linear = e.op1("Greater", [bx, e.const(float(m.threshold), "threshold", dtype)])
    e.op1("Where", [linear, x, soft], e.output())


@LOWERINGS.register("prelu")
def lower_prelu(e: Emitter, node: Node) -> None:
    n, rank = e.model(Prelu).num_parameters, node.inputs["x"].rank
    slope = e.weight("weight", Init.constant(0.25))  # (n,), as torch.nn.PReLU
    if n > 1:
        slope = _channel_view(e, slope, n, rank)  # ONNX broadcasts from the right: (C, 1, ..., 1)
    e.op1("PRelu", [e.input("x"), slope], e.output())


@LOWERINGS.register("glu")
def lower_glu(e: Emitter, node: Node) -> None:
    axis = node.inputs["x"].axis(e.model(Glu).dim)
    if e.opset >= 18:
        a, b = e.op("Split", [e.input("x")], 2, axis=axis, num_outputs=2)
    else:  # without `split`, Split-13 cuts equal parts, one per output
        a, b = e.op("Split", [e.input("x")], 2, axis=axis)
    e.op1("Mul", [a, e.op1("Sigmoid", [b])], e.output())


# --- normalisation beyond batch and layer norm -----------------------------------------------

@LOWERINGS.register("rms_norm")
def lower_rms_norm(e: Emitter, node: Node) -> None:
    # RMSNormalization is an opset-23 op; the formula runs at every opset, and is the pattern
    # (Pow, ReduceMean, Add, Sqrt, Div, Mul) that onnxruntime fuses into SimplifiedLayerNormalization.
    m, x, dtype = e.model(RmsNorm), e.input("x"), _dtype(node)
    eps = MACHINE_EPS[dtype] if m.eps is None else m.eps
    mean_square = _reduce_mean(e, e.op1("Pow", [x, e.const(2.0, "two", dtype)]), [-1])  # (*, 1)
    rms = e.op1("Sqrt", [e.op1("Add", [mean_square, e.const(float(eps), "eps", dtype)])])
    if not m.elementwise_affine:
        e.op1("Div", [x, rms], e.output())
        return
    e.op1("Mul", [e.op1("Div", [x, rms]), e.weight("weight", Init.constant(1.0))], e.output())


@LOWERINGS.register("group_norm")
def lower_group_norm(e: Emitter, node: Node) -> None:
    # GroupNormalization changed meaning between opsets 18 and 21 and onnxruntime has no CPU
    # kernel for it: groups become the channels of an instance norm, then a per-channel affine.
    m, t, dtype = e.model(GroupNorm), node.inputs["x"], _dtype(node)
    c, g, x = int(t.shape[1]), m.num_groups, e.input("x")
    grouped = e.op1("Reshape", [x, e.ints([0, g, -1], "group_shape")])  # (batch, G, C/G * positions)
    ones, zeros = e.const(np.ones(g), "group_scale", dtype), e.const(np.zeros(g), "group_bias", dtype)
    normed = e.op1("InstanceNormalization", [grouped, ones, zeros], epsilon=float(m.eps))
    out = None if m.affine else e.output()
    y = e.op1("Reshape", [normed, e.op1("Shape", [x])], out)  # (batch, C, *)
    if m.affine:
        scale = _channel_view(e, e.weight("weight", Init.constant(1.0)), c, t.rank)
        shift = _channel_view(e, e.weight("bias", Init.constant(0.0)), c, t.rank)
        e.op1("Add", [e.op1("Mul", [y, scale]), shift], e.output())


@LOWERINGS.register("instance_norm")
def lower_instance_norm(e: Emitter, node: Node) -> None:
    m, dtype = e.model(InstanceNorm), _dtype(node)
    c = int(node.inputs["x"].shape[1])
    if m.affine:
        scale, bias = e.weight("weight", Init.constant(1.0)), e.weight("bias", Init.constant(0.0))
    else:
        scale, bias = e.const(np.ones(c), "scale", dtype), e.const(np.zeros(c), "bias", dtype)
    e.op1("InstanceNormalization", [e.input("x"), scale, bias], e.output(), epsilon=float(m.eps))


@LOWERINGS.register("layer_norm2d")
def lower_layer_norm2d(e: Emitter, node: Node) -> None:
    # LayerNormalization normalises trailing axes only: channels go last and come back
    m, dtype = e.model(LayerNorm2d), _dtype(node)
    c = int(node.inputs["x"].shape[1])
    nhwc = e.op1("Transpose", [e.input("x")], perm=[0, 2, 3, 1])  # (batch, H, W, C)
    if m.elementwise_affine:
        params = [e.weight("weight", Init.constant(1.0)), e.weight("bias", Init.constant(0.0))]
    else:
        params = [e.const(np.ones(c), "scale", dtype)]
    normed = layer_norm(e, nhwc, params[0], params[1] if len(params) > 1 else None, float(m.eps), dtype)
    e.op1("Transpose", [normed], e.output(), perm=[0, 3, 1, 2])  # (batch, C, H, W)
