"""The rnn, lstm and gru ops against torch.nn.RNN/LSTM/GRU with the weights copied across
(multi-layer, bidirectional, with and without initial states), and against the cell equations
written out step by step; max abs diff <= 1e-5 in float32."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nnspec.backends.pytorch import to_torch

CONFIGS: list[dict[str, Any]] = [
    {"num_layers": 1, "bidirectional": False},
    {"num_layers": 2, "bidirectional": False},
    {"num_layers": 1, "bidirectional": True},
    {"num_layers": 3, "bidirectional": True},
    {"num_layers": 2, "bidirectional": True, "bias": False},
]
TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
IN, HIDDEN = 5, 7


def _spec(op: str, states: bool, config: dict[str, Any]) -> dict[str, Any]:
    dirs = 2 if config.get("bidirectional") else 1
    state = {"shape": [config["num_layers"] * dirs, "batch", HIDDEN]}
    inputs: dict[str, Any] = {"x": {"shape": ["batch", "seq", IN]}}
    wiring: dict[str, str] = {"x": "x"}
    if states:
        inputs["h0"] = state
        wiring["h0"] = "h0"
        if op == "lstm":
            inputs["c0"] = state
            wiring["c0"] = "c0"
    ports = ("output", "h", "c") if op == "lstm" else ("output", "h")
    return {"name": op, "inputs": inputs, "nodes": {"r": {"op": op, "in": wiring, "hidden_size": HIDDEN, **config}},
            "outputs": {p: f"r.{p}" for p in ports}}


def _run_reference(ref: torch.nn.Module, op: str, args: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    state: Any = None
    if len(args) > 1:
        state = (args[1], args[2]) if op == "lstm" else args[1]
    out, h = ref(args[0], state)
    return (out, *h) if op == "lstm" else (out, h)


@pytest.mark.parametrize("states", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "_".join(f"{k}{int(v)}" for k, v in c.items()))
@pytest.mark.parametrize("op", ["rnn", "lstm", "gru"])
def test_against_torch_nn(op: str, config: dict[str, Any], states: bool) -> None:
    torch.manual_seed(0)
    model = to_torch(_spec(op, states, config)).eval()
    ref = TORCH[op](IN, HIDDEN, batch_first=True, **config).eval()
    with torch.no_grad():  # copy our weights into the reference, by torch's own names
        for name, p in ref.named_parameters():
            p.copy_(model.get_parameter(f"r.{name}"))
    dirs = 2 if config.get("bidirectional") else 1
    for batch, seq in [(1, 1), (3, 6), (2, 11)]:
        args = [torch.randn(batch, seq, IN)]
        if states:
            args += [torch.randn(config["num_layers"] * dirs, batch, HIDDEN) for _ in range(2 if op == "lstm" else 1)]
        got = model(*args)
        want = _run_reference(ref, op, args)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape
            assert (a - b).abs().max().item() <= 1e-5


def _cells(op: str, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w: dict[str, torch.Tensor],
           suffix: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer, one direction, in float64: the equations of the torch.nn docs."""
    w_ih, w_hh = w[f"weight_ih_l0{suffix}"].double(), w[f"weight_hh_l0{suffix}"].double()
    b_ih, b_hh = w[f"bias_ih_l0{suffix}"].double(), w[f"bias_hh_l0{suffix}"].double()
    outs = []
    steps = range(x.shape[1] - 1, -1, -1) if suffix else range(x.shape[1])
    for t in steps:
        gi, gh = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if op == "rnn":
            h = torch.tanh(gi + gh)
        elif op == "gru":
            (ri, zi, ni), (rh, zh, nh) = gi.chunk(3, -1), gh.chunk(3, -1)
            r, z = torch.sigmoid(ri + rh), torch.sigmoid(zi + zh)
            h = (1 - z) * torch.tanh(ni + r * nh) + z * h
        else:
            i, f, g, o = (gi + gh).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    if suffix:
        outs.reverse()
    return torch.stack(outs, 1), h, c


@pytest.mark.parametrize("op", ["rnn", "lstm", "gru"])
def test_against_the_cell_equations(op: str) -> None:
    """A bidirectional single layer with initial states, step by step: gate order, direction
    order in the output and in h, and the batch-first layout are all checked."""
    torch.manual_seed(1)
    model = to_torch(_spec(op, True, {"num_layers": 1, "bidirectional": True})).eval()
    w = dict(model.get_submodule("r").named_parameters())
    batch, seq = 3, 5
    x = torch.randn(batch, seq, IN)
    h0, c0 = torch.randn(2, batch, HIDDEN), torch.randn(2, batch, HIDDEN)
    got = model(x, h0, c0) if op == "lstm" else model(x, h0)
    fwd = _cells(op, x.double(), h0[0].double(), c0[0].double(), w, "")
    bwd = _cells(op, x.double(), h0[1].double(), c0[1].double(), w, "_reverse")
    want = [torch.cat([fwd[0], bwd[0]], -1), torch.stack([fwd[1], bwd[1]])]
    if op == "lstm":
        want.append(torch.stack([fwd[2], bwd[2]]))
    for a, b in zip(got, want, strict=True):
        assert (a.double() - b).abs().max().item() <= 1e-5
