"""The writing commands under a full disk and under signals, run as real processes.

A full disk (a file-size limit, which fails writes as a full disk does) is a clear exit 1 that
keeps the old file and leaves no temporary file. SIGTERM, SIGHUP and SIGINT during a large export
end the process with exit 128 + signal, and no temporary file left behind.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

NNSPEC = [sys.executable, "-c", "from nnspec.backends.cli import main; main()"]
ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs/lenet5.yaml"
BIG = """name: big
inputs: {x: {shape: [batch, 4096]}}
nodes:
  a: {op: linear, in: x, out_features: 8192}
  b: {op: linear, in: a, out_features: 4096}
outputs: {y: b}
"""
"""67 M parameters: writing them takes long enough to be interrupted."""


def _small_files() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


@pytest.mark.parametrize("args", [
    ["export", str(SPEC), "-o", "{dir}/model.onnx"],
    ["export", str(SPEC), "-o", "{dir}/model.onnx", "--external-data"],
    ["build", str(SPEC), "--weights", "{dir}/model.safetensors"],
    ["schema", "-o", "{dir}/model.json"],
], ids=["export", "external-data", "build-weights", "schema"])
def test_full_disk_is_a_clear_error(args: list[str], tmp_path: Path) -> None:
    target = Path(args[-1 if args[-1].startswith("{") else -2].format(dir=tmp_path))
    target.write_bytes(b"the good file")
    cmd = [*NNSPEC, *(a.format(dir=tmp_path) for a in args)]
    result = subprocess.run(cmd, cwd=ROOT, preexec_fn=_small_files, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "error: cannot write" in result.stderr and "internal error" not in result.stderr, result.stderr
    assert target.read_bytes() == b"the good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def _interrupt(cmd: list[str], folder: Path, signum: int) -> subprocess.CompletedProcess[str]:
    """Start `cmd`, send `signum` as soon as a temporary file appears in `folder`, and wait."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if any(p.name.endswith(".tmp") for p in folder.iterdir()):
            proc.send_signal(signum)
            break
        time.sleep(0.005)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow),
                                    pytest.param(signal.SIGINT, marks=pytest.mark.slow)], ids=["SIGTERM", "SIGHUP", "SIGINT"])
@pytest.mark.parametrize("extra", [[], pytest.param(["--external-data"], marks=pytest.mark.slow)],
                         ids=["inline", "external-data"])
def test_signal_during_export_leaves_no_temporary_file(signum: int, extra: list[str], tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text(BIG)
    out = tmp_path / "out"
    out.mkdir()
    result = _interrupt([*NNSPEC, "export", str(spec), "-o", str(out / "model.onnx"), *extra], out, signum)
    assert result.returncode == 128 + signum, result.stderr
    assert "internal error" not in result.stderr
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_signal_during_build_weights_leaves_no_temporary_file(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text(BIG)
    out = tmp_path / "out"
    out.mkdir()
    result = _interrupt([*NNSPEC, "build", str(spec), "--weights", str(out / "w.safetensors")], out, signal.SIGTERM)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert list(out.iterdir()) == []


def test_a_swallowed_signal_exit_still_stops_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal can land in library code that swallows its SystemExit (a bare ``except`` in an extension
    module's import, met while weights are made during the write): the rename still never happens."""
    from nnspec.backends import outputs

    monkeypatch.setattr(outputs, "_ending", None)
    target = tmp_path / "model.onnx"
    with pytest.raises(SystemExit) as exc, outputs.atomic_output(target, (".onnx",)) as tmp:
        tmp.write_bytes(b"half a model")
        with contextlib.suppress(SystemExit):  # as that library code does
            outputs._on_signal(signal.SIGTERM, None)
    assert exc.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
