"""The diagrams committed in docs/ are what `python -m nnspec.backends.graphviz.docs` draws today: a
change to the drawing (labels, tooltips, layout options) comes with the regenerated files."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from nnspec.backends.graphviz.docs import DIAGRAMS, render_docs

ROOT = Path(__file__).resolve().parents[1]
HOW = ".venv/bin/python -m nnspec.backends.graphviz.docs"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    render_docs(out)
    return out


@pytest.mark.parametrize("name", [d.file for d in DIAGRAMS])
def test_committed_diagram_is_fresh(name: str, fresh: Path) -> None:
    committed = (ROOT / "docs" / name).read_text()
    now = (fresh / name).read_text()
    if committed != now:
        diff = difflib.unified_diff(committed.replace(">", ">\n").splitlines(), now.replace(">", ">\n").splitlines(),
                                    "committed", "now", n=1, lineterm="")
        pytest.fail(f"docs/{name} is stale; regenerate it with: {HOW}\n" + "\n".join(list(diff)[:30]))


def test_every_diagram_in_docs_is_generated() -> None:
    assert {p.name for p in (ROOT / "docs").glob("*.svg")} == {d.file for d in DIAGRAMS}
