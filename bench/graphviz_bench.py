"""How long BERT-base and GPT-2 small take to draw fully expanded (every block open, every
layer unrolled): compile, build the DOT text, and lay it out with Graphviz's ``dot``.

    .venv/bin/python bench/graphviz_bench.py [--repeat 3] [--json]

Each step is timed separately (best of --repeat); "total" is spec file to SVG file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nnspec.backends.graphviz import build_view, render, to_graphviz  # noqa: E402
from nnspec.backends.graphviz.render import run_dot  # noqa: E402
from nnspec.builder import compile_graph, load_spec  # noqa: E402

SPECS = {"BERT-base": "specs/bert.yaml", "GPT-2 small": "specs/gpt.yaml"}


T = TypeVar("T")


def best(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """The best time of `repeat` calls, and what the last call returned."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench(name: str, spec_path: str, repeat: int) -> dict[str, object]:
    path = ROOT / spec_path
    t_compile, graph = best(lambda: compile_graph(load_spec(path)), repeat)
    t_dot, dg = best(lambda: to_graphviz(graph, depth="all", unroll=True), repeat)
    source = dg.source
    t_svg, _ = best(lambda: run_dot(source, "svg"), repeat)
    t_png, _ = best(lambda: run_dot(source, "png"), repeat)
    with tempfile.TemporaryDirectory() as tmp:
        t_total, _ = best(lambda: render(path, Path(tmp) / "out.svg", depth="all", unroll=True), repeat)
    drawn = build_view(graph, depth="all", unroll=True)
    return {"model": name, "graph nodes": len(graph), "drawn nodes": len(drawn.items),
            "compile s": t_compile, "DOT text s": t_dot, "dot -Tsvg s": t_svg, "dot -Tpng s": t_png,
            "total (spec to .svg) s": t_total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    rows = [bench(name, spec, args.repeat) for name, spec in SPECS.items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
