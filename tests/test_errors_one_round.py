"""Every independent error of a spec in one run: each case in tests/multi_error_specs/ lists,
in ``# expect: LINE:COL CODE NODE`` lines, the full set of errors that validate must print."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnspec.backends.cli import cli

CASES = sorted((Path(__file__).resolve().parent / "multi_error_specs").glob("*.yaml"))
_EXPECT = re.compile(r"# expect: (\d+):(\d+) (\S+) (\S+)")
_ERROR = re.compile(r":(\d+):(\d+): error\[([\w-]+)\]: (?:node '([^']+)')?")


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_every_error_in_one_run(path: Path) -> None:
    expected = {(int(m[1]), int(m[2]), m[3], None if m[4] == "-" else m[4])
                for m in _EXPECT.finditer(path.read_text())}
    assert expected
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    got = {(int(m[1]), int(m[2]), m[3], m[4]) for m in _ERROR.finditer(result.stderr)}
    assert got == expected, result.stderr


def test_a_misspelt_call_key_is_offered_back() -> None:
    path = next(p for p in CASES if p.stem == "block_call_and_params")
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert "there is no param 'repat' to set" in result.stderr and "did you mean 'repeat'?" in result.stderr
