"""`import nnspec` is the front door: the wheel built from this tree, installed into a fresh
environment, imports as `nnspec` and runs the whole API and the command line from there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import nnspec

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "specs" / "lenet5.yaml"


def test_the_front_door_names_the_api_without_importing_torch() -> None:
    code = ("import sys, nnspec\n"
            "assert not {'torch', 'onnx', 'onnxruntime'} & set(sys.modules), sorted(sys.modules)\n"
            "print(sorted(nnspec.__all__))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    for name in ("load_spec", "compile_graph", "to_torch", "to_onnx", "export_onnx", "render", "to_graphviz",
                 "summary_rows", "json_schema", "__version__"):
        assert name in run.stdout
    assert set(nnspec.__all__) <= set(dir(nnspec))


def test_the_front_door_is_the_same_api() -> None:
    from nnspec import backends, builder

    assert nnspec.load_spec is builder.load_spec and nnspec.compile_graph is builder.compile_graph
    assert nnspec.to_torch is backends.to_torch and nnspec.to_onnx is backends.to_onnx
    with pytest.raises(AttributeError, match="no attribute 'to_tensorflow'"):
        _ = nnspec.to_tensorflow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a copy of this tree (the build writes beside its sources), built offline."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("nnspec", "builder", "backends"):  # nnspec/builder and nnspec/backends stay links
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(root / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (found,) = (root / "dist").glob("nnspec-*.whl")
    return found


def test_the_wheel_holds_the_front_door(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"nnspec"}  # no generic top-level names (builder, backends) that other distributions use
    assert {"nnspec/__init__.py", "nnspec/__main__.py", "nnspec/builder/spec.py", "nnspec/backends/cli.py"} <= set(names)
    assert {"nnspec/backends/onnx/ops_attention.py", "nnspec/backends/graphviz/viewer.js"} & set(names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "nnspec = nnspec.backends.cli:main" in entry


def test_the_wheel_imports_as_nnspec_in_a_fresh_environment(wheel: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of this tree on the path
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies (torch, onnx, ...) come from this environment by a plain path line, which does
    # not run its .pth files: this tree's editable install stays out of the fresh environment.
    Path(site, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300, env=env)
    code = (f"import nnspec\nassert nnspec.__file__.startswith({str(venv)!r}), nnspec.__file__\n"
            f"spec = nnspec.load_spec({str(LENET)!r})\n"
            "print(nnspec.__version__, nnspec.param_count(nnspec.compile_graph(spec)))\n"
            "model = nnspec.to_torch(spec)\n"
            "print(sum(p.numel() for p in model.parameters()), len(nnspec.to_onnx(spec).graph.node) > 0)\n"
            "nnspec.render(spec, 'lenet5.dot')\n")
    run = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [nnspec.__version__, "61706", "61706", "True"], run.stdout
    assert "digraph" in (tmp_path / "lenet5.dot").read_text()
    for command in ([str(venv / "bin" / "nnspec"), "--version"], [str(python), "-m", "nnspec", "--version"]):
        run = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path, timeout=300, env=env)
        assert run.returncode == 0 and nnspec.__version__ in run.stdout, run.stderr


def test_the_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    """The README's Python API block, executed as it stands (files it writes land in a temp dir)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The Python API"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]
    code = code.replace('"specs/gpt.yaml"', repr(str(ROOT / "specs" / "gpt.yaml")))
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "batch×seq×128" in run.stdout
    assert {p.name for p in tmp_path.iterdir()} >= {"gpt.onnx", "gpt.svg"}


def test_nothing_imports_the_folders_under_their_own_names() -> None:
    """Everything goes through nnspec.builder / nnspec.backends: a stray `import builder` would load
    a second copy of every module (two SpecError classes), and the wheel has no such name."""
    code = ("import sys, nnspec, nnspec.backends.cli, nnspec.backends.pytorch, nnspec.backends.onnx, "
            "nnspec.backends.graphviz, nnspec.backends.weightmap; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('builder', 'backends')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr
