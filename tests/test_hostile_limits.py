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


# ---------------------------------------------------------------- diagram layout


def dense_spec(nodes: int, fan_in: int) -> str:
    """A chain of `nodes` adds, each also of up to `fan_in` earlier nodes picked at random (seeded):
    ``dot``'s full layout of 120 nodes with 8 inputs each takes minutes, the cheaper ones seconds."""
    import random

    rng = random.Random(0)
    lines = ["name: dense", "inputs: {x: {shape: [batch, 4]}}", "nodes:", "  n0: {op: relu, in: x}"]
    for i in range(1, nodes):
        ins = sorted({f"n{rng.randrange(i)}" for _ in range(min(i, fan_in))} | {f"n{i - 1}"})
        op = f"add, in: [{', '.join(ins)}]" if len(ins) > 1 else f"relu, in: {ins[0]}"
        lines.append(f"  n{i}: {{op: {op}}}")
    return "\n".join([*lines, f"outputs: {{y: n{nodes - 1}}}"]) + "\n"


@pytest.fixture
def dot_installed() -> None:
    import shutil

    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")


@pytest.mark.usefixtures("dot_installed")
def test_a_dense_diagram_gets_a_cheaper_layout_within_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import json

    spec = tmp_path / "dense.yaml"
    spec.write_text(dense_spec(120, 8))
    out = tmp_path / "dense.svg"
    start = time.monotonic()
    code, stdout, err = nnspec(["render", str(spec), "-o", str(out), "--limit", "max_layout_seconds=6", "--json"],
                               monkeypatch, capsys)
    elapsed = time.monotonic() - start
    assert code == 0, err
    assert "note: Graphviz ran out of time for the full layout (3 s" in err
    notes = [line.removeprefix("note: ") for line in err.splitlines() if line.startswith("note: ")]
    assert json.loads(stdout)["notes"] == notes and len(notes) == 1
    assert out.read_bytes().startswith(b"<?xml") and b'id="nn&#45;n119"' in out.read_bytes()
    assert elapsed < 6 + 5  # the layouts, and loading the spec


@pytest.mark.usefixtures("dot_installed")
def test_a_layout_past_the_whole_budget_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "dense.yaml"
    spec.write_text(dense_spec(400, 10))  # even sfdp takes a second
    start = time.monotonic()
    code, _, err = nnspec(["render", str(spec), "-o", str(tmp_path / "d.svg"), "--limit", "max_layout_seconds=1"],
                          monkeypatch, capsys)
    assert_user_error(code, err, "took more than 1 s (--limit max_layout_seconds)", "--depth 0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense.yaml"]
    assert time.monotonic() - start < 1 + 5


def test_layouts_fall_back_in_turn_and_the_next_drawing_starts_where_the_last_ended(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from nnspec.backends.graphviz import layout

    commands: list[list[str]] = []

    def dot(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        commands.append(command)
        if "-Ksfdp" not in command:
            raise subprocess.TimeoutExpired(command, float(str(kwargs["timeout"])))
        return subprocess.CompletedProcess(command, 0, b"<svg/>", b"")

    monkeypatch.setattr(layout.subprocess, "run", dot)
    monkeypatch.setattr(layout, "dot_program", lambda suffix=".svg": "dot")
    budget = layout.LayoutBudget(30)
    assert layout.run_dot("digraph {}", "svg", budget) == b"<svg/>"
    assert layout.run_dot("digraph {}", "svg", budget) == b"<svg/>"
    assert [c[2:] for c in commands] == [list(x.options) for x in (*layout.LAYOUTS, layout.LAYOUTS[-1])]
    assert len(budget.notes) == 1
    assert "for the full layout (15 s) and the cheaper dot layout (" in budget.notes[0]
    assert "so the diagram has the force-directed layout" in budget.notes[0]


# ---------------------------------------------------------------- export memory

_PEAK = """
import resource, sys
from nnspec.backends.cli import main
sys.argv = ["nnspec", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _export_peak(spec: Path, *extra: str) -> int:
    """Peak resident bytes of ``nnspec export`` of `spec` with external data, in a fresh process."""
    import subprocess
    import sys

    out = spec.with_suffix(".onnx")
    proc = subprocess.run([sys.executable, "-c", _PEAK, "export", str(spec), "-o", str(out), "--external-data", *extra],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


def _linear_chain(path: Path, layers: int, width: int) -> Path:
    """A spec of `layers` bias-free linear layers of `width` features, one after the other."""
    lines = [f"name: {path.stem}", f"inputs: {{x: {{shape: [batch, {width}]}}}}", "nodes:"]
    for i in range(layers):
        lines.append(f"  l{i}: {{op: linear, in: {f'l{i - 1}' if i else 'x'}, out_features: {width}, bias: false}}")
    path.write_text("\n".join([*lines, f"outputs: {{y: l{layers - 1}}}"]) + "\n")
    return path


def _write_weights(path: Path, layers: int, width: int) -> Path:
    """Random float32 weights for `_linear_chain` as a safetensors file, written one tensor at a time
    (so the test process never holds them all either)."""
    import json

    import numpy as np

    nbytes = width * width * 4
    header = {f"l{i}.weight": {"dtype": "F32", "shape": [width, width], "data_offsets": [i * nbytes, (i + 1) * nbytes]}
              for i in range(layers)}
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)  # safetensors pads its header to 8 bytes
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for _ in range(layers):
            f.write(rng.random((width, width), dtype=np.float32).tobytes())
    return path


def test_export_holds_one_weight_at_a_time_not_all(tmp_path: Path) -> None:
    layers, width = 8, 3000  # 8 weights of 36 MB: 288 MB in all
    wide = _linear_chain(tmp_path / "wide.yaml", layers, width)
    small = _linear_chain(tmp_path / "small.yaml", 1, 30)
    largest, total = width * width * 4, layers * width * width * 4
    baseline = _export_peak(small)  # the interpreter, onnx, numpy and the command
    peak = _export_peak(wide)
    assert (tmp_path / "wide.onnx.data").stat().st_size >= total
    # a weight is made, laid out (transposed: a second copy) and written, then dropped
    assert peak - baseline < 3 * largest, f"{(peak - baseline) / 2**20:.0f} MiB over the baseline, total {total / 2**20:.0f}"


def test_export_reads_a_weights_file_one_tensor_at_a_time(tmp_path: Path) -> None:
    layers, width = 8, 3000  # a file of 8 weights of 36 MB: 288 MB in all
    wide = _linear_chain(tmp_path / "wide.yaml", layers, width)
    small = _linear_chain(tmp_path / "small.yaml", 1, 30)
    wide_weights = _write_weights(tmp_path / "wide.safetensors", layers, width)
    small_weights = _write_weights(tmp_path / "small.safetensors", 1, 30)
    largest, total = width * width * 4, layers * width * width * 4
    baseline = _export_peak(small, "--weights", str(small_weights))  # the same command, reading a file too
    peak = _export_peak(wide, "--weights", str(wide_weights))
    assert (tmp_path / "wide.onnx.data").stat().st_size >= total
    # a tensor is read, laid out (transposed: a second copy) and written, then dropped; reading the
    # whole file first, or keeping what was read, holds the total
    assert peak - baseline < 3 * largest, f"{(peak - baseline) / 2**20:.0f} MiB over the baseline, total {total / 2**20:.0f}"


def test_a_weights_file_is_checked_from_its_header_and_each_tensor_read_once_when_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import onnx
    from safetensors.numpy import load_file

    from nnspec.backends.onnx import export_onnx, to_onnx
    from nnspec.backends.onnx.weights import WeightError
    from nnspec.backends.weightfiles import SafetensorsFile

    spec = _linear_chain(tmp_path / "chain.yaml", 3, 16)
    weights = _write_weights(tmp_path / "chain.safetensors", 3, 16)
    reads: list[str] = []
    read = SafetensorsFile.__getitem__

    def counted(self: SafetensorsFile, key: str) -> np.ndarray:
        reads.append(key)
        return read(self, key)

    monkeypatch.setattr(SafetensorsFile, "__getitem__", counted)
    with pytest.raises(WeightError, match=r"weight 'l0.weight' is \[16, 16\], node 'l0' needs \[32, 32\]"):
        export_onnx(_linear_chain(tmp_path / "wider.yaml", 3, 32), tmp_path / "wider.onnx", weights)
    assert reads == []  # the shapes and dtypes come from the header
    export_onnx(spec, tmp_path / "chain.onnx", weights, external_data=True)
    assert sorted(reads) == ["l0.weight", "l1.weight", "l2.weight"]
    streamed = onnx.load(str(tmp_path / "chain.onnx"))
    held = to_onnx(spec, load_file(str(weights)))  # the file's tensors all in memory, as safetensors reads them
    assert [t.name for t in streamed.graph.initializer] == [t.name for t in held.graph.initializer]
    for got, want in zip(streamed.graph.initializer, held.graph.initializer, strict=True):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(got), onnx.numpy_helper.to_array(want))


def test_a_weights_file_reads_as_safetensors_reads_it(tmp_path: Path) -> None:
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from nnspec.backends.weightfiles import SafetensorsFile

    rng = np.random.default_rng(1)
    tensors = {"f32": rng.random((3, 5), dtype=np.float32), "f16": rng.random((7,)).astype(np.float16),
               "bf16": rng.random((2, 3)).astype(ml_dtypes.bfloat16), "f64": rng.random((2, 2, 2)),
               "i64": rng.integers(-9, 9, (4,)), "i8": rng.integers(-9, 9, (3,), dtype=np.int8),
               "bool": rng.random((5,)) > 0.5, "u8": rng.integers(0, 255, (6,), dtype=np.uint8),
               "empty": np.zeros((0, 4), np.float32), "scalar": np.array(2.5, np.float32)}
    path = tmp_path / "all.safetensors"
    save_file(tensors, str(path))
    lazy, whole = SafetensorsFile(path), load_file(str(path))
    assert sorted(lazy) == sorted(whole) and len(lazy) == len(tensors)
    for key, want in whole.items():
        got = lazy[key]
        assert (got.dtype, got.shape, got.tobytes()) == (want.dtype, want.shape, want.tobytes()), key
        assert (lazy.info(key).shape, got.nbytes) == (want.shape, lazy.info(key).nbytes), key


def test_a_weights_file_cut_short_during_an_export_is_one_error_and_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from test_hostile_files import listing

    from nnspec.backends.weightfiles import SafetensorsFile

    spec = _linear_chain(tmp_path / "chain.yaml", 3, 16)
    weights = _write_weights(tmp_path / "chain.safetensors", 3, 16)
    checked = SafetensorsFile.__init__

    def then_cut(self: SafetensorsFile, path: str | Path) -> None:  # another process truncates it after the check
        checked(self, path)
        with open(path, "r+b") as f:
            f.truncate(self.info("l2.weight").offset + 10)

    monkeypatch.setattr(SafetensorsFile, "__init__", then_cut)
    before = listing(tmp_path)
    code, _, err = nnspec(["export", str(spec), "--weights", str(weights), "-o", str(tmp_path / "chain.onnx"),
                           "--external-data"], monkeypatch, capsys)
    assert_user_error(code, err, "chain.safetensors", "ended inside tensor 'l2.weight' (10 of its 1,024 bytes)")
    assert err.count("error") == 1, err
    assert listing(tmp_path) == before


# ---------------------------------------------------------------- the README's limits


def test_readme_states_every_limit_with_its_default_and_ceiling() -> None:
    import dataclasses
    import re

    from nnspec.builder.limits import CEILINGS, DEFAULT_LIMITS, Limits

    def number(text: str) -> int | None:  # "1,048,576", "16 MiB"; None for a share of the memory
        m = re.fullmatch(r"([\d,]+)(?: ([KMG])iB)?", text.strip())
        return None if m is None else int(m[1].replace(",", "")) * 2 ** (10 * " KMG".index(m[2] or " "))

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    rows = {m[1]: (m[2], m[3]) for m in re.finditer(r"^\| `(max_\w+)` [^|]*\| ([^|]+) \| ([^|]+) \|$", readme, re.M)}
    assert set(rows) == {f.name for f in dataclasses.fields(Limits)}
    for name, (default, ceiling) in rows.items():
        for written, value in ((default, getattr(DEFAULT_LIMITS, name)), (ceiling, CEILINGS[name])):
            if number(written) is not None:  # 2 GiB stands for 2**31 - 1
                assert abs(number(written) - value) <= 1, (name, written, value)
            else:
                assert "memory" in written, (name, written)
