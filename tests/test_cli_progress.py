"""Progress on long work: a bar of the bytes written (and a spinner while weights are
initialised) on a terminal; nothing extra when piped or with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = str(ROOT / "specs" / "lstm_sentiment.yaml")  # 6.3M parameters: 25 MB of weights


def _nnspec(*args: str, progress: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NNSPEC_PROGRESS": progress, "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "nnspec", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, check=False, timeout=300)


@pytest.mark.parametrize(("command", "label"), [("export", "writing model"), ("build", "writing weights")])
def test_a_terminal_sees_the_bytes_written(command: str, label: str, tmp_path: Path) -> None:
    out = ["-o", "m.onnx"] if command == "export" else ["--weights", "w.safetensors"]
    run = _nnspec(command, SPEC, *out, progress="always", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert label in run.stderr and "25.3 MB" in run.stderr and "initialising 25.3 MB of weights" in run.stderr


@pytest.mark.parametrize("command", ["export", "build"])
def test_piped_or_json_output_has_nothing_extra(command: str, tmp_path: Path) -> None:
    out = ["-o", "m.onnx"] if command == "export" else ["--weights", "w.safetensors"]
    piped = _nnspec(command, SPEC, *out, progress="auto", cwd=tmp_path)  # stderr is a pipe here
    assert piped.returncode == 0 and "writing" not in piped.stderr and "\x1b" not in piped.stderr, piped.stderr
    as_json = _nnspec(command, SPEC, *out, "--json", progress="always", cwd=tmp_path)
    assert as_json.returncode == 0 and "writing" not in as_json.stderr and "initialising" not in as_json.stderr
    assert json.loads(as_json.stdout)["ok"]
