"""Shape inference on every op case: symbolic shapes as declared, and concrete inputs give
the symbolic result evaluated at those sizes (several values per symbol)."""

from __future__ import annotations

import pytest
import sympy
from op_cases import CASES, SIZES, OpCase

from nnspec.builder import OPS, compile_graph, load_spec, symbol


def _dims(shape: list[int | str]) -> tuple[sympy.Expr, ...]:
    names = {s: symbol(s) for s in ("B", "T", "S")}
    return tuple(sympy.sympify(str(d), locals=names) for d in shape)


def _concrete(case: OpCase, sizes: dict[str, int]) -> dict:
    spec = case.spec()
    for inp in spec["inputs"].values():
        inp["shape"] = [int(sympy.sympify(d, locals=dict(sizes))) if isinstance(d, str) else d for d in inp["shape"]]
    return spec


def test_every_op_has_a_case() -> None:
    assert {c.op for c in CASES} == set(OPS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_symbolic_shapes(case: OpCase) -> None:
    node = compile_graph(load_spec(case.spec())).nodes["n"]["node"]
    assert set(node.outputs) == set(case.expect)
    for port, shape in case.expect.items():
        got = node.outputs[port].shape
        want = _dims(shape)
        assert len(got) == len(want) and all(sympy.simplify(a - b) == 0 for a, b in zip(got, want)), (port, got, want)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_concrete_shapes_agree_with_symbolic(case: OpCase, sizes: dict[str, int]) -> None:
    symbolic = compile_graph(load_spec(case.spec())).nodes["n"]["node"]
    concrete = compile_graph(load_spec(_concrete(case, sizes))).nodes["n"]["node"]
    for port, t in symbolic.outputs.items():
        assert concrete.outputs[port].concrete({}) == t.concrete(
            {name: sizes[name] for name in ("B", "T", "S")}), port
    assert concrete.weights == symbolic.weights


def test_symbolic_batch_survives_lenet() -> None:
    g = compile_graph(load_spec("specs/lenet5.yaml"))
    shapes = {n: str(g.nodes[n]["node"].outputs["y"]) for n in ("c1", "s2", "c3", "s4", "c5", "out")}
    assert shapes == {"c1": "batch×6×28×28", "s2": "batch×6×14×14", "c3": "batch×16×10×10",
                      "s4": "batch×16×5×5", "c5": "batch×120×1×1", "out": "batch×10"}


def test_symbolic_spatial_size_stays_an_expression() -> None:
    spec = {"name": "free", "inputs": {"x": {"shape": ["B", 3, "H", "W"]}},
            "nodes": {"c": {"op": "conv2d", "in": "x", "out_channels": 4, "kernel_size": 3, "stride": 2},
                      "p": {"op": "max_pool2d", "in": "c", "kernel_size": 2}},
            "outputs": {"y": "p"}}
    out = compile_graph(load_spec(spec)).nodes["p"]["node"].outputs["y"]
    for h in (7, 8, 31, 64):
        conv = (h - 3) // 2 + 1
        assert out.concrete({"B": 1, "H": h, "W": h}) == (1, 4, conv // 2, conv // 2)


def test_seq_flows_through_attention_and_lstm() -> None:
    for name, out in (("gpt", "logits"), ("lstm_sentiment", "logits"), ("transformer", "logits")):
        g = compile_graph(load_spec(f"specs/{name}.yaml"))
        node_ref = g.graph["outputs"][out]
        t = g.nodes[node_ref.node]["node"].outputs[node_ref.port]
        assert "batch" in t.symbols
    g = compile_graph(load_spec("specs/gpt.yaml"))
    assert str(g.nodes["h.11.attn"]["node"].outputs["y"]) == "batch×seq×768"


def test_ceil_mode_drops_a_window_that_starts_in_the_padding() -> None:
    spec = {"name": "pool", "inputs": {"x": {"shape": [1, 1, 5]}},
            "nodes": {"p": {"op": "max_pool1d", "in": "x", "kernel_size": 2, "stride": 2, "padding": 1,
                            "ceil_mode": True}},
            "outputs": {"y": "p"}}
    assert compile_graph(load_spec(spec)).nodes["p"]["node"].outputs["y"].concrete({}) == (1, 1, 3)  # torch gives 3
