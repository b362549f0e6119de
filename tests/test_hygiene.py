"""Project rules that a test can hold: builder stays free of torch/onnx, ops are documented,
and the op reference (docs/ops.md) is the one the registry generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nnspec.builder import OPS

ROOT = Path(__file__).resolve().parent.parent


def test_import_builder_pulls_in_neither_torch_nor_onnx() -> None:
    code = ("import sys, nnspec.builder, nnspec.builder.schema, nnspec.builder.summary, nnspec.backends, nnspec.backends.cli; "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("args", [["build"], ["export", "-o", "x.onnx"], ["check"], ["render", "-o", "x.svg"]],
                         ids=lambda a: a[0])
def test_backend_commands_refuse_a_bad_spec_before_importing_their_backend(args: list[str]) -> None:
    """A bad spec is reported in a second, not after the seconds torch or onnx take to import."""
    argv = [args[0], "tests/bad_specs/bad_tie.yaml", *args[1:]]
    code = ("import sys; from click.testing import CliRunner; from nnspec.backends.cli import cli; "
            f"r = CliRunner().invoke(cli, {argv!r}); "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]; "
            "print(r.exit_code, r.output, bad); sys.exit(0 if r.exit_code == 1 and not bad else 1)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_is_documented(name: str) -> None:
    doc = OPS[name].__doc__ or ""
    assert "shape" in doc.lower(), f"op '{name}' docstring needs its input and output shapes"


def test_op_reference_is_current() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from op_reference import OUT, reference

    assert OUT.read_text() == reference(), "run scripts/op_reference.py --write"
    assert "docs/ops.md" in (ROOT / "README.md").read_text(), "the README links to the op reference"


def test_builder_modules_stay_small() -> None:
    for path in (ROOT / "builder").rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 600, path
