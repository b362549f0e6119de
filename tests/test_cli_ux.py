"""What a new user meets: `ops` lists required arguments first and shows one op in full, an
`in_channels` is answered with "inferred", a model file given for a spec is named as such, and
`render --unroll` draws every copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnspec.backends.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


# --- nnspec ops ----------------------------------------------------------------------------

def test_ops_lists_required_arguments_first() -> None:
    code, out, _ = _run("ops")
    assert code == 0
    assert "  conv2d(out_channels, kernel_size, stride=1," in out
    for entry in json.loads(_run("ops", "--json")[1])["ops"]:
        required = [a["required"] for a in entry["args"]]
        assert required == sorted(required, reverse=True), entry["op"]


def test_ops_shows_one_op_in_full() -> None:
    code, out, _ = _run("ops", "conv2d")
    assert code == 0
    assert out.startswith("conv2d(out_channels, kernel_size, stride=1, padding=0")
    assert "kernel_size: int | tuple[int, int] (required)" in out
    assert "padding: int | tuple[int, int] | 'same' | 'valid' (default 0)" in out
    assert "linear" not in out
    code, out, _ = _run("ops", "multi_head_attention", "--json")
    (entry,) = json.loads(out)["ops"]
    num_kv = next(a for a in entry["args"] if a["name"] == "num_kv_heads")
    assert num_kv["type"] == "int | None" and "grouped-query" in num_kv["description"]


def test_ops_with_an_unknown_name_is_a_usage_error_with_a_did_you_mean() -> None:
    code, _, err = _run("ops", "conv2")
    assert code == 2 and "no op named 'conv2'; did you mean 'conv2d'?" in err


# --- messages ------------------------------------------------------------------------------

def test_an_input_size_key_is_answered_with_inferred(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ninputs:\n  x: {shape: [batch, 3, 8, 8]}\nnodes:\n"
                    "  c: {op: conv2d, in: x, in_channels: 3, out_channels: 4, kernel_size: 3}\n"
                    "  f: {op: flatten, in: c}\n"
                    "  l: {op: linear, in: f, in_features: 144, out_features: 2}\noutputs: {y: l}\n")
    code, _, err = _run("validate", str(spec))
    assert code == 1
    assert "s.yaml:5:26: error[unknown-key]: node 'c': unknown key 'in_channels': input sizes are inferred" in err
    assert "s.yaml:7:26: error[unknown-key]: node 'l': unknown key 'in_features': input sizes are inferred" in err
    assert "remove 'in_channels'" in err and "did you mean" not in err


@pytest.mark.parametrize("command", ["summary", "render", "validate"])
def test_a_model_file_given_for_a_spec_is_named(command: str, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(range(256)))
    args = [command, str(model), *(["-o", str(tmp_path / "m.dot")] if command == "render" else [])]
    code, _, err = _run(*args)
    assert code == 1
    assert "error[not-a-spec]: this is an ONNX model, not a spec" in err and "nnspec run MODEL.onnx" in err
    assert "UTF-16" not in err and not (tmp_path / "m.dot").exists()


# --- render --unroll -----------------------------------------------------------------------

def test_unroll_alone_draws_every_copy(tmp_path: Path) -> None:
    spec = str(ROOT / "specs" / "gpt.yaml")
    texts = {}
    for name, flags in {"unroll": ["--unroll"], "depth0": ["--depth", "0"], "auto": []}.items():
        out = tmp_path / f"{name}.dot"
        assert _run("render", spec, "-o", str(out), *flags)[0] == 0
        texts[name] = out.read_text()
    assert texts["unroll"] != texts["depth0"]
    for i in range(12):
        assert f'"h.{i}' in texts["unroll"], i
    assert '"h.11' not in texts["auto"]  # folded: one copy drawn, marked 12x


# --- folded repeats whose copies differ (the CIFAR example) -------------------------

CIFAR = """name: cnn
inputs:
  image: {shape: [batch, 3, 32, 32]}
blocks:
  conv_block:
    params: {ch: null}
    inputs: [x]
    nodes:
      conv: {op: conv2d, in: x, out_channels: '${ch}', kernel_size: 3, padding: 1}
      bn: {op: batch_norm, in: conv}
      act: {op: relu, in: bn}
      pool: {op: max_pool2d, in: act, kernel_size: 2}
    outputs: {y: pool}
nodes:
  b1: {op: conv_block, in: image, ch: 32}
  b2: {op: conv_block, in: b1, ch: 64, repeat: 2}
  flat: {op: flatten, in: b2}
  fc: {op: linear, in: flat, out_features: 10}
outputs: {logits: fc}
"""


@pytest.mark.parametrize("suffix", [".dot", ".mmd"])
def test_a_repeat_whose_copies_differ_is_drawn_true_of_each_copy(suffix: str, tmp_path: Path) -> None:
    spec = tmp_path / "cnn.yaml"
    spec.write_text(CIFAR)
    out = tmp_path / f"cnn{suffix}"
    assert _run("render", str(spec), "-o", str(out))[0] == 0
    text = out.read_text()
    # copy 0 takes 32 channels at 16x16 (18.5k conv params), copy 1 64 channels at 8x8 (36.9k): both drawn
    assert "18.5k params" in text and "36.9k params" in text
    edges = [line for line in text.splitlines() if "->" in line]
    conv0 = next(e for e in edges if ("b2.0.conv" in e or "b2_0_conv" in e) and ("b1" in e))
    conv1 = next(e for e in edges if ("b2.1.conv" in e or "b2_1_conv" in e) and ("b2.0" in e or "b2_0" in e))
    assert "batch×32×16×16" in conv0 and "batch×64×8×8" in conv1
    assert "55.7k params" in text  # the folded cluster's count is the total over both copies


# --- inputs: float64 .npy files and a spec on stdin ----------------------------------------

def test_a_float64_input_is_cast_with_a_note(tmp_path: Path) -> None:
    import numpy as np

    image = tmp_path / "image.npy"
    np.save(image, np.random.default_rng(0).standard_normal((2, 1, 32, 32)))  # NumPy's default: float64
    code, out, err = _run("run", str(ROOT / "specs" / "lenet5.yaml"), "--input", f"image={image}")
    assert code == 0, err
    assert "note: input 'image': float64 cast to float32 as the model declares" in err
    assert out.startswith("logits: float32 [2, 10]")
    np.save(image, np.zeros((2, 1, 32, 32), dtype=np.complex64))  # no cast keeps the meaning of this one
    code, _, err = _run("run", str(ROOT / "specs" / "lenet5.yaml"), "--input", f"image={image}")
    assert code == 1 and "image" in err and "note:" not in err


@pytest.mark.parametrize("command", ["validate", "summary"])
def test_a_spec_can_come_on_stdin(command: str) -> None:
    text = (ROOT / "specs" / "lenet5.yaml").read_text()
    result = CliRunner().invoke(cli, [command, "-"], input=text)
    assert result.exit_code == 0, result.stderr
    assert "61,706" in result.stdout
    bad = "name: b\ninputs: {x: {shape: [4]}}\nnodes: {a: {op: nope, in: x}}\noutputs: {y: a}\n"
    result = CliRunner().invoke(cli, [command, "-"], input=bad)
    assert result.exit_code == 1 and ":3:13: error[unknown-op]: node 'a'" in result.stderr
    result = CliRunner().invoke(cli, [command, "-"], input="")
    assert result.exit_code == 1 and "no spec on stdin" in result.stderr
