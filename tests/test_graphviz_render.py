"""Writing diagrams: every seed spec to every format, the `render` command, the README
diagrams command, and what happens without Graphviz's ``dot`` program."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnspec.backends.graphviz import FORMATS, GraphvizNotFound, render
from nnspec.backends.graphviz.commands import render as render_command
from nnspec.backends.graphviz.docs import DIAGRAMS, render_docs

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.y*ml"))
LENET = ROOT / "specs" / "lenet5.yaml"
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed (apt-get install graphviz)")

MAGIC = {".svg": b"<svg", ".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".dot": b"// nnspec diagram of ",
         ".mmd": b"---\ntitle: ", ".html": b"<!DOCTYPE html>"}
BAD_SPEC = "name: bad\ninputs: {x: {shape: [batch, 4]}}\nnodes:\n  l: {op: linear, in: y, out_features: 2}\noutputs: {o: l}\n"


def test_every_format_has_a_check() -> None:
    assert set(MAGIC) == set(FORMATS)


@needs_dot
@pytest.mark.parametrize("suffix", list(FORMATS))
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_renders_to_every_format(spec: Path, suffix: str, tmp_path: Path) -> None:
    out = render(spec, tmp_path / f"{spec.stem}{suffix}")
    data = out.read_bytes()
    head = data[:4096]
    assert MAGIC[suffix] in head, head[:200]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind
    if suffix in (".svg", ".html"):
        assert data.count(b'class="node"') >= 3


def test_dot_and_mermaid_files_need_no_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert shutil.which("dot") is None
    assert render(LENET, tmp_path / "l.dot").read_text().startswith("// nnspec diagram of lenet5")
    assert "flowchart TB" in render(LENET, tmp_path / "l.mmd").read_text()


@pytest.mark.parametrize("suffix", [".svg", ".png", ".pdf", ".html"])
def test_without_dot_other_formats_say_how_to_install_graphviz(suffix: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    target = tmp_path / f"l{suffix}"
    target.write_text("the old drawing")
    with pytest.raises(GraphvizNotFound, match=r"needs Graphviz's `dot` program.*apt-get install graphviz"):
        render(LENET, target)
    assert target.read_text() == "the old drawing"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_the_command_without_dot_exits_1_with_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = CliRunner().invoke(render_command, [str(LENET), "-o", str(tmp_path / "l.png")])
    assert result.exit_code == 1
    assert "apt-get install graphviz" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []
    ok = CliRunner().invoke(render_command, [str(LENET), "-o", str(tmp_path / "l.mmd")])
    assert ok.exit_code == 0, ok.output


def test_unknown_suffix_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(render_command, [str(LENET), "-o", str(tmp_path / "l.jpeg")])
    assert result.exit_code == 2
    assert "use one of .svg, .png, .pdf, .dot, .mmd, .html" in result.output
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="suffixes"):
        render(LENET, tmp_path / "l.jpeg")


def test_bad_spec_exits_1_and_keeps_the_old_file(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC)
    target = tmp_path / "bad.dot"
    target.write_text("old")
    result = CliRunner().invoke(render_command, [str(spec), "-o", str(target)])
    assert result.exit_code == 1
    assert "bad.yaml:4:" in result.output and "dangling-ref" in result.output
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.dot", "bad.yaml"]


@pytest.mark.parametrize("depth", ["-1", "x"])
def test_bad_depth_is_a_usage_error(depth: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(render_command, [str(LENET), "-o", str(tmp_path / "l.dot"), "--depth", depth])
    assert result.exit_code == 2 and "expected a level" in result.output


def test_command_options_reach_the_drawing(tmp_path: Path) -> None:
    out = tmp_path / "t.dot"
    args = [str(ROOT / "specs" / "transformer.yaml"), "-o", str(out), "--depth", "0", "--rankdir", "lr",
            "--no-params", "--no-shapes", "--set", "layers=2", "--signature", "encode"]
    result = CliRunner().invoke(render_command, args)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "rankdir=LR" in text and "signature encode" in text
    assert "encoder_layer <b>×2</b>" in text  # folded at depth 0, with the --set repeat count
    assert "decoder" not in text
    assert "params</font>" not in text and "label=<batch" not in text


def test_unroll_option(tmp_path: Path) -> None:
    out = tmp_path / "m.mmd"
    result = CliRunner().invoke(render_command, [str(ROOT / "specs" / "gpt.yaml"), "-o", str(out), "--unroll",
                                                 "--depth", "all", "--set", "layers=2"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "n_h_0_attn" in text and "n_h_1_attn" in text


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    out = render(LENET, tmp_path / "l.dot")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


@needs_dot
def test_readme_diagrams_come_from_one_command(tmp_path: Path) -> None:
    written = render_docs(tmp_path / "docs")
    assert [p.name for p in written] == [d.file for d in DIAGRAMS] == ["lenet5.svg", "transformer.svg", "bert.svg", "llama.svg"]
    assert all(p.read_bytes().lstrip().startswith(b"<?xml") for p in written)
    proc = subprocess.run([sys.executable, "-m", "nnspec.backends.graphviz.docs", str(tmp_path / "again")], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["bert.svg", "lenet5.svg", "llama.svg", "transformer.svg"]


@needs_dot
def test_nnspec_render_end_to_end(tmp_path: Path) -> None:
    """Through the `nnspec` command line (the lead's backends.cli wires the command in)."""
    out = tmp_path / "lenet.svg"
    proc = subprocess.run([sys.executable, "-m", "nnspec", "render", str(LENET), "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if proc.returncode == 2 and "No such command" in proc.stderr:
        pytest.skip("nnspec.backends.cli does not have the render command yet")
    assert proc.returncode == 0, proc.stderr
    assert b"<svg" in out.read_bytes()[:1000]


def test_path_in_no_directory_is_refused_before_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        render(LENET, tmp_path / "missing" / "l.dot")
    (tmp_path / "d.dot").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        render(LENET, tmp_path / "d.dot")
    result = CliRunner().invoke(render_command, [str(LENET), "-o", str(tmp_path / "missing" / "l.dot")])
    assert result.exit_code == 1 and "does not exist" in result.output
