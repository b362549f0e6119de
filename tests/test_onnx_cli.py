"""``nnspec export``, ``nnspec run`` and ``nnspec check``: results, error messages, exit status,
and no file left behind by a failed command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from nnspec.backends.cli import cli
from nnspec.backends.onnx import to_onnx

LENET = "specs/lenet5.yaml"
SMALL_GPT = ["specs/gpt.yaml", "--set", "vocab=40", "--set", "d_model=16", "--set", "heads=2", "--set", "layers=1",
             "--set", "n_ctx=16"]
SMALL_SEQ2SEQ = ["specs/lstm_seq2seq.yaml", "--set", "src_vocab=20", "--set", "tgt_vocab=20", "--set", "embed_dim=8",
                 "--set", "hidden=8", "--set", "layers=2"]


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_export_writes_the_model(tmp_path: Path) -> None:
    out = tmp_path / "lenet.onnx"
    result = invoke("export", LENET, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr and "12 nodes" in result.stderr
    assert out.read_bytes() == to_onnx(LENET).SerializeToString()
    assert [p.name for p in tmp_path.iterdir()] == ["lenet.onnx"]  # no temporary left


def test_export_signature_set_and_opset(tmp_path: Path) -> None:
    out = tmp_path / "step.onnx"
    result = invoke("export", *SMALL_SEQ2SEQ, "--signature", "decode_step", "--opset", "18", "-o", str(out))
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18
    assert [i.name for i in model.graph.input] == ["token", "h", "c"]
    assert [o.name for o in model.graph.output] == ["logits", "h_out", "c_out"]


def test_export_with_weights_file(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from nnspec.backends.pytorch import save_weights, to_torch

    torch.manual_seed(3)
    module = to_torch(LENET)
    save_weights(module, tmp_path / "w.safetensors")
    result = invoke("export", LENET, "--weights", str(tmp_path / "w.safetensors"), "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 0, result.output
    model = onnx.load(str(tmp_path / "m.onnx"))
    got = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    transposed = json.loads({p.key: p.value for p in model.metadata_props}.get("nnspec.transposed_weights", "[]"))
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(got[key], value.numpy().T if key in transposed else value.numpy())


def test_export_external_data(tmp_path: Path) -> None:
    result = invoke("export", LENET, "--external-data", "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)


@pytest.mark.parametrize(("args", "message"), [
    (["--opset", "10"], "opset 10 is not supported"),
    (["--weights", "nope.safetensors"], "weights file 'nope.safetensors' does not exist"),
    (["--signature", "decode"], "has no signature 'decode'"),
])
def test_export_errors_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("export", LENET, *args, "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 1
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_export_bad_weights_names_the_key(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"c1.weight": np.zeros((6, 1, 5, 4), np.float32)}, str(tmp_path / "w.safetensors"))
    result = invoke("export", LENET, "--weights", str(tmp_path / "w.safetensors"), "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 1
    assert "weight 'c1.weight' is [6, 1, 5, 4], node 'c1' needs [6, 1, 5, 5]" in result.stderr
    assert "missing weight 'c1.bias'" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_run_model_with_inputs_and_output_dir(tmp_path: Path) -> None:
    model_path = tmp_path / "m.onnx"
    model_path.write_bytes(to_onnx(LENET).SerializeToString())
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", str(model_path), "--input", f"image={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("logits: float32 [3, 10] [")
    from nnspec.backends.onnx import run_onnx

    np.testing.assert_array_equal(np.load(tmp_path / "o" / "logits.npy"), run_onnx(model_path, {"image": x})["logits"])


def test_run_spec_with_random_inputs_and_dims() -> None:
    result = invoke("run", *SMALL_GPT, "--random", "--dim", "batch=3", "--dim", "seq=5")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("logits: float32 [3, 5, 40]")


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((2, 1, 32, 31), np.float32), "input 'image': dim 3 must be 32 float32 [batch, 1, 32, 32], got [2, 1, 32, 31]"),
    (np.zeros((2, 1, 32, 32), np.int64), "input 'image': expected float32 [batch, 1, 32, 32], got int64 [2, 1, 32, 32]"),
])
def test_run_bad_input_names_it(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "x.npy", array)
    result = invoke("run", LENET, "-i", f"image={tmp_path / 'x.npy'}")
    assert result.exit_code == 1
    assert message in result.stderr


def test_run_usage_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros(3, np.float32))
    assert "no value for input(s) image" in invoke("run", LENET).stderr
    result = invoke("run", LENET, "-i", f"imag={tmp_path / 'x.npy'}")
    assert result.exit_code == 1 and "no input 'imag' (did you mean 'image'?)" in result.stderr
    result = invoke("run", LENET, "--random", "--dim", "batch=0")
    assert result.exit_code == 2 and "--dim expects NAME=SIZE" in result.output
    assert "does not exist" in invoke("run", str(tmp_path / "none.onnx"), "--random").stderr


def test_check_passes_and_reports_each_output() -> None:
    result = invoke("check", *SMALL_SEQ2SEQ, "--signature", "decode_step", "--dim", "batch=3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["logits:", "h:", "c:"]
    assert all(line.startswith("ok") for line in lines)


def test_check_fails_above_the_tolerance() -> None:
    result = invoke("check", *SMALL_GPT, "--tolerance", "1e-12")
    assert result.exit_code == 1
    assert result.stdout.startswith("FAIL  logits: max |onnx - torch| =")
    assert "onnxruntime and PyTorch differ on logits" in result.stderr


@pytest.mark.parametrize("command", ["export", "check", "run"])
def test_a_spec_onnx_cannot_express_is_a_located_error_not_a_bug(tmp_path: Path, command: str) -> None:
    """Adaptive pooling to 7x7 over a symbolic size has no fixed ONNX window: exit 1, the node named,
    nothing written."""
    import subprocess
    import sys

    spec = tmp_path / "adapt.yaml"
    spec.write_text("name: adapt\ninputs: {x: {shape: [batch, 3, h, w]}}\n"
                    "nodes:\n  p: {op: adaptive_avg_pool2d, in: x, output_size: 7}\noutputs: {y: p}\n")
    extra = {"export": ["-o", str(tmp_path / "m.onnx")], "check": [], "run": ["--random"]}[command]
    run = subprocess.run([sys.executable, "-m", "nnspec", command, str(spec), *extra],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 1, run.stderr
    assert "node 'p'" in run.stderr and "internal error" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapt.yaml"]
