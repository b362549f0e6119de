"""What the shared op cases cannot show for elementwise arithmetic and tensor construction:
sizes written symbolically (computed at run time in both backends, ONNX keeping its dynamic
axes), -inf fill values, learned free tensors, ops without inputs, and the errors of each."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from nnspec.backends.onnx import run_onnx, to_onnx
from nnspec.backends.pytorch import emit_python, to_torch
from nnspec.builder import SpecError, compile_graph, load_spec

SYMBOLIC = {
    "name": "symbolic",
    "inputs": {"x": {"shape": ["batch", "seq", 4]}},
    "nodes": {
        "cls": {"op": "parameter", "shape": [1, 1, 4], "init": {"weight": "normal(std=0.02)"}},
        "cls_b": {"op": "expand", "in": "cls", "shape": ["batch", -1, -1]},
        "tokens": {"op": "concat", "in": ["cls_b", "x"], "dim": 1},  # (batch, seq + 1, 4)
        "bias": {"op": "constant", "fill": "full", "shape": ["batch", "seq + 1", 1], "value": 0.5},
        "out": {"op": "add", "in": ["tokens", "bias"]},
        "pos": {"op": "constant", "fill": "arange", "end": "seq + 1"},
        "scaled": {"op": "mul", "in": "out", "value": 2},
    },
    "outputs": {"y": "scaled", "pos": "pos"},
}


def _expected(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cls = model.get_parameter("cls.weight").detach().expand(x.shape[0], 1, 4)
    tokens = torch.cat([cls, x], 1)
    return (tokens + 0.5) * 2, torch.arange(x.shape[1] + 1)


def test_symbolic_sizes_are_inferred() -> None:
    g = compile_graph(load_spec(SYMBOLIC))
    assert str(g.nodes["cls_b"]["node"].outputs["y"]) == "batch×1×4"
    assert str(g.nodes["bias"]["node"].outputs["y"]) == "batch×seq+1×1"
    pos = g.nodes["pos"]["node"].outputs["y"]
    assert str(pos) == "seq+1" and pos.dtype == "int64"


@pytest.mark.parametrize("sizes", [(1, 1), (2, 5), (3, 8)])
def test_symbolic_sizes_run_in_both_backends(sizes: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = to_torch(SYMBOLIC)
    x = torch.randn(*sizes, 4)
    y, pos = model(x)
    want_y, want_pos = _expected(model, x)
    assert torch.allclose(y, want_y) and torch.equal(pos, want_pos)
    onnx_model = to_onnx(SYMBOLIC, model.state_dict())
    got = run_onnx(onnx_model, {"x": x.numpy()})
    np.testing.assert_allclose(got["y"], want_y.numpy(), atol=1e-6)
    np.testing.assert_array_equal(got["pos"], want_pos.numpy())


def test_onnx_keeps_the_dynamic_axes() -> None:
    model = to_onnx(SYMBOLIC)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq", 4]
    assert "Shape" in {n.op_type for n in model.graph.node}  # sizes read from the input, not baked in
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    out = {o.name: o.type.tensor_type.shape.dim for o in inferred.graph.output}
    assert [d.dim_param for d in out["y"]][:1] == ["batch"]


def test_generated_source_computes_sizes_at_run_time(tmp_path: Path) -> None:
    source = emit_python(SYMBOLIC)
    path = tmp_path / "gen_symbolic.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("gen_symbolic", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_symbolic"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["gen_symbolic"]
    built = to_torch(SYMBOLIC)
    emitted = module.Symbolic()
    emitted.load_state_dict(built.state_dict())
    x = torch.randn(3, 6, 4)
    for a, b in zip(emitted(x), built(x), strict=True):
        assert torch.equal(a, b)


def test_a_size_no_input_carries_is_refused_by_name() -> None:
    spec = {"name": "s", "inputs": {"x": {"shape": ["batch", 4]}},
            "nodes": {"z": {"op": "constant", "fill": "zeros", "shape": ["bacth", 4]}},
            "outputs": {"y": "z"}}
    def validate(s: dict[str, Any]) -> None:
        compile_graph(load_spec(s))

    for build in (validate, to_torch, to_onnx):  # refused by the check, before either backend
        with pytest.raises(SpecError, match="size 'bacth' is no dim of the graph's inputs") as info:
            build(spec)
        assert info.value.diagnostics[0].hints == ("did you mean 'batch'?",)


# --- parameter -------------------------------------------------------------------------------

def test_parameter_is_a_weight_named_by_its_node_and_initialised_as_asked() -> None:
    torch.manual_seed(0)
    spec = {"name": "p", "inputs": {"x": {"shape": ["batch", 64, 32]}},
            "nodes": {"scale": {"op": "parameter", "shape": [32]},
                      "table": {"op": "parameter", "shape": [64, 32], "init": {"weight": "normal(std=0.02)"}},
                      "a": {"op": "mul", "in": ["x", "scale"]}, "b": {"op": "add", "in": ["a", "table"]}},
            "outputs": {"y": "b"}}
    model = to_torch(spec)
    state = model.state_dict()
    assert list(state) == ["scale.weight", "table.weight"]
    assert torch.equal(state["scale.weight"], torch.zeros(32))  # zeros unless init: says otherwise
    assert 0.015 < float(state["table.weight"].std()) < 0.025
    names = {t.name for t in to_onnx(spec, state).graph.initializer}
    assert {"scale.weight", "table.weight"} <= names


# --- -inf fill values ------------------------------------------------------------------------

@pytest.mark.parametrize("fill", [float("-inf"), "-inf", "-Infinity"])
def test_masked_fill_takes_minus_infinity(fill: Any) -> None:
    spec = {"name": "m", "inputs": {"s": {"shape": ["batch", 5]}, "pad": {"shape": ["batch", 5], "dtype": "bool"}},
            "nodes": {"f": {"op": "masked_fill", "in": {"x": "s", "mask": "pad"}, "value": fill},
                      "p": {"op": "softmax", "in": "f", "dim": -1}},
            "outputs": {"y": "p"}}
    s = torch.randn(3, 5)
    pad = torch.tensor([[False, False, True, True, True]] * 3)
    want = torch.softmax(s.masked_fill(pad, -math.inf), -1)
    assert torch.allclose(to_torch(spec)(s, pad), want)
    np.testing.assert_allclose(run_onnx(to_onnx(spec), {"s": s.numpy(), "pad": pad.numpy()})["y"], want.numpy(),
                               atol=1e-6)


def test_minus_infinity_reads_from_yaml() -> None:
    text = """
name: m
inputs: {s: {shape: [2, 3]}, pad: {shape: [2, 3], dtype: bool}}
nodes:
  f: {op: masked_fill, in: {x: s, mask: pad}, value: -.inf}
outputs: {y: f}
"""
    g = compile_graph(load_spec(text))
    assert g.nodes["f"]["node"].model.value == float("-inf")


# --- errors ----------------------------------------------------------------------------------

def _errors(nodes: dict[str, Any], inputs: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    spec = {"name": "e", "inputs": inputs or {"a": {"shape": ["batch", 4]}, "b": {"shape": ["batch", 4]}},
            "nodes": nodes, "outputs": {"y": list(nodes)[-1]}}
    with pytest.raises(SpecError) as info:
        compile_graph(load_spec(spec))
    return [(d.code, d.message) for d in info.value.diagnostics]


@pytest.mark.parametrize(("node", "code", "message"), [
    ({"op": "sub", "in": ["a", "b"], "value": 2}, "bad-arg", "with a constant value the op takes one input"),
    ({"op": "add", "in": ["a", "b"], "value": 2}, "bad-arg", "with a constant value the op takes one input"),
    ({"op": "sub", "in": "a"}, "shape-mismatch", "sub needs a second input (b) or a constant value"),
    ({"op": "add", "in": "a"}, "shape-mismatch", "add needs at least 2 inputs, or one input and a constant value"),
    ({"op": "div", "in": "a", "value": 0.5, "extra": 1}, "unknown-key", "unknown key 'extra'"),
    ({"op": "constant", "fill": "zeros", "shape": [2], "in": "a"}, "bad-arg", "the op takes no inputs"),
    ({"op": "constant", "fill": "zeros"}, "bad-arg", "fill: zeros needs a shape"),
    ({"op": "constant", "fill": "full", "shape": [2]}, "bad-arg", "fill: full needs one"),
    ({"op": "constant", "fill": "zeros", "shape": ["batch)"]}, "bad-arg", "is not an integer, a dim name"),
    ({"op": "constant", "fill": "zeros", "shape": ["__import__('os')"]}, "bad-arg", "is not an integer, a dim name"),
    ({"op": "masked_fill", "in": {"x": "a", "mask": "b"}, "value": 0}, "shape-mismatch", "expected a bool mask"),
    ({"op": "masked_fill", "in": {"x": "a", "mask": "a"}, "value": "nan"}, "bad-arg", "not nan"),
    ({"op": "squeeze", "in": "a", "dim": 0}, "shape-mismatch", "'batch', a symbolic size"),
    ({"op": "squeeze", "in": "a", "dim": 1}, "shape-mismatch", "has size 4, not 1"),
    ({"op": "expand", "in": "a", "shape": [-1, 8]}, "shape-mismatch", "only size-1 dims grow"),
    ({"op": "repeat", "in": "a", "repeats": [2]}, "shape-mismatch", "fewer than the input's rank 2"),
    ({"op": "gather", "in": {"x": "a", "index": "b"}, "dim": 1}, "shape-mismatch", "expected an int64 index"),
    ({"op": "sqrt", "in": "a", "value": 1}, "unknown-key", "unknown key 'value'"),
])
def test_bad_nodes_get_one_clear_error(node: dict[str, Any], code: str, message: str) -> None:
    errors = _errors({"n": node})
    assert len(errors) == 1 and errors[0][0] == code and message in errors[0][1], errors


def test_integer_inputs_keep_their_dtype_with_a_constant() -> None:
    spec = {"name": "i", "inputs": {"ids": {"shape": ["batch", 4], "dtype": "int64"}},
            "nodes": {"n": {"op": "add", "in": "ids", "value": 1}, "m": {"op": "maximum", "in": "n", "value": 2}},
            "outputs": {"y": "m"}}
    g = compile_graph(load_spec(spec))
    assert g.nodes["m"]["node"].outputs["y"].dtype == "int64"
    ids = torch.tensor([[0, 1, 2, 3]])
    got = to_torch(spec)(ids)
    assert got.dtype == torch.int64 and torch.equal(got, torch.clamp(ids + 1, min=2))
    out = run_onnx(to_onnx(spec), {"ids": ids.numpy()})["y"]
    assert out.dtype == np.int64 and np.array_equal(out, got.numpy())
    assert _errors({"n": {"op": "add", "in": "ids", "value": 0.5}},
                   {"ids": {"shape": [2], "dtype": "int64"}})[0][1].endswith("value 0.5 is not an integer, but the "
                                                                             "input is int64")


# --- names -----------------------------------------------------------------------------------

def test_repeat_the_op_and_repeat_the_block_key_do_not_collide() -> None:
    spec = {"name": "r", "inputs": {"x": {"shape": ["batch", 2]}},
            "blocks": {"twice": {"inputs": ["h"], "nodes": {"t": {"op": "repeat", "in": "h", "repeats": [1, 2]},
                                                              "s": {"op": "slice", "in": "t", "dim": 1, "end": 2}},
                                 "outputs": {"y": "s"}}},
            "nodes": {"b": {"op": "twice", "in": "x", "repeat": 3}, "c": {"op": "tile", "in": "b", "repeats": [2]}},
            "outputs": {"y": "c"}}
    g = compile_graph(load_spec(spec))
    assert [n for n in g.nodes if n.endswith(".t")] == ["b.0.t", "b.1.t", "b.2.t"]
    x = torch.randn(3, 2)
    assert torch.equal(to_torch(spec)(x), x.repeat(1, 2))
