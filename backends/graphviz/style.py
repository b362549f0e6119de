"""How things look: a colour per op family, a node shape per op, fonts and number formats.

`SHAPES` is this back end's table keyed by op name (every op in `builder.OPS` has a row, and
a test checks it); `COLORS` has a row per op family plus the diagram's own kinds (inputs,
outputs, folded blocks). The colours are Paul Tol's "light" scheme, chosen so that black
text stays readable on every one and neighbouring families stay distinguishable.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COLORS", "FONT", "SHAPES", "Look", "fmt_count", "look_of"]

FONT = "Helvetica,Arial,sans-serif"
"""One font list for every text: fontconfig (PNG, PDF) and browsers (SVG) both take a list."""

COLORS: dict[str, str] = {
    "input": "#FFFFFF",
    "output": "#FFFFFF",
    "block": "#CCBBEE",
    "conv": "#77AADD",
    "pool": "#99DDFF",
    "linear": "#EEDD88",
    "embedding": "#EE8866",
    "norm": "#BBCC33",
    "activation": "#44BB99",
    "attention": "#FFAABB",
    "recurrent": "#AAAA00",
    "regularization": "#DDDDDD",
    "tensor": "#F4F4F4",
}
"""Fill colour by op family (`builder.FAMILIES`) and for inputs, outputs and folded blocks."""

BORDER = "#555555"
CLUSTER_FILLS = ("#F6F6F6", "#EBEBEB", "#E0E0E0")
"""Cluster backgrounds by nesting level (cycled), so nested blocks stand apart."""

_BOX, _OVAL, _MERGE, _FORK = "box", "ellipse", "invtrapezium", "trapezium"

SHAPES: dict[str, str] = {
    # activations
    "relu": _BOX, "tanh": _BOX, "sigmoid": _BOX, "gelu": _BOX, "softmax": _BOX, "log_softmax": _BOX,
    # attention
    "attention": _BOX, "multi_head_attention": _BOX, "rotary": _BOX,
    # layers
    "linear": _BOX, "conv1d": _BOX, "conv2d": _BOX,
    "max_pool1d": _BOX, "max_pool2d": _BOX, "avg_pool1d": _BOX, "avg_pool2d": _BOX,
    "embedding": _BOX, "position_embedding": _BOX, "sinusoidal_position": _BOX,
    "dropout": _BOX, "batch_norm": _BOX, "layer_norm": _BOX,
    # sequence
    "rnn": _BOX, "lstm": _BOX, "gru": _BOX,
    # tensor ops: arithmetic that combines tensors is an oval (the ⊕ of paper figures),
    # concat narrows many inputs into one, split fans one out
    "add": _OVAL, "mul": _OVAL, "scale": _OVAL, "matmul": _OVAL,
    "concat": _MERGE, "split": _FORK,
    "reshape": _BOX, "flatten": _BOX, "transpose": _BOX, "permute": _BOX,
    "slice": _BOX, "select": _BOX, "mean": _BOX,
    # convolution, resampling and pooling beyond the seed set
    "conv_transpose1d": _BOX, "conv_transpose2d": _BOX, "conv3d": _BOX, "max_pool3d": _BOX, "avg_pool3d": _BOX,
    "adaptive_avg_pool1d": _BOX, "adaptive_avg_pool2d": _BOX, "adaptive_max_pool1d": _BOX, "adaptive_max_pool2d": _BOX,
    "upsample": _BOX, "interpolate": _BOX, "pixel_shuffle": _BOX, "pixel_unshuffle": _BOX, "pad": _BOX,
    # activations beyond the seed set
    "relu6": _BOX, "hardtanh": _BOX, "clamp": _BOX, "leaky_relu": _BOX, "elu": _BOX, "silu": _BOX, "mish": _BOX,
    "hardswish": _BOX, "hardsigmoid": _BOX, "softplus": _BOX, "prelu": _BOX, "glu": _BOX,
    # normalisation beyond batch and layer norm
    "rms_norm": _BOX, "group_norm": _BOX, "instance_norm": _BOX, "layer_norm2d": _BOX,
    # elementwise arithmetic and reductions
    "sub": _OVAL, "div": _OVAL, "pow": _OVAL, "minimum": _OVAL, "maximum": _OVAL, "where": _OVAL,
    "masked_fill": _BOX, "sqrt": _BOX, "rsqrt": _BOX, "exp": _BOX, "log": _BOX, "neg": _BOX, "abs": _BOX,
    "sum": _BOX, "max": _BOX, "min": _BOX,
    # tensor construction and indexing
    "squeeze": _BOX, "unsqueeze": _BOX, "expand": _BOX, "repeat": _BOX, "tile": _BOX, "stack": _MERGE,
    "gather": _BOX, "index_select": _BOX, "constant": _BOX, "parameter": _BOX,
}
"""The node shape of each op (the diagram's lowering table, keyed like `builder.OPS`)."""


@dataclass(frozen=True)
class Look:
    """How one drawn item looks: Graphviz shape, style, fill colour and border count."""

    shape: str
    style: str
    fill: str
    peripheries: int = 1


def look_of(kind: str, op: str, family: str, repeat: int | None = None) -> Look:
    """The look of an item of `kind` (input, output, op, block).

    An op's shape is its row in `SHAPES`, else the shape its plugin gave it
    (`nnspec.builder.plugin_lowerings`), else a box (rounded, as for every layer, unless it is a tensor op).
    """
    if kind == "input":
        return Look("ellipse", "filled,bold", COLORS["input"])
    if kind == "output":
        return Look("ellipse", "filled,bold", COLORS["output"], peripheries=2)
    if kind == "block":
        # a folded repeat is a stack of boxes (box3d); a folded call a double-bordered box
        return Look("box3d" if repeat else "box", "filled", COLORS["block"], peripheries=1 if repeat else 2)
    shape = SHAPES.get(op)
    if shape is None:
        from nnspec.builder.plugins import plugin_shape

        shape = plugin_shape(op) or _BOX
    style = "rounded,filled" if shape == _BOX and family != "tensor" else "filled"
    return Look(shape, style, COLORS.get(family, COLORS["tensor"]))


def fmt_count(n: int) -> str:
    """A parameter count in a few characters: ``2,416``, ``48.1k``, ``85.1M``, ``1.56B``."""
    if n < 10_000:
        return f"{n:,}"
    for scale, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "B")):
        text = f"{n / scale:.3g}"
        if float(text) < 1000:  # 999,500 reads 1M, not 1e+03k
            return text + suffix
    return f"{n / 1e9:,.0f}B"
