"""Expressions that read the sizes of a block's inputs: ``${x.channels}``, ``x.features``, ``x.shape[i]``, ``x.rank``.

Shapes are inferred while blocks are expanded, so each call (and each copy of a repeated call) reads its
own input. The evaluator stays a whitelist: only these four sizes of a tensor in scope can be read.
"""

from __future__ import annotations

from typing import Any

import pytest

from nnspec.builder import SpecError, compile_graph, load_spec, nodes
from nnspec.builder.expr import ExprError, TensorSizes, evaluate


def _block_spec(out: str, shape: list[Any], repeat: int | None = None, extra: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    call: dict[str, Any] = {"op": "b", "in": "x", **(extra or {})}
    if repeat is not None:
        call["repeat"] = repeat
    return {"name": "t", "inputs": {"x": {"shape": shape}},
            "blocks": {"b": {"params": {"k": 1}, "inputs": ["x"],
                             "nodes": {"fc": {"op": "linear", "in": "x", "out_features": out}}, "outputs": {"y": "fc"}}},
            "nodes": {"a": call}, "outputs": {"y": "a"}}


def _out_shape(spec: dict[str, Any]) -> list[Any]:
    g = compile_graph(load_spec(spec))
    return [int(d) if d.is_Integer else str(d) for d in nodes(g)[-1].outputs["y"].shape]


@pytest.mark.parametrize(("expr", "size"), [
    ("${x.channels}", 3), ("${x.features}", 6), ("${x.shape[-1]}", 6), ("${x.shape[2]}", 5), ("${x.rank}", 4),
    ("${x.channels * k + x.shape[-2]}", 8), ("${2 * x.features if x.rank == 4 else 1}", 12),
])
def test_block_reads_its_input_sizes(expr: str, size: int) -> None:
    assert _out_shape(_block_spec(expr, ["batch", 3, 5, 6])) == ["batch", 3, 5, size]


def test_each_repeated_copy_reads_its_own_input() -> None:
    # copy 0 sees 4 features and makes 8; copy 1 sees 8 and makes 16
    assert _out_shape(_block_spec("${x.features * 2}", ["batch", 4], repeat=3)) == ["batch", 32]


def test_block_param_default_reads_the_input() -> None:
    spec = _block_spec("${hidden}", ["batch", 4])
    spec["blocks"]["b"]["params"] = {"hidden": "${x.features * 4}"}
    assert _out_shape(spec) == ["batch", 16]


def test_graph_inputs_sizes_are_readable_at_top_level() -> None:
    spec = {"name": "t", "inputs": {"x": {"shape": ["batch", 7]}},
            "nodes": {"a": {"op": "linear", "in": "x", "out_features": "${x.features + 1}"}}, "outputs": {"y": "a"}}
    assert _out_shape(spec) == ["batch", 8]


@pytest.mark.parametrize(("expr", "message"), [
    ("${x.shape[0]}", "x.shape[0] is the symbolic 'batch'; a fixed size is needed here"),
    ("${x.channels}", "x.channels (x.shape[1]) is the symbolic 'seq'"),
    ("${x.shape[7]}", "'x' has rank 3, so no dim 7"),
    ("${x.size}", "a tensor has no size 'size'"),
    ("${x}", "'x' is a tensor"),
    ("${x.shape}", "needs an index"),
    ("${x.shape.__class__}", "is not allowed"),
    ("${k.channels}", "sizes are read from a tensor in scope"),
])
def test_size_errors_are_located(expr: str, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        compile_graph(load_spec(_block_spec(expr, ["batch", "seq", 4])))
    (err,) = exc.value.errors
    assert err.code == "bad-expr" and message in err.message, err
    assert err.node == "a.fc" and err.pos.line == 0  # a dict spec has no lines; the node is named


def test_evaluator_stays_a_whitelist() -> None:
    params = {"x": TensorSizes("x", ("batch", 3)), "n": 2}
    for text in ("x.shape.__len__()", "x.__dict__", "x.shape[0:1]", "(lambda: 1)()", "n.real", "x.shape[n:]",
                 "__import__('os')", "x.shape[x]"):
        with pytest.raises(ExprError):
            evaluate(text, params)
    assert evaluate("x.shape[n - 1]", params) == 3
    with pytest.raises(ExprError, match="too large"):
        evaluate("x.channels ** 5000", params)
