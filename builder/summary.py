"""Rows of `nnspec summary`: one per node, or per block call folded below a depth, with the
output shapes and dtypes, parameters, multiply-adds and activation memory of each, symbolic
in the spec's dims (``batch``, ``seq``) until sizes are given.

Multiply-adds (MACs) follow torchinfo's convention, counted at every position a weight is
applied (torchinfo counts a linear layer on ``(batch, seq, d)`` once per batch row):

- conv family: weight and bias elements x batch x output spatial size (torchinfo's rule);
- linear family: weight and bias elements x every leading output dim;
- recurrent: weight and bias elements x batch x steps;
- norms and prelu: one per output element and weight tensor (the affine scale and shift);
- multi-head attention: its projections per token, plus ``2 x batch x len_q x len_k x embed``
  for the two attention products;
- matmul: output elements x the contracted size;
- everything else (activations, pooling, lookups, shaping): none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

import networkx as nx
import sympy

from .graph import INPUT, Node, nodes
from .ops import OPS
from .tensor import TensorType

__all__ = ["ITEMSIZE", "Row", "Totals", "macs", "summary_rows", "totals", "value"]

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "bool": 1}
"""Bytes per element of each dtype a tensor can have."""

Count: TypeAlias = sympy.Expr


@dataclass(frozen=True)
class Row:
    """One line of the summary table.

    Attributes:
        id: the node id, or the block call's path for a folded row.
        op: the op, or the block's name for a folded row.
        shape: the output shapes as text (``[batch, 6, 28, 28]``).
        params: trainable parameters (tied ones excluded).
        depth: how many block calls the row is nested in.
        tied: tied weights as ``name = owner.weight``.
        repeat: for a folded ``repeat: N`` call, N.
        outputs: each output port with its shape (ints and dim names) and dtype.
        buffers: fixed, untrained tensor elements (a sinusoidal table).
        macs: multiply-adds, symbolic in the spec's dims.
        activations: bytes of the row's outputs (for a folded row: of every node inside).
    """

    id: str
    op: str
    shape: str
    params: int
    depth: int
    tied: tuple[str, ...] = ()
    repeat: int | None = None
    outputs: tuple[tuple[str, tuple[int | str, ...], str], ...] = ()
    buffers: int = 0
    macs: Count = field(default=sympy.Integer(0))
    activations: Count = field(default=sympy.Integer(0))

    def to_json(self, sizes: Mapping[str, int] | None = None) -> dict[str, object]:
        """The row as JSON data; counts are integers, or expressions (text) over dims not in `sizes`."""
        first = self.outputs[0] if self.outputs else ("", (), "")
        return {"id": self.id, "op": self.op, "repeat": self.repeat, "depth": self.depth,
                "shape": list(first[1]), "dtype": first[2] or None,
                "outputs": [{"port": p, "shape": list(s), "dtype": d} for p, s, d in self.outputs],
                "params": self.params, "buffers": self.buffers, "macs": value(self.macs, sizes),
                "activation_bytes": value(self.activations, sizes), "tied": list(self.tied)}


@dataclass(frozen=True)
class Totals:
    """The whole graph's counts."""

    params: int
    buffers: int
    macs: Count
    activations: Count
    inputs: Count
    weight_bytes: int

    def to_json(self, sizes: Mapping[str, int] | None = None) -> dict[str, object]:
        return {"params": self.params, "trainable_params": self.params, "non_trainable": self.buffers,
                "macs": value(self.macs, sizes), "activation_bytes": value(self.activations, sizes),
                "input_bytes": value(self.inputs, sizes), "weight_bytes": self.weight_bytes}


def value(expr: Count, sizes: Mapping[str, int] | None = None) -> int | str:
    """`expr` with `sizes` put in: an int when no symbol is left, else the expression as text."""
    if sizes:
        expr = expr.subs({s: sizes[str(s)] for s in expr.free_symbols if str(s) in sizes})
    return int(expr) if expr.is_Integer else str(expr)


def _numel(t: TensorType) -> Count:
    return sympy.Mul(*t.shape) if t.shape else sympy.Integer(1)


def _first(n: Node) -> TensorType:
    return next(iter(n.outputs.values()))


def _conv(n: Node) -> Count:
    y = _first(n).shape
    return n.params * y[0] * sympy.Mul(*y[2:])


def _linear(n: Node) -> Count:
    return n.params * sympy.Mul(*_first(n).shape[:-1])


def _tied_linear(n: Node) -> Count:
    """A layer whose weight is tied (GPT's LM head) still multiplies by it."""
    own = n.params + sum(math.prod(_tied_shape(n, w)) for w in n.ties)
    return own * sympy.Mul(*_first(n).shape[:-1])


def _tied_shape(n: Node, weight: str) -> tuple[int, ...]:
    if n.model is None:
        return ()
    return tuple(n.model.weights(n.inputs).get(weight, ()))


def _recurrent(n: Node) -> Count:
    y = _first(n).shape
    return n.params * y[0] * y[1]


def _elementwise_affine(n: Node) -> Count:
    return len(n.weights) * _numel(_first(n))


def _attention(n: Node) -> Count:
    w = n.weights
    bias = 1 if "in_proj_bias" in w else 0
    if "query" not in n.inputs:  # the key/value projection alone (a derived cross_kv graph)
        k = n.inputs["key"]
        rows, cols = w["in_proj_weight"]
        return (rows - cols) * (cols + bias) * k.shape[0] * k.shape[1]
    q = n.inputs["query"]
    b, t, e = q.shape
    rows, cols = w.get("in_proj_weight", (e, e))
    if "projected_key" in n.inputs:  # keys and values projected before: the query's projection only
        s, kv_part = n.inputs["projected_key"].shape[2], 0
    else:
        k = n.inputs.get("key", q)
        s = k.shape[1] + (n.inputs["past_key"].shape[2] if "past_key" in n.inputs else 0)
        kv_part = (rows - e) * (cols + bias) * b * k.shape[1]
    q_part = e * (cols + bias) * b * t
    out_part = (math.prod(w.get("out_proj.weight", (0,))) + math.prod(w.get("out_proj.bias", (0,)))) * b * t
    return q_part + kv_part + out_part + 2 * b * t * s * e


def _matmul(n: Node) -> Count:
    a = next(iter(n.inputs.values()))
    return _numel(_first(n)) * (a.shape[-1] if a.shape else 1)


_BY_FAMILY: dict[str, Callable[[Node], Count]] = {
    "conv": _conv, "linear": _tied_linear, "recurrent": _recurrent, "norm": _elementwise_affine,
    "attention": _attention,
}
_BY_OP: dict[str, Callable[[Node], Count]] = {"matmul": _matmul, "prelu": _elementwise_affine}


def macs(n: Node) -> Count:
    """Multiply-adds of one node (see the module docstring for the convention)."""
    if n.op == INPUT or n.op not in OPS:
        return sympy.Integer(0)
    rule = _BY_OP.get(n.op) or _BY_FAMILY.get(OPS[n.op].FAMILY)
    if rule is None or (not n.weights and not n.ties and rule is not _matmul):
        return sympy.Integer(0)
    return sympy.expand(rule(n))


def _activations(n: Node) -> Count:
    return sympy.Add(*(_numel(t) * ITEMSIZE.get(t.dtype, 4) for t in n.outputs.values()))


def _buffers(n: Node) -> int:
    return 0 if n.model is None else sum(map(math.prod, n.model.buffers(n.inputs).values()))


def _outputs(n: Node) -> tuple[tuple[str, tuple[int | str, ...], str], ...]:
    return tuple((port, tuple(int(d) if d.is_Integer else str(d) for d in t.shape), t.dtype)
                 for port, t in n.outputs.items())


def summary_rows(g: nx.MultiDiGraph, depth: int | None = None) -> list[Row]:
    """Rows in graph order; with `depth`, block calls nested deeper than it fold into one row.

    Depth counts block frames: a top-level ``repeat: 6`` call is depth 1 and each of its
    copies depth 2; ``depth=0`` folds every top-level block call into one row, whose counts
    are the sums over every copy and node inside it, and whose outputs are the last node's.
    """
    rows: list[Row] = []
    folded: dict[str, int] = {}
    for n in nodes(g):
        shape = ", ".join(f"[{', '.join(str(d) for d in t.shape)}]" for t in n.outputs.values())
        if n.op == INPUT:
            rows.append(Row(n.id, "input", shape, 0, 0, outputs=_outputs(n)))
            continue
        counts = {"params": n.params, "buffers": _buffers(n), "macs": macs(n), "activations": _activations(n)}
        if depth is None or len(n.scope) <= depth:
            tied = tuple(f"{name} = {owner}.{weight}" for name, (owner, weight) in n.ties.items())
            rows.append(Row(n.id, n.op, shape, depth=len(n.scope), tied=tied, outputs=_outputs(n), **counts))
            continue
        frame = n.scope[depth]
        if frame.path in folded:
            i = folded[frame.path]
            prev = rows[i]
            counts = {"params": prev.params + n.params, "buffers": prev.buffers + counts["buffers"],
                      "macs": sympy.expand(prev.macs + counts["macs"]),
                      "activations": sympy.expand(prev.activations + counts["activations"])}
        else:
            folded[frame.path] = i = len(rows)
            rows.append(Row(frame.path, frame.block, shape, 0, depth + 1))
        rows[i] = Row(frame.path, frame.block, shape, depth=depth + 1, repeat=frame.repeat or None,
                      outputs=_outputs(n), **counts)
    return rows


def totals(g: nx.MultiDiGraph) -> Totals:
    """Parameters, buffers, MACs, activation and input bytes of the whole graph."""
    params = buffers = weight_bytes = 0
    total_macs: Count = sympy.Integer(0)
    acts: Count = sympy.Integer(0)
    ins: Count = sympy.Integer(0)
    for n in nodes(g):
        if n.op == INPUT:
            ins += _activations(n)
            continue
        params += n.params
        buffers += _buffers(n)
        weight_bytes += 4 * (n.params + _buffers(n))
        total_macs += macs(n)
        acts += _activations(n)
    return Totals(params, buffers, sympy.expand(total_macs), sympy.expand(acts), sympy.expand(ins), weight_bytes)
