"""Golden DOT files: the drawing of every seed spec, byte for byte.

A change to a spec or to the drawing shows up here as a diff. When the change is meant,
regenerate the files on purpose and review them in the commit:

    NNSPEC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_graphviz_golden.py
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import pytest

from nnspec.backends.graphviz import to_graphviz

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
UPDATE = os.environ.get("NNSPEC_UPDATE_GOLDEN") == "1"
HOW = "NNSPEC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_graphviz_golden.py"

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    **{p.stem: (p.name, {}) for p in sorted((ROOT / "specs").glob("*.y*ml"))},
    "transformer_depth0": ("transformer.yaml", {"depth": 0}),
    "lenet5_lr_plain": ("lenet5.yaml", {"rankdir": "LR", "shapes": False, "params": False}),
}
"""Golden name -> (spec file in specs/, to_graphviz options): every seed spec as drawn by
default, plus the folded and the plain option sets."""


@pytest.mark.parametrize("name", list(CASES))
def test_dot_matches_golden(name: str) -> None:
    spec, options = CASES[name]
    if not (ROOT / "specs" / spec).exists():
        pytest.skip(f"specs/{spec} is not there")
    text = to_graphviz(ROOT / "specs" / spec, **options).source
    path = GOLDEN / f"{name}.dot"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"no golden file {path.relative_to(ROOT)}; create it with: {HOW}")
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = difflib.unified_diff(expected.splitlines(), text.splitlines(), "golden", "now", lineterm="", n=1)
        shown = "\n".join(list(diff)[:80])
        pytest.fail(f"{path.relative_to(ROOT)} differs from the drawing; if that is meant, run: {HOW}\n{shown}")


def test_no_stale_golden_files() -> None:
    stale = sorted(p.name for p in GOLDEN.glob("*.dot") if p.stem not in CASES)
    assert stale == [], f"golden files with no case (a spec was removed or renamed?): {stale}"
