"""Specs built to cost far more to check than they declare: long expressions in many block
copies, recursion hidden in unused nodes, diagrams too dense to lay out, exports of large models.

Each case runs the real command and asserts either a quick success or one located exit-1 error,
within a time bound measured in CPU seconds (the machine may be shared).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_hostile_files import assert_user_error, nnspec

from nnspec.builder.expr import Expressions, ExprLimitError, TensorSizes


def long_expression_spec(copies: int, chars: int, grows: bool) -> str:
    """A block with one linear layer whose size is a `chars`-long expression, repeated `copies` times.

    With `grows`, each copy's layer is one wider than its input, so the expression reads a different
    size in every copy and no result can be reused."""
    terms = ", ".join(["w"] * (chars // 3))
    size = f"h.features + 1 + 0 * max({terms})" if grows else f"max({terms})"
    return f"""name: long_expression
params: {{w: 4, n: {copies}}}
inputs: {{x: {{shape: [batch, 4]}}}}
blocks:
  b:
    inputs: [h]
    nodes:
      r: {{op: linear, in: h, out_features: '${{{size}}}'}}
    outputs: {{y: r}}
nodes:
  t: {{op: b, in: x, repeat: '${{n}}'}}
outputs: {{y: t}}
"""


# ---------------------------------------------------------------- expressions


def test_an_expression_is_evaluated_once_per_distinct_values() -> None:
    exprs = Expressions()
    text = "max(" + ", ".join(["w"] * 1000) + ") * k"
    for _ in range(1000):
        assert exprs.evaluate(text, {"w": 3, "k": 2, "unread": object()}) == 6
    assert exprs.spent == len(text)
    assert exprs.evaluate(text, {"w": 3, "k": 2.0}) == 6.0  # 2 and 2.0 make different values: evaluated again
    assert isinstance(exprs.evaluate(text, {"w": 3, "k": 2.0}), float)
    assert exprs.spent == 2 * len(text)
    sizes = {"x": TensorSizes("x", (2, 8)), "w": 1, "k": 1}
    assert exprs.evaluate("x.features * k", sizes) == 8
    assert exprs.evaluate("x.features * k", {**sizes, "x": TensorSizes("x", (2, 16))}) == 16


def test_fresh_evaluation_past_the_limit_stops() -> None:
    exprs = Expressions(max_chars=100)
    for k in range(9):  # 9 * 11 characters
        exprs.evaluate("k * 2 + 100", {"k": k})
    with pytest.raises(ExprLimitError, match="more than 100 characters"):
        exprs.evaluate("k * 2 + 100", {"k": 9})


@pytest.mark.parametrize("copies", [5_000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_a_long_expression_in_many_copies_is_checked_quickly(copies: int, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "long.yaml"
    spec.write_text(long_expression_spec(copies, 60_000, grows=False))
    start = time.process_time()
    code, out, err = nnspec(["validate", str(spec)], monkeypatch, capsys)
    elapsed = time.process_time() - start
    assert code == 0, err
    assert f"{copies + 1} nodes" in out
    assert elapsed < 10 * copies / 5_000, f"{elapsed:.1f} s"  # each copy parsed and walked 60 KB: 15-40 ms a copy


def test_copies_that_each_need_new_work_reach_the_expression_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "grows.yaml"
    spec.write_text(long_expression_spec(100_000, 60_000, grows=True))
    start = time.process_time()
    code, _, err = nnspec(["validate", str(spec)], monkeypatch, capsys)
    assert_user_error(code, err, f"{spec}:8:", "error[limit]", "node 't.", "--limit max_expr_chars")
    assert err.count("error[") == 1
    assert time.process_time() - start < 10
    spec.write_text(long_expression_spec(10, 60_000, grows=True))  # fewer copies fit in the limit
    code, _, err = nnspec(["validate", str(spec)], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = nnspec(["validate", str(spec), "--limit", "max_expr_chars=100000"], monkeypatch, capsys)
    assert_user_error(code, err, "node 't.1.r'", "more than 100,000 characters")
