"""The command line does what the README says: every flag in its command table exists on that
command, every command that reads a spec honours --set, --signature and --limit, and --dim
names and sizes are checked against the spec before anything runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner

from nnspec.backends.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SEQ2SEQ = str(ROOT / "specs" / "lstm_seq2seq.yaml")
GPT = str(ROOT / "specs" / "gpt.yaml")
SMALL = ("--set", "src_vocab=50", "--set", "tgt_vocab=40", "--set", "embed_dim=8", "--set", "hidden=6",
         "--set", "layers=1")
SPEC_COMMANDS = ("validate", "summary", "build", "export", "run", "check", "render")


class _Run(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _nnspec(*args: str) -> _Run:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return _Run(result.exit_code, result.stdout, result.stderr)


def _table() -> dict[str, set[str]]:
    """The README's command table: command -> the flags its row shows."""
    rows: dict[str, set[str]] = {}
    for line in README.split("## The command line", 1)[1].split("\n## ", 1)[0].splitlines():
        m = re.match(r"\| `nnspec ([\w-]+)([^`]*)`", line)
        if m:
            rows[m.group(1)] = set(re.findall(r"(--[a-z][a-z-]*|-o)\b", m.group(2)))
    return rows


def test_the_readme_table_names_real_commands_and_every_spec_command() -> None:
    commands = set(cli.list_commands(cli.make_context("nnspec", [], resilient_parsing=True)))
    assert set(_table()) <= commands
    assert {"validate", "summary", "ops", "schema", *SPEC_COMMANDS} <= set(_table())


@pytest.mark.parametrize("command", sorted(_table()))
def test_every_flag_in_the_readme_table_exists(command: str) -> None:
    run = _nnspec(command, "--help")
    assert run.returncode == 0, run.stderr
    for flag in _table()[command]:
        assert re.search(rf"(^|[ ,]){re.escape(flag)}\b", run.stdout, re.M), f"nnspec {command} has no {flag}"


def test_the_readme_promises_set_signature_and_limit_on_every_spec_command() -> None:
    text = " ".join(README.split())
    assert "Every command that reads a spec takes `--set key=value`" in text
    assert "`--signature NAME`" in text and "`--limit name=N`" in text


def _args(command: str, tmp: Path, *flags: str) -> list[str]:
    extra = {"export": ["-o", str(tmp / "m.onnx")], "render": ["-o", str(tmp / "m.dot")], "run": ["--random"],
             "build": ["--emit-python", str(tmp / "m.py")]}.get(command, [])
    return [command, SEQ2SEQ, *extra, *SMALL, *flags]


@pytest.mark.parametrize("command", SPEC_COMMANDS)
def test_every_spec_command_takes_set_signature_and_limit(command: str, tmp_path: Path) -> None:
    run = _nnspec(*_args(command, tmp_path, "--signature", "decode_step", "--limit", "max_nodes=1000"))
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    # --signature is honoured: the decoding step's inputs and outputs, not the training graph's
    shown = run.stdout + run.stderr + "".join(p.read_text(errors="replace") for p in tmp_path.glob("m.*")
                                              if p.suffix in (".py", ".dot"))
    if command in ("summary", "render", "build"):
        assert "token" in shown and "tgt_in" not in shown, shown[:2000]
    if command == "validate":
        assert "[decode_step]" in shown
    if command == "run":
        assert re.search(r"^h(_out)?: float32 \[1, 2, 6\]", run.stdout, re.M), run.stdout  # hidden=6, layers=1 by --set
    # --limit is honoured: too low a node limit is a located error, exit 1, nothing written
    for p in tmp_path.glob("m.*"):
        p.unlink()
    low = _nnspec(*_args(command, tmp_path, "--signature", "decode_step", "--limit", "max_nodes=2"))
    assert low.returncode == 1 and "error[limit]" in low.stderr and "--limit max_nodes" in low.stderr, low.stderr
    assert not list(tmp_path.glob("m.*"))
    # --signature is checked: a misspelt one is an error with a did-you-mean
    bad = _nnspec(*_args(command, tmp_path, "--signature", "decode_stp"))
    assert bad.returncode == 1 and "did you mean 'decode_step'?" in bad.stderr, bad.stderr


# --- --dim ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "check"])
def test_an_unknown_dim_is_a_usage_error_with_a_did_you_mean(command: str) -> None:
    run = _nnspec(command, GPT, "--set", "layers=1", "--set", "d_model=16", "--set", "heads=2", "--set", "vocab=50",
                  *(["--random"] if command == "run" else []), "--dim", "seqq=5")
    assert run.returncode == 2, run.stderr
    assert "no input has a dim 'seqq'; did you mean 'seq'?" in run.stderr and "batch, seq" in run.stderr


def test_a_dim_of_a_fixed_size_input_is_refused() -> None:
    run = _nnspec("check", str(ROOT / "specs" / "lenet5.yaml"), "--dim", "foo=3")
    assert run.returncode == 2 and "no input has a dim 'foo'" in run.stderr, run.stderr


@pytest.mark.parametrize("command", ["run", "check"])
def test_too_long_a_sequence_is_a_located_error(command: str) -> None:
    run = _nnspec(command, GPT, "--set", "layers=1", "--set", "d_model=16", "--set", "heads=2", "--set", "vocab=50",
                  "--set", "n_ctx=64", *(["--random"] if command == "run" else []), "--dim", "seq=65")
    assert run.returncode == 1, run.stderr
    assert re.search(r"gpt\.yaml:\d+:\d+: error\[shape-mismatch\]: node 'wpe'.*longer than max_len 64", run.stderr)
    assert "bug" not in run.stderr
    ok = _nnspec(command, GPT, "--set", "layers=1", "--set", "d_model=16", "--set", "heads=2", "--set", "vocab=50",
                 "--set", "n_ctx=64", *(["--random"] if command == "run" else []), "--dim", "seq=64")
    assert ok.returncode == 0, ok.stderr


def test_an_onnx_file_too_short_for_its_inputs_is_a_user_error(tmp_path: Path) -> None:
    small = ("--set", "layers=1", "--set", "d_model=16", "--set", "heads=2", "--set", "vocab=50", "--set", "n_ctx=8")
    assert _nnspec("export", GPT, *small, "-o", str(tmp_path / "g.onnx")).returncode == 0
    model = str(tmp_path / "g.onnx")
    run = _nnspec("run", model, "--random", "--dim", "seq=9")
    assert run.returncode == 1, run.stderr
    assert f"onnxruntime cannot run '{model}' on these inputs (tokens: int64 [2, 9])" in run.stderr
    assert "node 'wpe" in run.stderr and "bug" not in run.stderr
    typo = _nnspec("run", model, "--random", "--dim", "sq=3")
    assert typo.returncode == 2 and "did you mean 'seq'?" in typo.stderr, typo.stderr
