"""ONNX lowerings of transposed and 3-D convolution, adaptive and 3-D pooling, resampling, padding.

Every lowering here computes exactly what the PyTorch op computes, at every opset from
`MIN_OPSET` up: Resize takes PyTorch's coordinate rules (``half_pixel`` equals PyTorch's
``align_corners=False`` also for an output of length 1, where ``pytorch_half_pixel`` does
not), pixel_unshuffle reorders SpaceToDepth's channels into PyTorch's order, and adaptive
pooling with uneven bins is written out bin by bin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import sympy

from nnspec.builder import Node
from nnspec.builder.ops.spatial import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool3d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    Interpolate,
    MaxPool3d,
    Pad,
    PixelShuffle,
    PixelUnshuffle,
)
from nnspec.builder.tensor import fmt_dim

from .table import LOWERINGS, Emitter, LoweringError
from .weights import Init

__all__: list[str] = []

_INT64_MAX = 2**63 - 1


def _fan_in_bound(node: Node) -> float:
    """kaiming_uniform(a=sqrt(5))'s bound 1/sqrt(fan_in), fan_in = weight.size(1) * kernel elements."""
    w = node.weights.get("weight")
    if w is None:  # tied: the owner says how it is initialised
        return 1.0
    return 1 / math.sqrt(math.prod(w[1:]))


def _conv_inputs(e: Emitter, node: Node, bias: bool) -> list[str]:
    bound = _fan_in_bound(node)
    inputs = [e.input("x"), e.weight("weight", Init.uniform(bound))]
    if bias:
        inputs.append(e.weight("bias", Init.uniform(bound)))
    return inputs


# --- convolution ---------------------------------------------------------------------------

@LOWERINGS.register("conv3d")
def lower_conv3d(e: Emitter, node: Node) -> None:
    m = e.model(Conv3d)
    k, s, d = m._kernel(), m._tuple(m.stride), m._tuple(m.dilation)
    if m.padding == "same":  # stride 1: total d(k-1), the odd one at the end, as PyTorch pads
        total = [dd * (kk - 1) for kk, dd in zip(k, d, strict=True)]
        pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    else:
        p = (0, 0, 0) if m.padding == "valid" else m._tuple(m.padding)
        pads = [*p, *p]
    e.op1("Conv", _conv_inputs(e, node, m.bias), e.output(), kernel_shape=list(k), strides=list(s),
          dilations=list(d), pads=pads, group=m.groups)


@LOWERINGS.register("conv_transpose1d", "conv_transpose2d")
def lower_conv_transpose(e: Emitter, node: Node) -> None:
    m = e.model(ConvTranspose1d) if node.op == "conv_transpose1d" else e.model(ConvTranspose2d)
    p = m._t("padding")
    # weight (C_in, C_out / groups, *k): PyTorch's layout is ONNX's
    e.op1("ConvTranspose", _conv_inputs(e, node, m.bias), e.output(), kernel_shape=list(m._t("kernel_size")),
          strides=list(m._t("stride")), dilations=list(m._t("dilation")), pads=[*p, *p],
          output_padding=list(m._t("output_padding")), group=m.groups)


# --- 3-D pooling ---------------------------------------------------------------------------

def _batched(e: Emitter, node: Node, spatial: int) -> tuple[str, bool]:
    """The input with a batch dim: ONNX pools want (N, C, *spatial); unbatched (C, *spatial) gets one."""
    unbatched = node.inputs["x"].rank == spatial + 1
    x = e.input("x")
    return (e.op1("Unsqueeze", [x, e.ints([0], "axes")]) if unbatched else x), unbatched


def _unbatch(e: Emitter, y: str, unbatched: bool) -> None:
    if unbatched:
        e.op1("Squeeze", [y, e.ints([0], "axes")], e.output())


@LOWERINGS.register("max_pool3d", "avg_pool3d")
def lower_pool3d(e: Emitter, node: Node) -> None:
    m: MaxPool3d | AvgPool3d = e.model(MaxPool3d) if node.op == "max_pool3d" else e.model(AvgPool3d)
    x, unbatched = _batched(e, node, 3)
    attrs = {"kernel_shape": list(m._t(m.kernel_size)), "strides": list(m._t(m.stride)), "pads": [m.padding] * 6,
             "ceil_mode": int(m.ceil_mode)}
    out = None if unbatched else e.output()
    if isinstance(m, AvgPool3d):
        y = e.op1("AveragePool", [x], out, count_include_pad=int(m.count_include_pad), **attrs)
    else:
        y = e.op1("MaxPool", [x], out, **attrs)
    _unbatch(e, y, unbatched)


# --- adaptive pooling ----------------------------------------------------------------------

def _reduce(e: Emitter, op_type: str, x: str, axis: int, output: str | None = None, keep: bool = True) -> str:
    """Reduce one axis, keeping it unless told (axes became an input at opset 18; ReduceSum's at 13)."""
    if e.opset >= 18 or op_type == "ReduceSum":
        return e.op1(op_type, [x, e.ints([axis], "axes")], output, keepdims=int(keep))
    return e.op1(op_type, [x], output, axes=[axis], keepdims=int(keep))


def _bins(e: Emitter, op_type: str, x: str, axis: int, size: int, out: int, rank: int, dtype: str,
          output: str | None) -> str:
    """PyTorch's adaptive bins along one axis: bin i is [floor(i L / n), ceil((i + 1) L / n)).

    One Gather lays the bins out as an (n, k) block of indices (k the longest bin; a shorter bin
    repeats its last index, which a max ignores and a mean weighs 0), then one reduction over k:
    the node count stays fixed however many bins there are.
    """
    starts = [i * size // out for i in range(out)]
    ends = [-(-(i + 1) * size // out) for i in range(out)]
    k = max(end - start for start, end in zip(starts, ends))
    index = np.array([[min(s + j, t - 1) for j in range(k)] for s, t in zip(starts, ends)], dtype=np.int64)
    binned = e.op1("Gather", [x, e.const(index, "bins")], axis=axis)  # (..., n, k, ...)
    if op_type == "ReduceMax":
        return _reduce(e, "ReduceMax", binned, axis + 1, output, keep=False)
    weights = np.array([[1 / (t - s) if j < t - s else 0.0 for j in range(k)] for s, t in zip(starts, ends)])
    weights = weights.reshape(weights.shape + (1,) * (rank - axis - 1))  # broadcast over the axes after
    weighted = e.op1("Mul", [binned, e.const(weights, "bin_weights", dtype)])
    return _reduce(e, "ReduceSum", weighted, axis + 1, output, keep=False)


_ADAPTIVE = {"adaptive_avg_pool1d": AdaptiveAvgPool1d, "adaptive_avg_pool2d": AdaptiveAvgPool2d,
             "adaptive_max_pool1d": AdaptiveMaxPool1d, "adaptive_max_pool2d": AdaptiveMaxPool2d}
Axis = tuple[int, sympy.Expr, "int | None"]
"""(ONNX axis, input size, output size or None to keep it) of one pooled axis."""


@LOWERINGS.register(*_ADAPTIVE)
def lower_adaptive_pool(e: Emitter, node: Node) -> None:
    m = e.model(_ADAPTIVE[node.op])
    kind = "Average" if "avg" in node.op else "Max"
    t = node.inputs["x"]
    x, unbatched = _batched(e, node, m.SPATIAL)
    axes: list[Axis] = [(2 + i, size, out)
                        for i, (size, out) in enumerate(zip(t.shape[t.rank - m.SPATIAL:], m.sizes(), strict=True))]
    output = None if unbatched else e.output()
    if all(out == 1 for _, _, out in axes):  # any input size: global pooling
        y = e.op1(f"Global{kind}Pool", [x], output)
    elif all(out is None or (size.is_Integer and int(size) % out == 0) for _, size, out in axes):
        kernel = [1 if out is None else int(size) // out for _, size, out in axes]  # even bins: one window
        y = e.op1(f"{kind}Pool", [x], output, kernel_shape=kernel, strides=kernel)
    else:
        y = _uneven_bins(e, node, x, axes, "ReduceMean" if kind == "Average" else "ReduceMax", output)
    _unbatch(e, y, unbatched)


def _uneven_bins(e: Emitter, node: Node, x: str, axes: Sequence[Axis], op_type: str, output: str | None) -> str:
    """Pool axis by axis (a mean or max over a box is the mean or max over its rows of the same over
    its columns), each axis by one Gather of its bins and one reduction (see `_bins`)."""
    todo = [(axis, size, out) for axis, size, out in axes if out is not None]
    for i, (axis, size, out) in enumerate(todo):
        last = output if i == len(todo) - 1 else None
        if out == 1:  # one bin: the whole axis, whatever its size
            x = _reduce(e, op_type, x, axis, last)
        elif size.is_Integer:
            x = _bins(e, op_type, x, axis, int(size), out, 2 + len(axes), node.inputs["x"].dtype, last)
        else:
            raise LoweringError(
                f"node '{node.id}': {node.op} to output size {out} in dim {axis} needs a fixed input size there "
                f"for ONNX, got '{fmt_dim(size)}' (PyTorch's bins depend on it); fix that dim in the spec's input "
                "shape, or pool to size 1 (global pooling works with any size)")
    return x


# --- resampling ----------------------------------------------------------------------------

def _resize_attrs(m: Interpolate) -> dict[str, object]:
    """Resize's attributes for PyTorch's mode and coordinate rule."""
    if m.mode == "nearest":  # src = floor(dst / scale)
        return {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    if m.mode == "nearest-exact":  # src = floor((dst + 0.5) / scale)
        return {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
                "nearest_mode": "round_prefer_ceil"}
    # src = (dst + 0.5) / scale - 0.5, clamped at 0 for linear; PyTorch's own for any output length
    ctm = "align_corners" if m.align_corners else "half_pixel"
    if m.mode == "bicubic":
        return {"mode": "cubic", "coordinate_transformation_mode": ctm, "cubic_coeff_a": -0.75}
    return {"mode": "linear", "coordinate_transformation_mode": ctm}


def _check_float32_scales(node: Node, scales: list[float]) -> None:
    """Resize computes floor(L * scale) with a float32 scale; PyTorch in double. Where the scale is
    not a float32 number the two can differ, so only sizes where they agree are lowered."""
    t = node.inputs["x"]
    for axis, (size, s) in enumerate(zip(t.shape[2:], scales, strict=True), start=2):
        if float(np.float32(s)) == s:
            continue
        if not size.is_Integer:
            raise LoweringError(f"node '{node.id}': scale_factor {s:g} is not exact in float32, so ONNX Resize's output "
                             f"size can differ from PyTorch's for some sizes of dim {axis} ('{fmt_dim(size)}'); use "
                             "a scale such as 0.5, 1.5 or 2, or give size instead")
        n = int(size)
        if int(np.float32(s) * np.float32(n)) != math.floor(float(n) * s):
            raise LoweringError(f"node '{node.id}': scale_factor {s:g} on size {n} of dim {axis} gives a different "
                             "output size in ONNX Resize (float32) than in PyTorch (double); give size instead")


@LOWERINGS.register("interpolate", "upsample")
def lower_interpolate(e: Emitter, node: Node) -> None:
    m = e.model(Interpolate)  # upsample is a subclass: the same arguments
    t, out = node.inputs["x"], node.outputs["y"]
    scales = m.scales(t)
    attrs = _resize_attrs(m)
    if scales is not None:  # the scale itself, as PyTorch uses it for the coordinates too
        _check_float32_scales(node, scales)
        scale_const = e.const(np.asarray([1.0, 1.0, *scales], dtype=np.float32), "scales")
        e.op1("Resize", [e.input("x"), "", scale_const], e.output(), **attrs)
        return
    spatial = [int(d) for d in out.shape[2:]]
    if all(d.is_Integer for d in t.shape[:2]):
        sizes = e.ints([int(t.shape[0]), int(t.shape[1]), *spatial], "sizes")
    else:  # (N, C) from the input at run time
        lead = e.op1("Shape", [e.input("x")], start=0, end=2)
        sizes = e.op1("Concat", [lead, e.ints(spatial, "spatial_sizes")], axis=0)
    e.op1("Resize", [e.input("x"), "", "", sizes], e.output(), **attrs)


@LOWERINGS.register("pixel_shuffle")
def lower_pixel_shuffle(e: Emitter, node: Node) -> None:
    r = e.model(PixelShuffle).upscale_factor
    x, unbatched = _batched(e, node, 2)  # (C, H, W) or (N, C, H, W)
    # CRD: channel c r² + i r + j goes to (c, h r + i, w r + j), PyTorch's order
    y = e.op1("DepthToSpace", [x], None if unbatched else e.output(), blocksize=r, mode="CRD")
    _unbatch(e, y, unbatched)


@LOWERINGS.register("pixel_unshuffle")
def lower_pixel_unshuffle(e: Emitter, node: Node) -> None:
    r = e.model(PixelUnshuffle).downscale_factor
    x, unbatched = _batched(e, node, 2)
    c = int(node.inputs["x"].shape[-3])
    # SpaceToDepth puts (c, h r + i, w r + j) at channel (i r + j) C + c; PyTorch at c r² + i r + j
    blocks = e.op1("SpaceToDepth", [x], blocksize=r)
    order = [k * c + ch for ch in range(c) for k in range(r * r)]
    y = e.op1("Gather", [blocks, e.ints(order, "channel_order")], None if unbatched else e.output(), axis=1)
    _unbatch(e, y, unbatched)


# --- padding -------------------------------------------------------------------------------

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


@LOWERINGS.register("pad")
def lower_pad(e: Emitter, node: Node) -> None:
    m = e.model(Pad)
    t = node.inputs["x"]
    per_axis = m.per_axis(t.rank)
    if m.mode == "circular":
        _circular(e, per_axis)
        return
    crops = [(axis, max(-a, 0), max(-b, 0)) for axis, (a, b) in enumerate(per_axis) if a < 0 or b < 0]
    x = e.input("x")
    if any(a > 0 or b > 0 for a, b in per_axis):
        # ONNX: all begins, then all ends, first axis first; F.pad: (begin, end) pairs, last axis first
        pads = e.ints([max(a, 0) for a, _ in per_axis] + [max(b, 0) for _, b in per_axis], "pads")
        inputs = [x, pads]
        if m.mode == "constant":
            inputs.append(e.const(np.asarray(m.value), "value", t.dtype))
        x = e.op1("Pad", inputs, None if crops else e.output(), mode=_PAD_MODES[m.mode])
    if crops:  # negative pads crop: a Slice (Pad takes them too, but not every runtime does)
        starts = [a for _, a, _ in crops]
        ends = [-b if b else _INT64_MAX for _, _, b in crops]
        e.op1("Slice", [x, e.ints(starts, "starts"), e.ints(ends, "ends"), e.ints([c[0] for c in crops], "axes")],
              e.output())
    elif x == e.input("x"):  # all pads zero
        e.op1("Identity", [x], e.output())


def _circular(e: Emitter, per_axis: list[tuple[int, int]]) -> None:
    """Wrap-around padding, axis by axis: [x[-a:], x, x[:b]] (Pad's "wrap" mode needs opset 19)."""
    x = e.input("x")
    padded = [(axis, a, b) for axis, (a, b) in enumerate(per_axis) if a or b]
    if not padded:
        e.op1("Identity", [x], e.output())
        return
    for i, (axis, a, b) in enumerate(padded):
        axes = e.ints([axis], "axes")
        parts = [x]
        if a:
            parts.insert(0, e.op1("Slice", [x, e.ints([-a], "starts"), e.ints([_INT64_MAX], "ends"), axes]))
        if b:
            parts.append(e.op1("Slice", [x, e.ints([0], "starts"), e.ints([b], "ends"), axes]))
        x = e.op1("Concat", parts, e.output() if i == len(padded) - 1 else None, axis=axis)
