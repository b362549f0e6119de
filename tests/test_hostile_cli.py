"""`nnspec` writes only where it is told, and an unexpected failure writes nothing.

Every command that writes a file refuses a missing directory, a directory given as the
file, and a path below a regular file, with a clear message and no traceback. An internal
failure halfway through writing says it is a bug, leaves no temporary file, and keeps the
good file that was there.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nnspec.backends.cli import cli, main

SPEC = "specs/lenet5.yaml"

WRITERS = {
    "schema": (None, ["schema", "-o", "{out}"], ".json"),
    "render": ("nnspec.backends.graphviz.commands", ["render", SPEC, "-o", "{out}"], ".dot"),
    "export": ("nnspec.backends.onnx.commands", ["export", SPEC, "-o", "{out}"], ".onnx"),
    "build": ("nnspec.backends.pytorch.commands", ["build", SPEC, "--emit-python", "{out}"], ".py"),
}
"""Each writing command: the module that provides it (None: always there), its arguments, a suffix."""


def _command(name: str, out: Path) -> list[str]:
    module, args, _ = WRITERS[name]
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not here yet")
    return [a.format(out=out) for a in args]


@pytest.mark.parametrize("name", WRITERS)
def test_missing_directory_is_a_clear_error(name: str, tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / f"file{WRITERS[name][2]}"
    result = CliRunner().invoke(cli, _command(name, out))
    assert result.exit_code == 1, result.output
    assert "does not exist" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", WRITERS)
def test_directory_as_output_is_a_clear_error(name: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, _command(name, tmp_path))
    assert result.exit_code == 2, result.output
    assert "is a directory" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", WRITERS)
def test_output_below_a_file_is_a_clear_error(name: str, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a directory")
    result = CliRunner().invoke(cli, _command(name, tmp_path / "plain" / f"file{WRITERS[name][2]}"))
    assert result.exit_code == 1, result.output
    assert "error" in result.output and "Traceback" not in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["plain"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where no file can be created")
def test_unwritable_place_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["schema", "-o", "/proc/nnspec-schema.json"])
    assert result.exit_code == 1
    assert "error: cannot write '/proc/nnspec-schema.json'" in result.output


def _run_main(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["nnspec", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    code = exit_.value.code
    return code if isinstance(code, int) else 1, capsys.readouterr().err


def test_internal_failure_while_writing_keeps_the_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "schema.json"
    target.write_text("the good file")

    def half_then_fail(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        self.write_bytes(text[: len(text) // 2].encode())
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    code, err = _run_main(["schema", "-o", str(target)], monkeypatch, capsys)
    assert code == 3
    assert "internal error: RuntimeError: disk on fire" in err
    assert "This is a bug in nnspec" in err and "No output was written" in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["schema.json"]
    assert target.read_bytes() == b"the good file"


def test_internal_failure_in_a_check_is_reported_as_a_bug(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("nnspec.backends.cli.check_spec", broken)
    code, err = _run_main(["validate", SPEC], monkeypatch, capsys)
    assert code == 3 and "internal error: ZeroDivisionError: a bug" in err and "Traceback" not in err


def test_spec_error_escaping_a_command_exits_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    spec = tmp_path / "sig.yaml"  # the main graph is fine; its signature is not
    spec.write_text("name: t\ninputs: {x: {shape: [batch, 4]}}\nnodes: {a: {op: relu, in: x}}\noutputs: {y: a}\n"
                    "signatures:\n  s:\n    inputs: {z: {shape: [1, 4]}}\n    outputs: {y: nope}\n")
    out = tmp_path / "model.py"
    _command("build", out)  # skips when the PyTorch backend is not here
    code, err = _run_main(["build", str(spec), "--emit-python", str(out)], monkeypatch, capsys)
    assert code == 1 and f"{spec}:8:15: error[bad-output]" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("name", ["export", "build"])
def test_huge_model_is_refused_before_anything_is_allocated(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"model{WRITERS[name][2]}"
    args = _command(name, out)
    args[args.index(SPEC)] = "tests/bad_specs/huge_weights.yaml"  # a linear with 10^12 parameters
    if name == "build":
        args += ["--weights", str(tmp_path / "weights.safetensors")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "error[limit]" in result.output, result.output
    assert list(tmp_path.iterdir()) == []
