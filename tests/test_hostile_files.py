"""Hostile files and values other than specs: ONNX models, ``.npy`` inputs, weights files,
output paths, ``--set``/``--dim``/``--limit`` values.

Every case runs the real command (`nnspec.backends.cli.main`, as the ``nnspec`` script does) and
asserts the exit status (1 or 2, never 3), a message that names the problem, and that nothing
was written outside the target or left behind.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from nnspec.backends.cli import main

SPEC = Path("specs/lenet5.yaml").resolve()
TINY = "name: tiny\ninputs: {x: {shape: [batch, 4]}}\nnodes: {fc: {op: linear, in: x, out_features: 3}}\noutputs: {y: fc}\n"


def nnspec(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command line as the installed script does; (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["nnspec", *args])
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else 0 if code is None else 1), out, err


def assert_user_error(code: int, err: str, *words: str, status: int | tuple[int, ...] = 1) -> None:
    assert code in (status if isinstance(status, tuple) else (status,)), err
    assert "internal error" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- ONNX model files


def _identity_model(outputs: list[str], inputs: list[onnx.ValueInfoProto] | None = None,
                    domain: str = "", op: str = "Identity") -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node(op, ["x"], [name], domain=domain) for name in outputs]
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3]) for name in outputs]
    graph = helper.make_graph(nodes, "g", inputs or [x], outs)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _sequence_input_model() -> onnx.ModelProto:
    seq = helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, [2, 3])
    node = helper.make_node("SequenceAt", ["x", "i"], ["y"])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    return helper.make_model(helper.make_graph([node], "g", [seq, i], [out]),
                             opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _external_model(folder: Path, location: str) -> onnx.ModelProto:
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], np.zeros(6, np.float32).tobytes(), raw=True)
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "24")):
        w.external_data.add(key=key, value=value)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w])
    w.ClearField("raw_data")
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _short_external_data(folder: Path) -> onnx.ModelProto:
    (folder / "short.bin").write_bytes(b"\0" * 8)  # the model reads 24 bytes
    return _external_model(folder, "short.bin")


BAD_MODELS: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "empty": (lambda d: b"", "is empty"),
    "text": (lambda d: b"this is not a model\n", "is not an ONNX model"),
    "truncated": (lambda d: _identity_model(["y"]).SerializeToString()[:40], "is not an ONNX model"),
    "json": (lambda d: json.dumps({"graph": {}}).encode(), "is not an ONNX model"),
    "no graph": (lambda d: onnx.ModelProto(ir_version=8).SerializeToString(), "has no graph"),
    "unknown domain": (lambda d: _identity_model(["y"], domain="com.example.nowhere", op="Frobnicate")
                       .SerializeToString(), "onnxruntime cannot load"),
    "unknown op": (lambda d: _identity_model(["y"], op="NoSuchOp").SerializeToString(), "onnxruntime cannot load"),
    "sequence input": (lambda d: _sequence_input_model().SerializeToString(), "is a sequence"),
    "missing external data": (lambda d: _external_model(d, "absent.bin").SerializeToString(), "onnxruntime cannot"),
    "external data outside": (lambda d: _external_model(d, "../../../etc/passwd").SerializeToString(),
                              "onnxruntime cannot"),
    "external data too short": (lambda d: _short_external_data(d).SerializeToString(), "onnxruntime cannot"),
}


@pytest.mark.parametrize("case", BAD_MODELS)
def test_bad_onnx_file_is_a_clear_error(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    make, words = BAD_MODELS[case]
    model = tmp_path / "m.onnx"
    model.write_bytes(make(tmp_path))
    before = listing(tmp_path)
    code, _, err = nnspec(["run", str(model), "--random", "-d", str(tmp_path / "out")], monkeypatch, capsys)
    assert_user_error(code, err, words)
    assert listing(tmp_path) == before


def test_a_device_or_folder_as_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "dir.onnx"
    folder.mkdir()
    for path in (str(folder), "/dev/zero.onnx" if Path("/dev/zero.onnx").exists() else str(tmp_path / "no.onnx")):
        code, _, err = nnspec(["run", path, "--random"], monkeypatch, capsys)
        assert code in (1, 2) and "internal error" not in err, err


# ---------------------------------------------------------------- run --output-dir


def test_output_names_never_leave_the_output_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.npy").write_bytes(b"keep")
    names = ["../escaped", str(outside / "victim"), "a/b", "..", ".hidden", "logits:0", "y\x1b[2J", "Y"]
    model = tmp_path / "m.onnx"
    onnx.save(_identity_model(names), model)
    out = tmp_path / "out"
    code, stdout, err = nnspec(["run", str(model), "--random", "-d", str(out)], monkeypatch, capsys)
    assert code == 0, err
    assert (outside / "victim.npy").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out", "outside"]
    saved = sorted(p.name for p in out.iterdir())
    assert len(saved) == len(names) and all(p.parent == out and p.is_file() for p in out.iterdir()), saved
    assert not any(n.startswith(".") for n in saved)
    assert "\x1b" not in stdout + err


def test_output_dir_link_is_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "y.npy").symlink_to(victim)
    model = tmp_path / "m.onnx"
    onnx.save(_identity_model(["y"]), model)
    code, _, err = nnspec(["run", str(model), "--random", "-d", str(out)], monkeypatch, capsys)
    assert_user_error(code, err, "symbolic link")
    assert victim.read_bytes() == b"keep"


def test_impossible_output_dir_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(_identity_model(["y"]), model)
    (tmp_path / "file").write_text("x")
    for folder in (tmp_path / "file", tmp_path / "file" / "sub", Path("/proc/nnspec-out")):
        code, _, err = nnspec(["run", str(model), "--random", "-d", str(folder)], monkeypatch, capsys)
        assert_user_error(code, err, "rror", status=(1, 2))
    assert listing(tmp_path) == ["file", "m.onnx"]


def test_output_over_an_input_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(_identity_model(["y"]), model)
    x = tmp_path / "y.npy"
    np.save(x, np.ones((2, 3), np.float32))
    code, _, err = nnspec(["run", str(model), "-i", f"x={x}", "-d", str(tmp_path)], monkeypatch, capsys)
    assert_user_error(code, err, "is also an input", status=2)
    assert np.load(x).sum() == 6


# ---------------------------------------------------------------- .npy inputs


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    head = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    head += b" " * (64 - (10 + len(head)) % 64 - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head


BAD_NPY: dict[str, tuple[bytes, str]] = {
    "five bytes of text": (b"1 2 3", "is not a .npy file"),
    "empty": (b"", "is not a .npy file"),
    "claims 10**15 values": (_npy_header((10**15,)) + b"\0" * 16, "the limit is"),
    "truncated": (_npy_header((2, 3)) + b"\0" * 8, "is truncated"),
    "object dtype": (_npy_header((2,), "|O") + b"\0" * 16, "Python objects"),
    "npz archive": (b"PK\x03\x04" + b"\0" * 30, "is not a .npy file"),
    "bad header": (b"\x93NUMPY\x01\x00" + struct.pack("<H", 10) + b"{'a': ]}  \n", "cannot read"),
}


@pytest.mark.parametrize("case", BAD_NPY)
def test_bad_npy_input_is_a_clear_error(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data, words = BAD_NPY[case]
    model = tmp_path / "m.onnx"
    onnx.save(_identity_model(["y"]), model)
    (tmp_path / "x.npy").write_bytes(data)
    code, _, err = nnspec(["run", str(model), "-i", f"x={tmp_path / 'x.npy'}"], monkeypatch, capsys)
    assert_user_error(code, err, "input 'x'", words)


def test_npy_that_is_a_device_is_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(_identity_model(["y"]), model)
    code, _, err = nnspec(["run", str(model), "-i", "x=/dev/zero"], monkeypatch, capsys)
    assert_user_error(code, err, "not a regular file")


# ---------------------------------------------------------------- --dim, --set, --limit


@pytest.mark.parametrize(("value", "status", "words"), [
    ("batch=10**12", 2, "--dim expects"),
    ("batch=1000000000000", 1, "--limit max_tensor_bytes"),
    ("batch=" + "9" * 5000, 2, "--dim expects"),
])
def test_dim_values(value: str, status: int, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = nnspec(["run", str(SPEC), "--random", "--dim", value], monkeypatch, capsys)
    assert_user_error(code, err, words, status=status)


@pytest.mark.parametrize(("value", "status", "words"), [
    ("max_int_bits=1e12", 2, "ceiling"),
    ("max_depth=100000", 2, "ceiling"),
    ("max_nodes=1e400", 2, "whole number"),
    ("max_nodes=" + "9" * 100_000, 2, "whole number"),
    ("max_weight_bytes=-1", 2, "whole number"),
])
def test_limit_values_have_a_ceiling(value: str, status: int, words: str, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = nnspec(["validate", str(SPEC), "--limit", value], monkeypatch, capsys)
    assert_user_error(code, err, words, status=status)


def test_limit_at_its_ceiling_still_works(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    from nnspec.builder.limits import CEILINGS

    deep = tmp_path / "deep.yaml"
    deep.write_text(TINY.replace("outputs: {y: fc}", "outputs: {y: fc}\ndoc: x\nparams: {p: " + "[" * 400 + "]" * 400
                                 + "}"))
    code, _, err = nnspec(["validate", str(deep), "--limit", f"max_depth={CEILINGS['max_depth']}"], monkeypatch, capsys)
    assert code in (0, 1) and "internal error" not in err, err


@pytest.mark.parametrize(("value", "status", "words"), [
    ("p=" + "[" * 100_000, 1, ""),
    ("p=" + "9" * 100_000, 2, "100,000 digits"),
    ("p=\x1b]0;title\x07", 1, "\\x1b"),
])
def test_set_values(value: str, status: int, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY.replace("out_features: 3", "out_features: '${p}'") + "params: {p: 3}\n")
    code, _, err = nnspec(["validate", str(spec), "--set", value], monkeypatch, capsys)
    assert_user_error(code, err, words, status=status)
    assert "\x1b" not in err and "sys.set_int_max_str_digits" not in err


def test_set_value_is_typed_as_in_the_file() -> None:
    from nnspec.builder.params import parse_override

    assert parse_override("w=1e1") == ("w", 10.0)
    assert parse_override("w=0x10") == ("w", 16)
    assert parse_override("w='1e1'") == ("w", "1e1")
    assert parse_override("w=true") == ("w", True)


# ---------------------------------------------------------------- weights files


def _safetensors(header: dict[str, object], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _tiny_weights(dtype: str = "F32", shape: tuple[int, ...] = (3, 4), size: int = 4) -> bytes:
    n = int(np.prod(shape)) * size
    bias = 3 * 4
    return _safetensors({"fc.weight": {"dtype": dtype, "shape": list(shape), "data_offsets": [0, n]},
                         "fc.bias": {"dtype": "F32", "shape": [3], "data_offsets": [n, n + bias]}}, b"\0" * (n + bias))


BAD_WEIGHTS: dict[str, tuple[bytes | None, str]] = {
    "device": (None, "not a regular file"),
    "empty": (b"", "not a readable safetensors file"),
    "text": (b"hello", "not a readable safetensors file"),
    "huge header": (struct.pack("<Q", 10**15) + b"{}", "not a readable safetensors file"),
    "header not json": (struct.pack("<Q", 4) + b"nope", "not a readable safetensors file"),
    "truncated data": (_tiny_weights()[:-20], "lies outside the file"),
    "F8": (_tiny_weights("F8_E4M3", size=1), "dtype F8_E4M3"),
    "bool weight": (_tiny_weights("BOOL", size=1), "is bool in the file"),
    "int64 weight": (_tiny_weights("I64", size=8), "is int64 in the file"),
    "wrong byte count": (_safetensors({"fc.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 8]}},
                                      b"\0" * 8), "needs 48 bytes"),
}


@pytest.mark.parametrize("case", BAD_WEIGHTS)
@pytest.mark.parametrize("command", ["run", "export"])
def test_bad_weights_file_is_a_clear_error(case: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data, words = BAD_WEIGHTS[case]
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    weights = Path("/dev/zero") if data is None else tmp_path / "w.safetensors"
    if data is not None:
        weights.write_bytes(data)
    args = ["run", str(spec), "--random"] if command == "run" else ["export", str(spec), "-o", str(tmp_path / "m.onnx")]
    before = listing(tmp_path)
    code, _, err = nnspec([*args, "--weights", str(weights)], monkeypatch, capsys)
    assert_user_error(code, err, words)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("case", BAD_WEIGHTS)
def test_bad_weights_file_in_pytorch(case: str, tmp_path: Path) -> None:
    from nnspec.backends.pytorch import WeightsError, load_weights, to_torch
    from nnspec.builder import load_spec

    data, words = BAD_WEIGHTS[case]
    weights = Path("/dev/zero") if data is None else tmp_path / "w.safetensors"
    if data is not None:
        weights.write_bytes(data)
    with pytest.raises(WeightsError, match=words.replace("(", r"\(")):
        load_weights(to_torch(load_spec(TINY)), weights)


# ---------------------------------------------------------------- output paths of the writing commands


WRITING = {
    "export": (["export", "{spec}", "-o", "{out}"], ".onnx"),
    "schema": (["schema", "-o", "{out}"], ".json"),
    "emit-python": (["build", "{spec}", "--emit-python", "{out}"], ".py"),
    "weights": (["build", "{spec}", "--weights", "{out}"], ".safetensors"),
}


def _args(name: str, spec: Path, out: str) -> list[str]:
    return [a.format(spec=spec, out=out) for a in WRITING[name][0]]


@pytest.mark.parametrize("name", [n for n in WRITING if n != "schema"])
def test_output_over_the_input_spec_is_refused(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / f"s{WRITING[name][1]}"  # even with the right suffix
    spec.write_text(TINY)
    link = tmp_path / f"link{WRITING[name][1]}"
    link.symlink_to(spec)
    for out in (spec, link):
        code, _, err = nnspec(_args(name, spec, str(out)), monkeypatch, capsys)
        assert_user_error(code, err, "is also an input", status=2)
        assert spec.read_text() == TINY
    assert listing(tmp_path) == sorted([spec.name, link.name])


@pytest.mark.parametrize("name", WRITING)
def test_output_suffix_is_checked(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY)
    code, _, err = nnspec(_args(name, spec, str(tmp_path / "model.yaml")), monkeypatch, capsys)
    assert_user_error(code, err, f"must end in {WRITING[name][1]}", status=2)
    assert listing(tmp_path) == ["s.yaml"]


@pytest.mark.parametrize("name", WRITING)
def test_pipe_and_device_are_written_through(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    spec = tmp_path / "s.yaml"
    spec.write_text(TINY)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    code, _, err = nnspec(_args(name, spec, str(fifo)), monkeypatch, capsys)
    reader.join(timeout=60)
    assert code == 0, err
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and len(got) == 1 and len(got[0]) > 100
    assert listing(tmp_path) == ["pipe", "s.yaml"]
    code, _, err = nnspec(_args(name, spec, os.devnull), monkeypatch, capsys)
    assert code == 0, err
    assert stat.S_ISCHR(Path(os.devnull).stat().st_mode)


def test_dash_is_standard_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = nnspec(["schema", "-o", "-"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["title"] and list(tmp_path.iterdir()) == []


def test_link_to_a_file_is_kept_and_its_file_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    code, _, err = nnspec(["schema", "-o", str(link)], monkeypatch, capsys)
    assert code == 0, err
    assert link.is_symlink() and json.loads(real.read_text())
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere" / "x.json")
    code, _, err = nnspec(["schema", "-o", str(tmp_path / "dangling.json")], monkeypatch, capsys)
    assert_user_error(code, err, "link to nothing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.json", "link.json", "real.json"]


# ---------------------------------------------------------------- text quoted from a spec


def test_escape_sequences_in_a_spec_are_shown_not_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text('name: t\ninputs: {x: {shape: [batch, 4]}}\n'
                    'nodes: {a: {op: "rel\\e]0;pwned\\x07u\\e[2J\\u202e\\x9b", in: x}}\noutputs: {y: a}\n')
    for args in (["validate", str(spec)], ["summary", str(spec)], ["render", str(spec), "-o", str(tmp_path / "d.dot")]):
        code, out, err = nnspec(args, monkeypatch, capsys)
        assert code == 1 and "unknown op 'rel\\x1b]0;pwned\\x07u\\x1b[2J\\u202e\\x9b'" in err, err
        assert not any(ch in out + err for ch in "\x1b\x07\u202e\x9b")


def test_printable_keeps_text_and_escapes_controls() -> None:
    from nnspec.builder.text import printable

    assert printable("conv2d é 中 ✓") == "conv2d é 中 ✓"
    assert printable("a\x1b[31mb\x00\x7f\u200f") == "a\\x1b[31mb\\x00\\x7f\\u200f"
    assert printable("two\nlines") == "two\nlines" and printable("two\nlines", keep_newlines=False) == "two\\nlines"


# ---------------------------------------------------------------- limits on what checking costs

BOMB = """name: bomb
params: {n: 1000}
inputs: {x: {shape: [batch, 4]}}
blocks:
  leaf:
    inputs: [h]
    nodes: {unused: {op: relu, in: h}}
    outputs: {y: h}
  mid:
    inputs: [h]
    nodes: {l: {op: leaf, in: h, repeat: '${n}'}}
    outputs: {y: l}
  top:
    inputs: [h]
    nodes: {m: {op: mid, in: h, repeat: '${n}'}}
    outputs: {y: m}
nodes:
  t: {op: top, in: x, repeat: '${n}'}
outputs: {y: t}
"""
"""10^9 copies of a block whose only node is unused: no node is ever kept, the work is not bounded by the nodes."""


def test_unused_nodes_in_repeated_blocks_reach_a_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import time

    spec = tmp_path / "bomb.yaml"
    spec.write_text(BOMB)
    start = time.process_time()
    code, _, err = nnspec(["validate", str(spec), "--limit", "max_nodes=20000"], monkeypatch, capsys)
    assert_user_error(code, err, "error[limit]", "copies")
    assert time.process_time() - start < 10


@pytest.mark.parametrize("shape", ["[batch, true]", "[false, 4]"])
def test_true_is_not_a_size(shape: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY.replace("[batch, 4]", shape))
    code, _, err = nnspec(["validate", str(spec)], monkeypatch, capsys)
    assert_user_error(code, err, "is not a number")


def test_graphviz_timeout_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import importlib
    import subprocess

    layout = importlib.import_module("nnspec.backends.graphviz.layout")

    def slow_dot(*args: object, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        raise subprocess.TimeoutExpired("dot", 1)

    monkeypatch.setattr(layout.subprocess, "run", slow_dot)  # the full layout and the cheaper one
    code, _, err = nnspec(["render", str(SPEC), "-o", str(tmp_path / "d.svg")], monkeypatch, capsys)
    assert_user_error(code, err, "took more than", "--depth")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("shape", "words"), [
    ("[batch, 100000000000000000000000000]", "less than or equal to 9223372036854775807"),
    ("[" + ", ".join(["2"] * 2000) + "]", "at most 64 items"),
])
def test_sizes_the_backends_cannot_hold_are_refused(shape: str, words: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY.replace("[batch, 4]", shape))
    for command in (["validate", str(spec)], ["run", str(spec), "--random"]):
        code, _, err = nnspec(command, monkeypatch, capsys)
        assert_user_error(code, err, "error[bad-value]", words)


def test_valid_json_with_a_very_long_id_is_not_called_invalid_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    long = "a" * 1101
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"name": "t", "inputs": {"x": {"shape": ["batch", 4]}},
                                "nodes": {long: {"op": "relu", "in": "x"}}, "outputs": {"y": long}}))
    code, _, err = nnspec(["validate", str(spec)], monkeypatch, capsys)
    assert_user_error(code, err, "error[limit]", "1,101 characters")
    assert "invalid YAML" not in err


def test_model_and_data_of_two_exports_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for name, seed in (("a", "0"), ("b", "3")):
        code, _, err = nnspec(["export", str(SPEC), "-o", str(tmp_path / f"{name}.onnx"), "--external-data",
                               "--seed", seed], monkeypatch, capsys)
        assert code == 0, err
    code, _, err = nnspec(["run", str(tmp_path / "a.onnx"), "--random"], monkeypatch, capsys)
    assert code == 0, err
    (tmp_path / "a.onnx.data").write_bytes((tmp_path / "b.onnx.data").read_bytes())  # as a lost race leaves them
    code, _, err = nnspec(["run", str(tmp_path / "a.onnx"), "--random"], monkeypatch, capsys)
    assert_user_error(code, err, "does not belong to", "another export")


def test_compounding_symbolic_sizes_reach_a_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import time

    lines = ["name: ceil", "inputs: {x: {shape: [batch, 2, h]}}", "nodes:"]
    prev = "x"
    for i in range(40):  # each level's size holds the last one twice: 2^40 terms unchecked
        lines.append(f"  p{i}: {{op: max_pool1d, in: {prev}, kernel_size: 3, stride: 2, ceil_mode: true, padding: 1}}")
        lines.append(f"  c{i}: {{op: concat, in: [p{i}, {prev}], dim: 2}}")
        prev = f"c{i}"
    spec = tmp_path / "ceil.yaml"
    spec.write_text("\n".join([*lines, f"outputs: {{y: {prev}}}"]) + "\n")
    start = time.process_time()
    code, _, err = nnspec(["validate", str(spec)], monkeypatch, capsys)
    assert_user_error(code, err, "error[limit]", "size expression")
    assert time.process_time() - start < 10
    fixed = spec.read_text().replace("[batch, 2, h]", "[batch, 2, 1000]")
    spec.write_text(fixed)  # with a fixed size the same spec is fine
    code, _, err = nnspec(["validate", str(spec)], monkeypatch, capsys)
    assert code == 0, err
