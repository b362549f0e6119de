"""Every command's --json output, on success and on failure, is one JSON document that the
documented schema (docs/cli-json.schema.json) accepts; errors are in it, not only on stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from nnspec.backends.cli import cli
from nnspec.backends.jsonout import SCHEMA_PATH

ROOT = Path(__file__).resolve().parents[1]
LENET = str(ROOT / "specs" / "lenet5.yaml")
SEQ2SEQ = str(ROOT / "specs" / "lstm_seq2seq.yaml")
SMALL = ["--set", "src_vocab=50", "--set", "tgt_vocab=40", "--set", "embed_dim=8", "--set", "hidden=6", "--set", "layers=1"]
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def _json(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(cli, [*args, "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    doc = json.loads(result.stdout)  # exactly one document: anything else on stdout fails here
    VALIDATOR.validate(doc)
    assert doc["exit_code"] == result.exit_code and doc["ok"] == (result.exit_code == 0)
    return result.exit_code, doc, result.stderr


@pytest.fixture
def bad_spec(tmp_path: Path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ninputs:\n  x: {shape: [batch, 4]}\nnodes:\n  a: {op: linar, in: x, out_features: 2}\n"
                    "  b: {op: relu, in: nope}\noutputs: {y: b}\n")
    return str(path)


def _success_args(tmp: Path) -> dict[str, list[str]]:
    return {
        "validate": ["validate", LENET, SEQ2SEQ],
        "summary": ["summary", LENET],
        "ops": ["ops", "conv2d"],
        "build": ["build", SEQ2SEQ, *SMALL, "--emit-python", str(tmp / "m.py")],
        "export": ["export", SEQ2SEQ, *SMALL, "-o", str(tmp / "m.onnx")],
        "run": ["run", SEQ2SEQ, *SMALL, "--random"],
        "check": ["check", SEQ2SEQ, *SMALL],
        "render": ["render", LENET, "-o", str(tmp / "m.dot")],
    }


@pytest.mark.parametrize("command", sorted(_success_args(Path())))
def test_every_command_has_json_results(command: str, tmp_path: Path) -> None:
    code, doc, _ = _json(*_success_args(tmp_path)[command])
    assert code == 0 and doc["command"] == command and doc["ok"]
    if command in ("build", "export", "render"):
        assert doc["wrote"] and all(Path(p).is_file() for p in doc["wrote"])
    if command == "run":
        assert doc["outputs"]["logits"]["shape"] == [2, 2, 40] and doc["outputs"]["logits"]["dtype"] == "float32"
    if command == "validate":
        assert [f["name"] for f in doc["files"]] == ["lenet5", "lstm_seq2seq"]


@pytest.mark.parametrize("command", ["validate", "summary", "build", "export", "run", "check", "render"])
def test_a_bad_spec_gives_its_errors_as_json(command: str, bad_spec: str, tmp_path: Path) -> None:
    extra = {"export": ["-o", str(tmp_path / "m.onnx")], "render": ["-o", str(tmp_path / "m.dot")],
             "run": ["--random"]}.get(command, [])
    code, doc, err = _json(command, bad_spec, *extra)
    assert code == 1 and not doc["ok"]
    diags = doc["files"][0]["diagnostics"] if command == "validate" else doc["diagnostics"]
    assert {(d["line"], d["node"]) for d in diags} >= {(5, "a"), (6, "b")}  # every error, located
    if command != "validate":
        assert f"error[{diags[0]['code']}]" in err  # and as text on stderr, for people
    assert not list(tmp_path.glob("m.*"))


def test_a_bad_input_gives_its_error_as_json(tmp_path: Path) -> None:
    code, doc, _ = _json("run", LENET, "--input", f"image={tmp_path / 'missing.npy'}")
    assert code == 1 and doc["diagnostics"][0]["code"] == "error" and "missing.npy" in doc["diagnostics"][0]["message"]
    code, doc, _ = _json("run", LENET, "--random", "--dim", "bach=3")
    assert code == 2 and doc["diagnostics"][0]["code"] == "usage" and "did you mean 'batch'?" in doc["diagnostics"][0]["message"]


def test_an_unknown_op_name_gives_a_usage_error_as_json() -> None:
    code, doc, _ = _json("ops", "conv2")
    assert code == 2 and doc["command"] == "ops" and "did you mean 'conv2d'?" in doc["diagnostics"][0]["message"]


def test_summary_json_is_data_not_text() -> None:
    _, doc, _ = _json("summary", str(ROOT / "specs" / "bert.yaml"), "--depth", "0")
    encoder = next(r for r in doc["nodes"] if r["id"] == "encoder")
    assert (encoder["op"], encoder["repeat"], encoder["shape"], encoder["dtype"]) == (
        "layer", 12, ["batch", "seq", 768], "float32")
    assert "batch" in doc["macs"] and "seq" in doc["macs"]


@pytest.mark.parametrize("args", [["check", "--bogus"], ["check"], ["summary", LENET, "--depth", "x"],
                                  ["run", LENET, "--random", "--dim", "bach=3"]],
                         ids=["unknown-option", "missing-argument", "bad-value", "usage-in-command"])
def test_a_usage_error_from_parsing_is_one_json_document_too(args: list[str]) -> None:
    """Errors click raises while parsing, before the command runs, through the real entry point:
    exactly one schema-valid document on stdout (none twice), exit 2, the message on stderr as well."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "nnspec", *args, "--json"], capture_output=True, text=True,
                         check=False, cwd=ROOT)
    assert run.returncode == 2, run.stderr
    doc = json.loads(run.stdout)  # one document: a second would not parse
    VALIDATOR.validate(doc)
    assert (doc["command"], doc["ok"], doc["exit_code"]) == (args[0], False, 2)
    assert doc["diagnostics"][0]["code"] == "usage" and "Error:" in run.stderr


def test_an_unknown_command_has_no_document_only_the_usage_error() -> None:
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "nnspec", "nosuch", "--json"], capture_output=True, text=True,
                         check=False, cwd=ROOT)
    assert run.returncode == 2 and run.stdout == "" and "No such command 'nosuch'" in run.stderr
