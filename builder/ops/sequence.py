"""Recurrent layers (batch-first), weights laid out as torch.nn.RNN/LSTM/GRU lay them out.

With `lengths`, a padded batch gives each sequence's own result (PyTorch's packed sequences):
outputs past a sequence's length are zero, the final states are those of its last valid
step, and the reverse direction of a bidirectional layer starts at that step.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import sympy
from pydantic import Field, PositiveInt

from ..tensor import ShapeError, TensorType, fmt_dim, same_dim
from .base import Op, WeightShapes, expect_float, expect_rank, last_dim, register


def _check_lengths(lengths: TensorType, batch: sympy.Expr) -> None:
    if lengths.dtype not in ("int64", "int32"):
        raise ShapeError(f"lengths must be int64 (valid steps per sequence), got {lengths.dtype}", "lengths")
    if lengths.rank != 1 or not same_dim(lengths.shape[0], batch):
        raise ShapeError(f"lengths must be (batch,) = [{fmt_dim(batch)}], got [{lengths}]", "lengths")


class _Recurrent(Op):
    hidden_size: PositiveInt
    num_layers: PositiveInt = Field(default=1, le=10_000, description="Stacked layers, each with its own weights.")
    bidirectional: bool = False
    bias: bool = True
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout between layers while training.")
    FAMILY: ClassVar[str] = "recurrent"
    INPUTS: ClassVar[tuple[str, ...]] = ("x", "h0", "lengths")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"h0", "lengths"})
    OUTPUTS: ClassVar[tuple[str, ...]] = ("output", "h")
    STATES: ClassVar[tuple[str, ...]] = ("h0",)
    GATES: ClassVar[int] = 1

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        expect_rank(x, 3, "x", "(batch, seq, features)")
        expect_float(x, "x")
        last_dim(x, "x", "input size")
        batch = x.shape[0]
        state = x.with_shape((sympy.Integer(self.num_layers * self.directions), batch, sympy.Integer(self.hidden_size)))
        for port in self.STATES:
            if port in ins:
                t = ins[port]
                if t.rank != 3 or not all(same_dim(a, b) for a, b in zip(t.shape, state.shape, strict=True)):
                    raise ShapeError(f"initial state {port} must be (layers*directions, batch, hidden) = "
                                     f"[{state}], got [{t}]", port)
        if "lengths" in ins:
            _check_lengths(ins["lengths"], batch)
        out = {"output": x.with_shape((batch, x.shape[1], sympy.Integer(self.directions * self.hidden_size))),
               "h": state}
        if "c" in self.OUTPUTS:
            out["c"] = state
        return out

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        g, h = self.GATES * self.hidden_size, self.hidden_size
        w: WeightShapes = {}
        for layer in range(self.num_layers):
            inp = last_dim(ins["x"], "x") if layer == 0 else h * self.directions
            for suffix in ("", "_reverse")[: self.directions]:
                w[f"weight_ih_l{layer}{suffix}"] = (g, inp)
                w[f"weight_hh_l{layer}{suffix}"] = (g, h)
                if self.bias:
                    w[f"bias_ih_l{layer}{suffix}"] = (g,)
                    w[f"bias_hh_l{layer}{suffix}"] = (g,)
        return w

    def label(self) -> str:
        parts = [f"{self.hidden_size}"]
        if self.num_layers > 1:
            parts.append(f"×{self.num_layers} layers")
        if self.bidirectional:
            parts.append("bidir.")
        return " ".join(parts)


@register
class Rnn(_Recurrent):
    """Elman RNN (torch.nn.RNN, batch_first): h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    Input shape: x (batch, seq, in), optional h0 (layers*dirs, batch, hidden), optional int64
    lengths (batch,): valid steps of each padded sequence.
    Output shapes: output (batch, seq, dirs*hidden), zero past each length; h (layers*dirs,
    batch, hidden), the state at each sequence's last valid step.
    """

    op: Literal["rnn"]
    nonlinearity: Literal["tanh", "relu"] = "tanh"


@register
class Lstm(_Recurrent):
    """Long short-term memory (torch.nn.LSTM, batch_first; gates i, f, g, o).

    Input shape: x (batch, seq, in), optional h0 and c0 (layers*dirs, batch, hidden), optional
    int64 lengths (batch,): valid steps of each padded sequence.
    Output shapes: output (batch, seq, dirs*hidden), zero past each length; h and c
    (layers*dirs, batch, hidden), the states at each sequence's last valid step.
    """

    op: Literal["lstm"]
    INPUTS: ClassVar[tuple[str, ...]] = ("x", "h0", "c0", "lengths")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"h0", "c0", "lengths"})
    OUTPUTS: ClassVar[tuple[str, ...]] = ("output", "h", "c")
    STATES: ClassVar[tuple[str, ...]] = ("h0", "c0")
    GATES: ClassVar[int] = 4

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        if ("h0" in ins) != ("c0" in ins):
            missing = "c0" if "h0" in ins else "h0"
            raise ShapeError(f"give both initial states h0 and c0, or neither ({missing} is missing)", missing)
        return super().infer(ins)


@register
class Gru(_Recurrent):
    """Gated recurrent unit (torch.nn.GRU, batch_first; gates r, z, n).

    Input shape: x (batch, seq, in), optional h0 (layers*dirs, batch, hidden), optional int64
    lengths (batch,): valid steps of each padded sequence.
    Output shapes: output (batch, seq, dirs*hidden), zero past each length; h (layers*dirs,
    batch, hidden), the state at each sequence's last valid step.
    """

    op: Literal["gru"]
    GATES: ClassVar[int] = 3


