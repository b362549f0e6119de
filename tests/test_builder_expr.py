"""`${...}` expressions: arithmetic over params, and nothing else."""

from __future__ import annotations

import pytest

from nnspec.builder import SpecError, load_spec
from nnspec.builder.expr import ExprError, evaluate, substitute

PARAMS = {"d_model": 512, "heads": 8, "p": 0.1}


@pytest.mark.parametrize(("text", "value"), [
    ("d_model // heads", 64), ("d_model * 4", 2048), ("sqrt(d_model)", 512 ** 0.5), ("max(heads, 3) - 1", 7),
    ("floor(d_model / 3)", 170), ("ceil(d_model / 3)", 171), ("2 ** 10", 1024), ("-heads", -8),
    ("d_model if heads > 4 else 0", 512), ("1 - p", 0.9), ("heads % 3", 2),
])
def test_arithmetic(text: str, value: float) -> None:
    assert evaluate(text, PARAMS) == pytest.approx(value)


@pytest.mark.parametrize(("text", "message"), [
    ("d_model.__class__", "not allowed"), ("__import__('os')", "not allowed"), ("open('x')", "function 'open'"),
    ("[1, 2]", "not allowed"), ("'a' * 3", "not allowed"), ("lambda: 1", "not allowed"), ("x[0]", "not allowed"),
    ("nope + 1", "unknown param 'nope'"), ("1 / 0", "division by zero"), ("10 ** 100000", "exponent"),
    ("2 ** 4000 * 2 ** 4000", "overflow"), ("d_model +", "invalid expression"), ("1e308 * 10", "finite"),
])
def test_refused(text: str, message: str) -> None:
    with pytest.raises(ExprError, match=message):
        evaluate(text, PARAMS)


def test_substitution_whole_and_embedded() -> None:
    assert substitute("${d_model // heads}", PARAMS) == 64
    assert substitute("head ${heads}x${d_model}", PARAMS) == "head 8x512"
    assert substitute(7, PARAMS) == 7
    assert substitute("plain", PARAMS) == "plain"


def test_a_failed_param_is_reported_once_not_again_as_unknown_in_its_users() -> None:
    spec = ("name: p\nparams: {a: '${1 // 0}', b: '${a * 2}', c: '${b + 1}'}\ninputs: {x: {shape: [batch, 4]}}\n"
            "nodes:\n  l: {op: linear, in: x, out_features: '${c}'}\noutputs: {y: l}\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert [d.message for d in info.value.diagnostics] == ["param 'a': division by zero"]
