"""Render the README's diagrams into docs/: ``python -m nnspec.backends.graphviz.docs [OUT_DIR]``.

Each diagram is one row of `DIAGRAMS` (spec, file name, options), so the README's pictures
always come from the seed specs and this one command.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .dot import Rankdir
from .render import render

__all__ = ["DIAGRAMS", "Diagram", "main", "render_docs"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Diagram:
    """One README diagram: the spec it draws, the file it goes to, and how it is drawn."""

    spec: str
    file: str
    rankdir: Rankdir = "TB"


DIAGRAMS = (
    Diagram("specs/lenet5.yaml", "lenet5.svg"),
    Diagram("specs/transformer.yaml", "transformer.svg"),
    Diagram("specs/bert.yaml", "bert.svg"),
    Diagram("specs/llama.yaml", "llama.svg"),
)


def render_docs(out_dir: Path) -> list[Path]:
    """Render every diagram of `DIAGRAMS` into `out_dir` (created if missing); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [render(ROOT / d.spec, out_dir / d.file, rankdir=d.rankdir) for d in DIAGRAMS]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print(__doc__.strip().splitlines()[0])
        return 0 if args and args[0] in ("-h", "--help") else 2
    for path in render_docs(Path(args[0]) if args else ROOT / "docs"):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
