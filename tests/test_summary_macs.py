"""The summary's multiply-adds against torchinfo's, layer by layer, on the seed specs.

torchinfo counts a weight once per batch row (per output position for convolutions, per
step for recurrent layers); nnspec counts it at every position it is applied, symbolically.
They agree on every conv, linear, recurrent and attention layer (on transformers at seq=1,
where torchinfo's "per batch row" is per token), and differ where torchinfo's rule is not a
count of multiply-adds: an embedding lookup (torchinfo: the table's size per row; nnspec: 0)
and a batch norm's scale and shift (torchinfo: per channel; nnspec: per element).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import sympy
import torch
import torchinfo

from nnspec.backends import to_torch
from nnspec.builder import compile_graph, graph_inputs, load_spec, nodes
from nnspec.builder.summary import macs, summary_rows, totals, value

ROOT = Path(__file__).resolve().parents[1]
CASES: dict[str, dict[str, Any]] = {
    "lenet5": {},
    "rnn_intent": {},
    "lstm_sentiment": {},
    "mobilenet_v2": {},
    "resnet50": {},
    "gpt": {"layers": 2, "d_model": 64, "heads": 4, "vocab": 100},
    "bert": {"layers": 2, "hidden": 64, "heads": 4, "intermediate": 128, "vocab": 100},
    "transformer": {"layers": 2, "d_model": 64, "heads": 4, "d_ff": 128, "vocab": 100},
    "unet": {"base": 8, "height": 64, "width": 48},
}


def _inputs(graph: Any, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in graph_inputs(graph).items():
        shape = [int(d.subs({s: sizes.setdefault(str(s), 1) for s in d.free_symbols})) for d in t.shape]
        if t.dtype == "int64":
            out[name] = torch.randint(0, 2, shape)
        elif t.dtype == "bool":
            out[name] = torch.zeros(shape, dtype=torch.bool)
        else:
            out[name] = torch.randn(shape)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_macs_match_torchinfo_layer_by_layer(name: str) -> None:
    spec = load_spec(ROOT / "specs" / f"{name}.yaml", CASES[name])
    graph = compile_graph(spec)
    model = to_torch(spec).eval()
    sizes = {"batch": 2}  # every other dim (seq, ...) 1: torchinfo counts linear layers once per batch row
    info = torchinfo.summary(model, input_data=_inputs(graph, sizes), verbose=0, device="cpu")
    names = {id(m): n for n, m in model.named_modules()}
    rows = {r.id: r for r in summary_rows(graph)}
    expected = info.total_mult_adds
    compared = 0
    for layer in info.summary_list:
        if not (layer.is_leaf_layer and layer.macs):
            continue
        row = rows[names[id(layer.module)]]
        ours = value(row.macs, sizes)
        kind = type(layer.module).__name__
        if kind == "Embedding":
            assert ours == 0, row.id  # a lookup multiplies nothing
            expected -= layer.macs
        elif kind.startswith("BatchNorm"):
            spatial = math.prod(layer.output_size[2:])
            assert ours == layer.macs * spatial, row.id  # scale and shift at every element
            expected += layer.macs * (spatial - 1)
        else:
            assert ours == layer.macs, (row.id, kind, ours, layer.macs)
            compared += 1
    assert compared
    # torchinfo has no leaf layer for nnspec's attention (a module of projections and products) nor for
    # a layer tied to another's weight (GPT's LM head, BERT's MLM decoder): they are counted here only
    seen = {names[id(layer.module)] for layer in info.summary_list if layer.is_leaf_layer and layer.macs}
    for row in rows.values():
        if row.id not in seen and value(row.macs, sizes):
            assert row.op == "multi_head_attention" or row.tied, row.id
            expected += value(row.macs, sizes)
    assert value(totals(graph).macs, sizes) == expected


def test_lenet5_macs_are_torchinfos_figure() -> None:
    graph = compile_graph(load_spec(ROOT / "specs" / "lenet5.yaml"))
    assert str(totals(graph).macs) == "423038*batch"  # torchinfo: 0.42 M at batch 1
    assert value(totals(graph).macs, {"batch": 1}) == 423_038


def test_macs_stay_symbolic() -> None:
    graph = compile_graph(load_spec(ROOT / "specs" / "gpt.yaml", {"layers": 1, "d_model": 64, "heads": 4}))
    total = totals(graph).macs
    assert {str(s) for s in total.free_symbols} == {"batch", "seq"}
    # the attention products grow with seq^2: 2 x batch x seq x seq x d_model per layer
    assert total.coeff(next(s for s in total.free_symbols if str(s) == "seq"), 2) != 0
    attn = next(r for r in summary_rows(graph) if r.id == "h.0.attn")
    qkv_out = (64 * 3 * 64 + 3 * 64) + (64 * 64 + 64)
    assert value(attn.macs, {"batch": 3, "seq": 5}) == qkv_out * 15 + 2 * 3 * 5 * 5 * 64
    head = next(n for n in summary_rows(graph) if n.id == "lm_head")  # tied to wte: still multiplies
    assert value(head.macs, {"batch": 1, "seq": 1}) == 50257 * 64


def test_folded_rows_sum_their_copies() -> None:
    graph = compile_graph(load_spec(ROOT / "specs" / "gpt.yaml", {"layers": 3, "d_model": 64, "heads": 4}))
    folded = next(r for r in summary_rows(graph, 0) if r.id == "h")
    assert (folded.op, folded.repeat) == ("block", 3)
    inner = [r for r in summary_rows(graph) if r.id.startswith("h.")]
    assert sympy.expand(folded.macs - sum((r.macs for r in inner), sympy.Integer(0))) == 0
    assert folded.params == sum(r.params for r in inner)
    assert macs(next(n for n in nodes(graph) if n.op == "input")) == 0
