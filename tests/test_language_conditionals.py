"""Conditionals in the spec language: `when:`, `repeat: 0` and an op chosen by a param (`op: '${norm}'`).

All are resolved in builder: an absent node is not in the graph, and refs to it (or to its first port)
stand for its first input. VGG-16 switches batch norm with a `when:` and matches torchvision's counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nnspec.builder import Diagnostic, SpecError, compile_graph, load_spec, nodes, param_count

SPECS = Path(__file__).resolve().parents[1] / "specs"

BLOCKS: dict[str, Any] = {
    "res": {
        "params": {"out": None},
        "inputs": ["x"],
        "nodes": {
            "fc": {"op": "linear", "in": "x", "out_features": "${out}"},
            "proj": {"op": "linear", "in": "x", "out_features": "${out}", "when": "${x.features != out}"},
            "sum": {"op": "add", "in": ["fc", "proj"]},
        },
        "outputs": {"y": "sum"},
    },
}


def _spec(nodes_: dict[str, Any], params: dict[str, Any] | None = None, outputs: Any = None) -> dict[str, Any]:
    return {"name": "t", "params": params or {}, "inputs": {"x": {"shape": ["batch", 8]}}, "blocks": BLOCKS,
            "nodes": nodes_, "outputs": outputs or {"y": list(nodes_)[-1]}}


def _ids(spec: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[str]:
    return [n.id for n in nodes(compile_graph(load_spec(spec, overrides)))]


@pytest.mark.parametrize(("flag", "expected"), [(True, ["x", "a", "b"]), (False, ["x", "b"])])
def test_when_removes_a_node_and_passes_its_input_on(flag: bool, expected: list[str]) -> None:
    spec = _spec({"a": {"op": "relu", "in": "x", "when": "${use}"}, "b": {"op": "tanh", "in": "a"}}, {"use": True})
    assert _ids(spec, {"use": flag}) == expected
    g = compile_graph(load_spec(spec, {"use": flag}))
    assert g.nodes["b"]["node"].bindings["x"].node == expected[-2]


def test_when_accepts_a_literal_and_the_first_port() -> None:
    spec = _spec({"a": {"op": "relu", "in": "x", "when": False}, "b": {"op": "tanh", "in": "a.y"}})
    assert _ids(spec) == ["x", "b"]


def test_when_on_a_block_call_and_inside_a_block() -> None:
    spec = _spec({"a": {"op": "res", "in": "x", "out": 8}, "b": {"op": "res", "in": "a", "out": 16},
                  "c": {"op": "res", "in": "b", "out": 16, "when": "${deep}"}}, {"deep": False})
    # `proj` exists only where the width changes (8 -> 16), read from the input's size
    assert _ids(spec) == ["x", "a.fc", "a.sum", "b.fc", "b.proj", "b.sum"]
    assert _ids(spec, {"deep": True})[-2:] == ["c.fc", "c.sum"]


def test_nodes_only_an_absent_node_uses_are_left_out_without_a_warning() -> None:
    spec = _spec({"side": {"op": "linear", "in": "x", "out_features": 8},
                  "join": {"op": "add", "in": ["x", "side"], "when": False}, "out": {"op": "relu", "in": "join"}})
    warnings: list[Diagnostic] = []
    g = compile_graph(load_spec(spec), warnings=warnings)
    assert [n.id for n in nodes(g)] == ["x", "out"] and warnings == []


def test_a_node_nothing_uses_still_warns() -> None:
    spec = _spec({"lost": {"op": "relu", "in": "x"}, "out": {"op": "tanh", "in": "x"}})
    warnings: list[Diagnostic] = []
    compile_graph(load_spec(spec), warnings=warnings)
    assert [w.node for w in warnings] == ["lost"]


def test_an_absent_output_is_its_input() -> None:
    spec = _spec({"a": {"op": "relu", "in": "x"}, "b": {"op": "tanh", "in": "a", "when": False}})
    g = compile_graph(load_spec(spec))
    assert g.graph["outputs"]["y"].node == "a"


@pytest.mark.parametrize(("layers", "count"), [(0, 0), (1, 1), (3, 3)])
def test_repeat_zero_passes_the_input_through(layers: int, count: int) -> None:
    spec = _spec({"a": {"op": "res", "in": "x", "out": 8, "repeat": "${layers}"}, "b": {"op": "relu", "in": "a"}},
                 {"layers": 1})
    ids = _ids(spec, {"layers": layers})
    assert sum(i.endswith(".fc") for i in ids) == count
    g = compile_graph(load_spec(spec, {"layers": layers}))
    assert (g.nodes["b"]["node"].bindings["x"].node == "x") == (layers == 0)


def test_repeat_zero_written_as_a_number() -> None:
    assert _ids(_spec({"a": {"op": "res", "in": "x", "out": 8, "repeat": 0}, "b": {"op": "relu", "in": "a"}})) == \
        ["x", "b"]


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_op_chosen_by_a_param(norm: str) -> None:
    spec = _spec({"n": {"op": "${norm}", "in": "x"}}, {"norm": "layer_norm"})
    g = compile_graph(load_spec(spec, {"norm": norm}))
    assert g.nodes["n"]["node"].op == norm


def test_block_chosen_by_a_param() -> None:
    spec = _spec({"n": {"op": "${kind}", "in": "x", "out": 4}}, {"kind": "res"})
    assert _ids(spec) == ["x", "n.fc", "n.proj", "n.sum"]


def test_op_and_when_together_switch_a_norm_off() -> None:
    spec = _spec({"n": {"op": "${norm}", "in": "x", "when": "${norm != 'none'}"}, "o": {"op": "relu", "in": "n"}},
                 {"norm": "layer_norm"})
    assert _ids(spec) == ["x", "n", "o"]
    assert _ids(spec, {"norm": "none"}) == ["x", "o"]  # 'none' is no op, but the node does not exist


def test_ref_to_another_port_of_an_absent_node_is_an_error() -> None:
    spec = _spec({"s": {"op": "split", "in": "x", "sizes": [4, 4], "dim": 1, "when": False},
                  "a": {"op": "add", "in": ["s.0", "s.1"]}})
    with pytest.raises(SpecError) as exc:
        compile_graph(load_spec(spec))
    (err,) = exc.value.errors
    assert err.code == "absent-port" and "'s.1'" in err.message and err.node == "a"


def test_absent_node_without_input() -> None:
    spec = {"name": "t", "inputs": {"x": {"shape": ["batch", 8]}},
            "nodes": {"c": {"op": "constant", "value": 1.0, "when": False}, "a": {"op": "add", "in": ["x", "c"]}},
            "outputs": {"y": "a"}}
    with pytest.raises(SpecError) as exc:
        compile_graph(load_spec(spec))
    assert any(e.code == "absent-port" and "no input to pass on" in e.message for e in exc.value.errors)


def test_vgg16_counts_match_torchvision() -> None:
    path = SPECS / "vgg16.yaml"
    assert param_count(compile_graph(load_spec(path))) == 138_357_544
    assert param_count(compile_graph(load_spec(path, {"batch_norm": True}))) == 138_365_992
    ops = {n.op for n in nodes(compile_graph(load_spec(path)))}
    assert "batch_norm" not in ops
