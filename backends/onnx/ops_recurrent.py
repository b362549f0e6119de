"""ONNX lowerings of rnn, lstm and gru: one ONNX RNN/LSTM/GRU node per layer.

PyTorch and ONNX differ in three ways that this module converts:

- layout: nnspec's recurrent ops are batch-first; onnxruntime runs only ``layout=0``
  (seq, batch, features), so the input is transposed once and the output back.
- gate order: PyTorch stacks LSTM gates as i, f, g, o and GRU gates as r, z, n; ONNX wants
  i, o, f, c and z, r, h. The weights keep PyTorch's names and layout; a Gather with a
  constant row permutation reorders them (onnxruntime folds it when the session starts).
- bias: PyTorch has ``bias_ih`` and ``bias_hh`` per direction; ONNX one ``B`` of
  (directions, 2 * gates * hidden), the input biases then the recurrent ones.

PyTorch's GRU applies the reset gate after the recurrent matmul: ``linear_before_reset=1``.
A `lengths` input becomes every layer's ``sequence_lens`` (int32).
"""

from __future__ import annotations

import math

import numpy as np

from nnspec.builder import Node
from nnspec.builder.ops.sequence import Gru, Lstm, Rnn

from .table import LOWERINGS, Emitter
from .weights import Init

__all__: list[str] = []

ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
GATE_ORDER = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
"""For each ONNX gate slot, the PyTorch gate that fills it (LSTM: i,o,f,c <- i,f,g,o; GRU: z,r,h <- r,z,n)."""


def _pack(e: Emitter, parts: list[str], order: tuple[int, ...], hidden: int, dirs: int, cols: int | None,
          hint: str) -> str:
    """Stack PyTorch tensors (one per direction, or ih/hh pairs) into ONNX's (dirs, rows[, cols]) layout.

    Each part has len(order) gate blocks of `hidden` rows; the rows are reordered into ONNX's gate order.
    """
    x = parts[0] if len(parts) == 1 else e.op1("Concat", parts, axis=0)
    if order != tuple(range(len(order))):
        key = ("gate_rows", len(parts), order, hidden)  # the same for every layer: build it once
        rows = e.memo.get(key)
        if rows is None:
            # row j of gate slot g in part b comes from row (b * gates + order[g]) * hidden + j
            blocks = np.arange(len(parts))[:, None] * len(order) + np.asarray(order)[None, :]  # (parts, gates)
            index = (blocks[:, :, None] * hidden + np.arange(hidden)).reshape(-1).astype(np.int64)
            rows = e.memo[key] = e.const(index, f"{hint}_rows")
        x = e.op1("Gather", [x, rows], axis=0)
    shape = [dirs, -1] if cols is None else [dirs, -1, cols]
    return e.op1("Reshape", [x, e.ints(shape)])


def _layer_state(e: Emitter, port: str, layer: int, dirs: int, layers: int) -> str:
    """Rows layer*dirs .. (layer+1)*dirs of an initial state (layers*dirs, batch, hidden), or none."""
    if not e.has(port):
        return ""
    if layers == 1:
        return e.input(port)
    return e.op1("Slice", [e.input(port), e.ints([layer * dirs], "starts"), e.ints([(layer + 1) * dirs], "ends"),
                           e.ints([0], "axes")])


def _merge_directions(e: Emitter, y: str, dirs: int, batch_first: bool, output: str | None) -> str:
    """ONNX's Y (seq, dirs, batch, hidden) to (seq, batch, dirs*hidden), or batch-first (batch, seq, ...)."""
    if dirs == 1:
        y = e.op1("Squeeze", [y, e.ints([1], "axes")])  # (seq, batch, hidden)
        return e.op1("Transpose", [y], output, perm=[1, 0, 2]) if batch_first else y
    y = e.op1("Transpose", [y], perm=[2, 0, 1, 3] if batch_first else [0, 2, 1, 3])
    return e.op1("Reshape", [y, e.ints([0, 0, -1])], output)


@LOWERINGS.register("rnn", "lstm", "gru")
def lower_recurrent(e: Emitter, node: Node) -> None:
    m: Rnn | Lstm | Gru = e.model(Lstm) if node.op == "lstm" else e.model(Gru) if node.op == "gru" else e.model(Rnn)
    h, dirs, layers = m.hidden_size, m.directions, m.num_layers
    order = GATE_ORDER[node.op]
    init = Init.uniform(1 / math.sqrt(h))  # PyTorch: U(-1/sqrt(hidden), 1/sqrt(hidden)) for every weight
    attrs: dict[str, object] = {"hidden_size": h, "direction": "bidirectional" if dirs == 2 else "forward"}
    if isinstance(m, Rnn):
        attrs["activations"] = ["Relu" if m.nonlinearity == "relu" else "Tanh"] * dirs
    if node.op == "gru":
        attrs["linear_before_reset"] = 1
    x = e.op1("Transpose", [e.input("x")], perm=[1, 0, 2])  # (seq, batch, in)
    # ONNX's sequence_lens (int32): outputs past a length are zero, Y_h is the last valid step's
    # state, and the reverse direction starts at each sequence's own last step (as packed sequences)
    lengths = e.op1("Cast", [e.input("lengths")], to=6) if e.has("lengths") else ""
    finals: list[list[str]] = [[] for _ in m.OUTPUTS[1:]]  # Y_h (and Y_c) of each layer: (dirs, batch, hidden)
    for layer in range(layers):
        sfx = ("", "_reverse")[:dirs]
        in_size = node.inputs["x"].shape[-1] if layer == 0 else h * dirs
        w = _pack(e, [e.weight(f"weight_ih_l{layer}{s}", init) for s in sfx], order, h, dirs, int(in_size), "w")
        r = _pack(e, [e.weight(f"weight_hh_l{layer}{s}", init) for s in sfx], order, h, dirs, h, "r")
        b = ""
        if m.bias:
            pairs = [e.weight(f"bias_{kind}_l{layer}{s}", init) for s in sfx for kind in ("ih", "hh")]
            b = _pack(e, pairs, order, h, dirs, None, "b")
        states = [_layer_state(e, port, layer, dirs, layers) for port in m.STATES]
        inputs = [x, w, r, b, lengths, *states]  # lengths "": every sequence is full length
        while inputs[-1] == "":
            inputs.pop()
        last = layer == layers - 1
        outs = [e.fresh("Y"), *(e.output(p) if layers == 1 else e.fresh(f"Y_{p}") for p in m.OUTPUTS[1:])]
        e.op(ONNX_OP[node.op], inputs, outs, **attrs)
        for i, state in enumerate(outs[1:]):
            finals[i].append(state)
        x = _merge_directions(e, outs[0], dirs, batch_first=last, output=e.output("output") if last else None)
    if layers > 1:
        for port, states in zip(m.OUTPUTS[1:], finals, strict=True):  # h (and c): (layers*dirs, batch, hidden)
            e.op1("Concat", states, e.output(port), axis=0)

