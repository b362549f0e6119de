"""Op plugins through the stock command line: an installed package (entry points), --plugin and
NNSPEC_PLUGINS with local modules, and each way a plugin can fail (exit 1, the plugin named).

Every run is a subprocess, so that no plugin op stays registered in the test process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugin"
SPEC = EXAMPLE / "squared_mlp.yaml"


def _run(python: str | Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``nnspec ARGS`` as the console script runs it (``nnspec.backends.cli:main``), under `python`."""
    environ = {k: v for k, v in os.environ.items() if k not in ("NNSPEC_PLUGINS", "PYTHONPATH")}
    return subprocess.run([str(python), "-m", "nnspec", *args], cwd=cwd, env={**environ, **(env or {})},
                          capture_output=True, text=True, check=False, timeout=300)


def _ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stderr
    return run.stdout


def _fails(run: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1, one clear message naming `words`, no traceback, no 'internal error'."""
    assert run.returncode == 1, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run.stderr
    for word in words:
        assert word in run.stderr, run.stderr


# --- an installed package -------------------------------------------------------------------

@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the example plugin pip-installed into it (offline, no deps).

    It sees nnspec and torch through a .pth file naming this environment's site-packages
    (``--system-site-packages`` would give the base interpreter's, without torch), so nothing
    large is installed; the plugin itself is installed from its pyproject.toml like any package,
    and is visible in the new environment only.
    """
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    base = sysconfig.get_paths()["purelib"]
    Path(site, "_nnspec_base.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    source = shutil.copytree(EXAMPLE, root / "plugin_src")  # the build writes beside its sources
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    str(source)], check=True, capture_output=True, timeout=300)
    return python


def test_installed_plugin_works_with_every_command(fresh_python: Path, tmp_path: Path) -> None:
    def nnspec(*args: str) -> str:
        return _ok(_run(fresh_python, *args, cwd=tmp_path))

    assert "squared_mlp, 6 nodes, 7,018 parameters" in nnspec("validate", str(SPEC))
    listed = {e["op"]: e for e in json.loads(nnspec("ops", "--json"))["ops"]}
    assert listed["swiglu"]["plugin"] == listed["squared_relu"]["plugin"] == "nnspec_squared_relu"
    assert listed["swiglu"]["family"] == "linear" and listed["relu"]["plugin"] is None
    schema = json.loads(nnspec("schema"))
    assert "swiglu" in schema["$defs"]["BlockCall"]["properties"]["op"]["not"]["enum"]
    rows = {r["id"]: r for r in json.loads(nnspec("summary", str(SPEC), "--json"))["nodes"]}
    assert (rows["ffn"]["op"], rows["ffn"]["params"]) == ("swiglu", 3 * 32 * 64)
    assert "7,018 parameters" in nnspec("build", str(SPEC), "--emit-python", "model.py", "--weights", "w.safetensors")
    assert "torch.nn.functional.silu" in (tmp_path / "model.py").read_text()
    nnspec("export", str(SPEC), "-o", "model.onnx")
    assert "logits: float32 [2, 2, 10]" in nnspec("run", "model.onnx", "--random")
    assert json.loads(nnspec("check", str(SPEC), "--json"))["ok"]
    nnspec("render", str(SPEC), "-o", "model.dot")
    dot = (tmp_path / "model.dot").read_text()
    assert "shape=component" in dot  # the plugin's shape for swiglu
    assert 'shape=box style="rounded,filled"' in dot.split("\n\tact ")[1].split("\n")[0]  # squared_relu: the default
    nnspec("render", str(SPEC), "-o", "model.mmd")


def test_load_spec_sees_installed_plugins(fresh_python: Path, tmp_path: Path) -> None:
    code = ("from nnspec.builder import OPS, load_spec, check_spec\nassert 'swiglu' not in OPS\n"
            f"g, _ = check_spec(load_spec({str(SPEC)!r}))\nprint(sorted(n for n in ('swiglu', 'squared_relu') if n in OPS))")
    run = subprocess.run([str(fresh_python), "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "['squared_relu', 'swiglu']", run.stderr


def test_the_plugin_is_not_in_the_environment_it_was_not_installed_in(tmp_path: Path) -> None:
    _fails(_run(sys.executable, "validate", str(SPEC), cwd=tmp_path), "unknown op 'squared_relu'")


# --- local modules: --plugin and NNSPEC_PLUGINS ---------------------------------------------

def _plugin(op: str = "cube", cls: str = "Cube", lowerings: Sequence[str] = ("pytorch", "onnx")) -> str:
    """A one-file plugin: op `op` (y = x^3), its lowerings as functions run when a backend is used."""
    given = ", ".join(f"{b}=_{b}" for b in lowerings)
    return f'''
from typing import ClassVar, Literal
from nnspec.builder import Op, TensorType, plugin_lowerings, register_op

@register_op
class {cls}(Op):
    """Cube: y = x^3.

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["{op}"]
    FAMILY: ClassVar[str] = "activation"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        return {{"y": ins["x"]}}

def _pytorch():
    import torch
    from nnspec.backends.pytorch import TABLE

    @TABLE.register("{op}")
    def lower(e, n):
        return {{"y": e.fn(torch.pow, e.x(), 3)}}

def _onnx():
    from nnspec.backends.onnx import LOWERINGS

    @LOWERINGS.register("{op}")
    def lower(e, n):
        x = e.input("x")
        e.op1("Mul", [x, e.op1("Mul", [x, x])], e.output())

plugin_lowerings({given})
'''


def _spec(tmp_path: Path, op: str = "cube") -> str:
    path = tmp_path / "cubed.yaml"
    path.write_text(f"name: cubed\ninputs: {{x: {{shape: [batch, 4]}}}}\nnodes:\n  c: {{op: {op}, in: x}}\n"
                    "outputs: {y: c}\n")
    return path.name


def test_plugin_option_and_environment_variable_load_local_modules(tmp_path: Path) -> None:
    (tmp_path / "cube_ops.py").write_text(_plugin())
    spec = _spec(tmp_path)
    _fails(_run(sys.executable, "validate", spec, cwd=tmp_path), "unknown op 'cube'")
    assert "ok  cubed.yaml" in _ok(_run(sys.executable, "validate", "--plugin", "cube_ops", spec, cwd=tmp_path))
    assert "ok  cubed.yaml" in _ok(_run(sys.executable, "validate", spec, cwd=tmp_path,
                                        env={"NNSPEC_PLUGINS": "cube_ops"}))
    assert "cubed, 2 nodes" in _ok(_run(sys.executable, "--plugin", str(tmp_path / "cube_ops.py"), "validate",
                                        str(tmp_path / spec), cwd=ROOT))  # a .py file, before the command
    result = json.loads(_ok(_run(sys.executable, "check", "--plugin", "cube_ops", spec, "--json", cwd=tmp_path)))
    assert result["ok"]


def test_a_plugin_that_fails_to_import_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken_ops.py").write_text("raise RuntimeError('boom')\n")
    _fails(_run(sys.executable, "validate", "--plugin", "broken_ops", _spec(tmp_path), cwd=tmp_path),
           "plugin 'broken_ops' failed to import: RuntimeError: boom")
    _fails(_run(sys.executable, "ops", cwd=tmp_path, env={"NNSPEC_PLUGINS": "no_such_plugin"}),
           "plugin 'no_such_plugin' failed to import: ModuleNotFoundError")


def test_an_op_name_clash_names_both_owners(tmp_path: Path) -> None:
    (tmp_path / "relu_again.py").write_text(_plugin("relu", "MyRelu"))
    _fails(_run(sys.executable, "ops", "--plugin", "relu_again", cwd=tmp_path),
           "plugin 'relu_again': op 'relu' is registered twice: by nnspec's built-in ops")
    (tmp_path / "cube_a.py").write_text(_plugin())
    (tmp_path / "cube_b.py").write_text(_plugin())
    _fails(_run(sys.executable, "ops", "--plugin", "cube_a", "--plugin", "cube_b", cwd=tmp_path),
           "plugin 'cube_b': op 'cube' is registered twice: by plugin 'cube_a'")


def test_a_missing_lowering_is_reported_where_the_backend_is_used(tmp_path: Path) -> None:
    (tmp_path / "torch_only.py").write_text(_plugin(lowerings=("pytorch",)))
    (tmp_path / "onnx_only.py").write_text(_plugin(lowerings=("onnx",)))
    spec = _spec(tmp_path)
    _fails(_run(sys.executable, "export", "--plugin", "torch_only", spec, "-o", "m.onnx", cwd=tmp_path),
           "op 'cube' (from plugin 'torch_only') has no ONNX lowering")
    assert not (tmp_path / "m.onnx").exists()
    _fails(_run(sys.executable, "build", "--plugin", "onnx_only", spec, cwd=tmp_path),
           "node 'c'", "op 'cube' (from plugin 'onnx_only') has no PyTorch lowering")


def test_a_plugin_file_does_not_shadow_a_library_and_counts_once(tmp_path: Path) -> None:
    """A file named onnx.py loads under a private module name (the real onnx still imports), and
    `onnx.py` and `./onnx.py` are one plugin, not two whose ops clash."""
    (tmp_path / "mine").mkdir()  # not the working directory, which `python -m` puts first on sys.path
    (tmp_path / "mine" / "onnx.py").write_text(_plugin())
    spec = _spec(tmp_path)
    result = json.loads(_ok(_run(sys.executable, "check", "--plugin", "mine/onnx.py", "--plugin", "./mine/onnx.py", spec,
                                 "--json", cwd=tmp_path)))
    assert result["ok"]


def test_a_plugin_that_exits_at_import_is_a_failure_not_a_success(tmp_path: Path) -> None:
    (tmp_path / "quitter.py").write_text("import sys\nsys.exit(0)\n")
    _fails(_run(sys.executable, "validate", "--plugin", "quitter", _spec(tmp_path), cwd=tmp_path),
           "plugin 'quitter' failed to import: SystemExit")


def test_a_failing_shape_rule_is_the_plugins_error(tmp_path: Path) -> None:
    """An exception in a plugin op's shape rule (or a rule that returns no TensorType) is a located
    error naming the plugin, not an internal error of nnspec."""
    broken = _plugin().replace('return {"y": ins["x"]}', 'return {"y": ins["x"].shape[99]}')
    (tmp_path / "bad_rule.py").write_text(broken)
    _fails(_run(sys.executable, "validate", "--plugin", "bad_rule", _spec(tmp_path), cwd=tmp_path),
           "error[plugin-error]", "node 'c'", "plugin 'bad_rule'", "IndexError")
    (tmp_path / "not_a_type.py").write_text(_plugin().replace('return {"y": ins["x"]}', 'return {"y": 3}'))
    _fails(_run(sys.executable, "summary", "--plugin", "not_a_type", _spec(tmp_path), cwd=tmp_path),
           "plugin 'not_a_type'", "must return a TensorType")
