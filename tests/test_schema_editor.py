"""The spec JSON Schema as an editor uses it: every spec in specs/ passes, the bad-spec corpus's
typos (unknown keys and ops) fail, and a failure names the op's own problem."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from nnspec.builder.schema import json_schema

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = jsonschema.Draft202012Validator(json_schema())
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
TYPOS = ("unknown-key", "unknown-op")


def _errors(data: Any) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in VALIDATOR.iter_errors(data)]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_seed_spec_passes(path: Path) -> None:
    assert _errors(yaml.safe_load(path.read_text())) == []


def _typo_cases() -> list[Path]:
    out = []
    for path in sorted((ROOT / "tests" / "bad_specs").iterdir()):
        m = re.match(r"# expect: (\S+)", path.read_text(errors="replace").partition("\n")[0])
        if m and m[1] in TYPOS and "from_param" not in path.name:  # an op named by a param is known only once resolved
            out.append(path)
    return out


@pytest.mark.parametrize("path", _typo_cases(), ids=lambda p: p.name)
def test_the_corpus_typos_fail(path: Path) -> None:
    assert _errors(yaml.safe_load(path.read_text()))


def _spec(nodes: str, blocks: str = "") -> Any:
    return yaml.safe_load(f"name: t\ninputs: {{x: {{shape: [batch, 3, 8, 8]}}}}\n{blocks}nodes:\n{nodes}outputs: {{y: c}}\n")


def test_a_misspelt_argument_is_named_against_its_op() -> None:
    errors = _errors(_spec("  c: {op: conv2d, in: x, out_channel: 4, kernel_size: 3}\n"))
    assert "$.nodes.c: Additional properties are not allowed ('out_channel' was unexpected)" in errors
    assert "$.nodes.c: 'out_channels' is a required property" in errors
    assert not any("any of the given schemas" in e for e in errors), errors


def test_an_unknown_op_fails_unless_blocks_could_define_it() -> None:
    errors = _errors(_spec("  c: {op: conv4d, in: x}\n"))
    assert len(errors) == 1 and errors[0].startswith("$.nodes.c.op: 'conv4d' is not one of ['abs'")
    blocks = ("blocks:\n  conv4d:\n    inputs: [x]\n    nodes: {r: {op: relu, in: x}}\n    outputs: {y: r}\n")
    assert _errors(_spec("  c: {op: conv4d, in: x}\n", blocks)) == []
    assert _errors(_spec("  c: {op: '${which}', in: x}\n")) == []  # an op chosen by a param


def test_the_readme_shows_the_editor_setup() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "# yaml-language-server: $schema=" in readme and "nnspec schema -o" in readme
