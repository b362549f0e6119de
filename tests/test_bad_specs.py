"""The bad-spec corpus: every malformed spec gets one clear error naming file, line and node.

Text files in tests/bad_specs/ state what they expect on their first line::

    # expect: <code> [<line>:<col>] [node=<id>] [message=<substring>]

Files that cannot carry a comment (empty, binary, other encodings, JSON) are listed in
`UNCOMMENTED`. Each case runs `nnspec validate` and checks the exit status (1), the
diagnostic header, and that no traceback is shown; then `nnspec render` into an empty
directory, which must fail the same way and leave the directory empty.

Files in tests/edge_specs/ are the other side: unusual but valid (a UTF-8 byte-order mark,
CRLF line ends, anchors, merge keys, YAML 1.2 scalars) and must pass; a ``# params: N``
first line states their parameter count. Cases that are better generated than stored (a file
over the size limit, a device that never ends) are tests below.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnspec.backends.cli import cli
from nnspec.builder import DEFAULT_LIMITS, SpecError, load_spec

CORPUS = Path(__file__).parent / "bad_specs"
EDGE = Path(__file__).parent / "edge_specs"
HAS_RENDER = importlib.util.find_spec("nnspec.backends.graphviz.commands") is not None


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
    "json_huge_number.json": Expect("limit", 1, 31, message="has 5000 digits"),
    "json_nested_duplicate.json": Expect("duplicate-key", 1, 55, message="key 'shape' appears twice"),
    "json_not_object.json": Expect("bad-value", 1, 1, message="a mapping at the top level, got list"),
    "json_trailing_comma.json": Expect("syntax", 2, 43, message="invalid JSON"),
    "json_unknown_key.json": Expect("unknown-key", 2, 43, node="a", message="did you mean 'in'"),
    "utf16.yaml": Expect("encoding", 1, 1, message="UTF-16 text"),
    "utf32.yaml": Expect("encoding", 1, 1, message="UTF-32 text"),
    "whitespace_only.yaml": Expect("empty", 1, 1, message="the spec is empty"),
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


def _signature_option(path: Path) -> list[str]:
    """``--signature NAME`` for a spec whose error is in its (one) signature, not in the main graph."""
    try:
        signatures = list(load_spec(path).signatures)
    except SpecError:
        return []
    return ["--signature", signatures[0]] if signatures else []


def test_corpus_covers_every_error_class() -> None:
    codes = {_expectation(p).code for p in CASES}
    required = {"syntax", "unknown-key", "unknown-op", "bad-arg", "bad-value", "missing-key", "missing-input",
                "missing-param", "unknown-param", "bad-expr", "duplicate-key", "duplicate-id", "dangling-ref",
                "unknown-port", "cycle", "bad-output", "shape-mismatch", "limit", "yaml-tag", "encoding", "empty",
                "recursion", "bad-tie"}
    assert required <= codes, f"no case for {sorted(required - codes)}"
    assert len(CASES) >= 70


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
    if HAS_RENDER:  # a command that writes fails the same way and writes nothing
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        args = ["render", str(path), "-o", str(out_dir / "diagram.dot"), *_signature_option(path)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and f"error[{expect.code}]" in result.output, result.output
        assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("path", CASES[:8], ids=lambda p: p.name)
def test_bad_spec_json_errors(path: Path) -> None:
    expect = _expectation(path)
    result = CliRunner().invoke(cli, ["validate", "--json", str(path)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)["files"]
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


# -- must pass ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EDGE.iterdir()), ids=lambda p: p.name)
def test_edge_spec_passes(path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", "--json", str(path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["files"][0]
    assert report["ok"] and report["diagnostics"] == []
    first = path.read_text(encoding="utf-8-sig").splitlines()[0]
    if first.startswith("# params: "):
        assert report["params"] == int(first.removeprefix("# params: "))


def test_yaml_1_2_scalars_keep_their_types() -> None:
    params = load_spec(EDGE / "yaml12_scalars.yaml").resolved_params
    assert params == {"answer": "yes", "switch": "off", "big": 1000, "hex": 16, "plus": 4, "octal": 15}


# -- generated cases ---------------------------------------------------------------------------


def test_file_over_the_size_limit(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    head = "name: big\ninputs: {x: {shape: [batch, 4]}}\nnodes: {a: {op: relu, in: x}}\noutputs: {y: a}\ndoc: "
    spec.write_text(head + "x" * (DEFAULT_LIMITS.max_file_bytes - len(head)) + "\n")
    result = CliRunner().invoke(cli, ["validate", str(spec)])
    assert result.exit_code == 1
    assert f"{spec}: error[limit]: file is larger than the limit of {DEFAULT_LIMITS.max_file_bytes} bytes" in result.output
    result = CliRunner().invoke(cli, ["validate", "--limit", f"max_file_bytes={2 * DEFAULT_LIMITS.max_file_bytes}",
                                      str(spec)])
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_endless_file_is_refused_at_the_size_limit() -> None:
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["validate", "/dev/zero"])
    assert result.exit_code == 1 and "/dev/zero: error[limit]: file is larger" in result.output
    assert time.monotonic() - start < 10


def test_unknown_signature_is_reported_with_the_known_ones() -> None:
    result = CliRunner().invoke(cli, ["summary", "specs/lstm_seq2seq.yaml", "--signature", "decode_stp"])
    assert result.exit_code == 1
    assert "error[unknown-signature]: spec 'lstm_seq2seq' has no signature 'decode_stp'" in result.output
    assert "did you mean 'decode_step'?" in result.output


def test_too_many_values_are_refused_while_parsing(tmp_path: Path) -> None:
    spec = tmp_path / "long.yaml"
    spec.write_text("name: long\ndoc: [" + "1, " * 3000 + "1]\n")
    result = CliRunner().invoke(cli, ["validate", "--limit", "max_items=1000", str(spec)])
    assert result.exit_code == 1
    assert f"{spec}:2:" in result.output and "error[limit]: the spec holds more than 1,000 values" in result.output


def test_thousands_of_errors_are_answered_quickly(tmp_path: Path) -> None:
    spec = tmp_path / "broken.yaml"  # each did-you-mean over every name would take minutes
    spec.write_text("name: broken\ninputs: {x: {shape: [batch, 4]}}\noutputs: {y: n0}\nnodes:\n"
                    + "".join(f"  n{i}: {{op: add, in: [n{i + 1}, nope{i}]}}\n" for i in range(3000))
                    + "  n3000: {op: rleu, in: x}\n")
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["validate", str(spec)])
    assert result.exit_code == 1
    assert result.output.count("error[dangling-ref]") == 3000 and "error[unknown-op]" in result.output
    assert time.monotonic() - start < 60  # minutes without the bound on hints; seconds with it
