"""The bad-spec corpus: every malformed spec gets one clear error naming file, line and node.

Text files in tests/bad_specs/ state what they expect on their first line::

    # expect: <code> [<line>:<col>] [node=<id>] [message=<substring>]

Files that cannot carry a comment (empty, binary, other encodings, JSON) are listed in
`UNCOMMENTED`. Each case runs `nnspec validate` and checks the exit status (1), the
diagnostic header, and that no traceback is shown.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from backends.cli import cli

CORPUS = Path(__file__).parent / "bad_specs"


@dataclass(frozen=True)
class Expect:
    code: str
    line: int | None = None
    col: int | None = None
    node: str | None = None
    message: str | None = None


UNCOMMENTED = {
    "empty.yaml": Expect("empty", 1, 1, message="the spec is empty"),
    "binary.yaml": Expect("encoding", 1, 1, message="binary file"),
    "latin1.yaml": Expect("encoding", 2, 9, message="not valid UTF-8"),
    "bom_then_error.yaml": Expect("unknown-key", 5, 1, message="unknown key 'extra'"),
    "json_trailing.json": Expect("syntax", 2, 25, message="Extra data"),
    "json_duplicate.json": Expect("duplicate-key", 2, 44, message="'a' appears twice"),
}

_HEADER = re.compile(r"^# expect: (?P<code>[a-z-]+)(?: (?P<line>\d+):(?P<col>\d+))?(?: node=(?P<node>\S+))?"
                     r"(?: message=(?P<message>.+))?$")


def _expectation(path: Path) -> Expect:
    if path.name in UNCOMMENTED:
        return UNCOMMENTED[path.name]
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = _HEADER.match(first)
    assert m, f"{path.name}: first line must be '# expect: ...', got {first!r}"
    return Expect(m["code"], int(m["line"]) if m["line"] else None, int(m["col"]) if m["col"] else None,
                  m["node"], m["message"])


CASES = sorted(CORPUS.iterdir())


def test_corpus_covers_every_error_class() -> None:
    codes = {_expectation(p).code for p in CASES}
    required = {"syntax", "unknown-key", "unknown-op", "bad-arg", "missing-key", "unknown-param", "bad-expr",
                "duplicate-key", "duplicate-id", "dangling-ref", "unknown-port", "cycle", "bad-output",
                "shape-mismatch", "limit", "yaml-tag", "encoding", "empty", "recursion", "bad-tie"}
    assert required <= codes, f"no case for {sorted(required - codes)}"


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_bad_spec_is_reported(path: Path, tmp_path: Path) -> None:
    expect = _expectation(path)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    out = result.output
    assert result.exit_code == 1, out
    assert "Traceback" not in out
    where = f"{path}:{expect.line}:{expect.col}" if expect.line else str(path)
    header = next((line for line in out.splitlines() if f"error[{expect.code}]" in line), None)
    assert header is not None, f"no error[{expect.code}] in:\n{out}"
    assert header.startswith(where), f"expected position {where} in:\n{header}"
    if expect.node:
        assert f"node '{expect.node}'" in header, header
    if expect.message:
        assert expect.message in out, out


@pytest.mark.parametrize("path", CASES[:8], ids=lambda p: p.name)
def test_bad_spec_json_errors(path: Path) -> None:
    expect = _expectation(path)
    result = CliRunner().invoke(cli, ["validate", "--json", str(path)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    codes = [d["code"] for d in report[0]["diagnostics"]]
    assert expect.code in codes
    first = next(d for d in report[0]["diagnostics"] if d["code"] == expect.code)
    assert first["file"] == str(path)
    if expect.line:
        assert (first["line"], first["col"]) == (expect.line, expect.col)


def test_independent_errors_are_all_reported(tmp_path: Path) -> None:
    spec = tmp_path / "many.yaml"
    spec.write_text(
        "name: many\n"
        "inputs: {x: {shape: [batch, 4]}}\n"
        "nodes:\n"
        "  a: {op: relu, in: nope}\n"
        "  b: {op: linar, in: x}\n"
        "  c: {op: linear, in: x, out_features: 0}\n"
        "  d: {op: add, in: [a, b, c]}\n"
        "outputs: {y: d}\n")
    result = CliRunner().invoke(cli, ["validate", str(spec)])
    assert result.exit_code == 1
    assert f"{spec}:4:17: error[dangling-ref]: node 'a'" in result.output
    assert f"{spec}:5:7: error[unknown-op]: node 'b'" in result.output
    assert f"{spec}:6:26: error[bad-arg]: node 'c'" in result.output
