"""The front-end commands: validate, summary, ops, schema; --set; exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from nnspec.backends.cli import cli
from nnspec.builder import OPS

SPECS = sorted(Path("specs").glob("*.yaml"))


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_all_seed_specs() -> None:
    code, out, _ = _run("validate", *map(str, SPECS))
    assert code == 0
    assert out.count("ok  ") == len(SPECS)


def test_readme_shows_what_validate_prints() -> None:
    """The README's `nnspec validate specs/*.yaml` lines are the command's output, line for line."""
    _, out, _ = _run("validate", *map(str, SPECS))
    readme = Path("README.md").read_text()
    shown = [line for line in readme.splitlines() if line.startswith("ok  specs/")]
    assert shown == out.splitlines()


def test_readme_unknown_op_example_is_what_validate_prints(tmp_path: Path) -> None:
    readme = Path("README.md").read_text()
    shown = readme[readme.index("$ nnspec validate broken.yaml\n"):].split("\n", 1)[1].split("```")[0].strip()
    (tmp_path / "broken.yaml").write_text(
        "name: broken\ninputs: {x: {shape: [batch, 3, 32, 32]}}\nnodes:\n"
        "  c1: {op: conv2d, in: x, out_channels: 8, kernel_size: 3}\n"
        "  up: {op: deconv2d, in: c1, out_channels: 3, kernel_size: 2, stride: 2}\noutputs: {y: up}\n")
    run = subprocess.run([sys.executable, "-m", "nnspec", "validate", "broken.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert run.stderr.strip() == shown


def test_summary_json_totals_match_rows() -> None:
    code, out, _ = _run("summary", "specs/lenet5.yaml", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["params"] == sum(r["params"] for r in data["nodes"]) == 61_706
    c1 = next(r for r in data["nodes"] if r["id"] == "c1")
    assert (c1["op"], c1["shape"], c1["dtype"], c1["params"]) == ("conv2d", ["batch", 6, 28, 28], "float32", 156)
    assert c1["outputs"] == [{"port": "y", "shape": ["batch", 6, 28, 28], "dtype": "float32"}]
    assert (c1["macs"], data["macs"], data["trainable_params"], data["non_trainable"]) == (
        "122304*batch", "423038*batch", 61_706, 0)


def test_summary_counts_at_given_sizes() -> None:
    code, out, _ = _run("summary", "specs/gpt.yaml", "--json", "--dim", "batch=1", "--dim", "seq=1024")
    assert code == 0
    data = json.loads(out)
    assert data["sizes"] == {"batch": 1, "seq": 1024} and data["dims"] == ["batch", "seq"]
    assert isinstance(data["macs"], int) and 140e9 < data["macs"] < 150e9  # ~2 x 124M x 1024 / 2, plus attention
    assert data["nodes"][0]["shape"] == ["batch", "seq"]  # shapes stay symbolic; the counts take the sizes
    code, out, _ = _run("summary", "specs/gpt.yaml", "--json", "--dim", "batch=1")
    assert json.loads(out)["macs"] == "18432*seq**2 + 123653376*seq"
    code, _, err = _run("summary", "specs/gpt.yaml", "--dim", "seqq=3")
    assert code == 2 and "did you mean 'seq'?" in err
    code, out, _ = _run("summary", "specs/lenet5.yaml", "--dim", "batch=1")
    assert code == 0 and "multiply-adds at batch=1: 423.04 K" in out and "trainable: 61,706" in out


def test_summary_depth_folds_repeated_blocks() -> None:
    _, out, _ = _run("summary", "specs/bert.yaml", "--json", "--depth", "0")
    rows = json.loads(out)["nodes"]
    encoder = next(r for r in rows if r["id"] == "encoder")
    assert (encoder["op"], encoder["repeat"], encoder["params"]) == ("layer", 12, 12 * 7_087_872)
    assert not any(r["id"].startswith("encoder.") for r in rows)
    _, out, _ = _run("summary", "specs/bert.yaml", "--json", "--depth", "1")
    assert [r["id"] for r in json.loads(out)["nodes"] if r["id"].startswith("encoder.")] == [
        f"encoder.{i}" for i in range(12)]


def test_summary_table_shows_shapes() -> None:
    code, out, _ = _run("summary", "specs/lenet5.yaml")
    assert code == 0
    assert "[batch, 16, 5, 5]" in out and "61,706" in out


def test_set_overrides_params_and_unknown_param_is_an_error() -> None:
    code, out, _ = _run("summary", "specs/gpt.yaml", "--json", "--set", "layers=2", "--set", "d_model=64",
                        "--set", "heads=4")
    assert code == 0 and json.loads(out)["params"] < 4_000_000
    code, _, err = _run("validate", "specs/gpt.yaml", "--set", "layer=2")
    assert code == 1
    assert "--set: error[unknown-param]: there is no param 'layer' to set" in err
    assert "did you mean 'layers'?" in err


def test_bad_set_syntax_is_usage_error() -> None:
    code, _, err = _run("validate", "specs/gpt.yaml", "--set", "layers")
    assert code == 2 and "key=value" in err


def test_missing_file_is_a_clear_error() -> None:
    code, _, err = _run("validate", "specs/nope.yaml")
    assert code == 1 and "specs/nope.yaml: error[io]: cannot read file" in err


def test_ops_lists_every_op() -> None:
    code, out, _ = _run("ops", "--json")
    assert code == 0
    listed = {e["op"]: e for e in json.loads(out)["ops"]}
    assert set(listed) == set(OPS)
    assert {a["name"] for a in listed["conv2d"]["args"]} >= {"out_channels", "kernel_size", "stride", "padding"}


def test_schema_accepts_seed_specs_and_rejects_bad_ones(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    code, _, _ = _run("schema", "-o", str(target))
    assert code == 0
    schema = json.loads(target.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for path in SPECS:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], (path, errors[:1])
    bad = yaml.safe_load("name: x\ninputs: {x: {shape: [4]}}\nnodes: {c: {op: conv2d, in: x, kernel_sise: 3}}\n"
                         "outputs: {y: c}\n")
    assert not validator.is_valid(bad)


def test_cli_entry_point_exit_statuses(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\ninputs: {x: {shape: [4]}}\nnodes: {a: {op: nope, in: x}}\noutputs: {y: a}\n")
    nnspec = Path(sys.executable).parent / "nnspec"
    if not nnspec.exists():
        pytest.skip("the nnspec console script is not installed in this environment")
    run = subprocess.run([str(nnspec), "validate", str(bad)], capture_output=True, text=True, check=False)
    assert run.returncode == 1 and "error[unknown-op]" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run([str(nnspec), "summary"], capture_output=True, text=True, check=False)
    assert run.returncode == 2


def test_readme_summary_example_is_the_output() -> None:
    """The README's `nnspec summary specs/lenet5.yaml` block is the command's output, line for line."""
    readme = Path("README.md").read_text()
    shown = readme.split("$ nnspec summary specs/lenet5.yaml\n", 1)[1].split("\n\n", 1)[0].splitlines()
    code, out, _ = _run("summary", "specs/lenet5.yaml")
    assert code == 0
    assert shown == [line.rstrip() for line in out.splitlines()]
