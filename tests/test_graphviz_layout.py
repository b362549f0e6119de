"""Legibility of the laid-out diagrams, measured on Graphviz's own layout (``dot -Tjson``):
no two nodes overlap, no text (edge labels, cluster titles) lies on a node or on other text,
and no text is smaller than 9 pt (12 px in a PNG at 100%)."""

from __future__ import annotations

import json
import shutil
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from nnspec.backends.graphviz import Depth, to_graphviz
from nnspec.backends.graphviz.dot import Rankdir
from nnspec.backends.graphviz.render import run_dot

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(p.name for p in (ROOT / "specs").glob("*.y*ml"))
MIN_PT = 9.0
SLACK = 0.5  # points of touching that still reads as apart

pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in points


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] - SLACK and b[0] < a[2] - SLACK and a[1] < b[3] - SLACK and b[1] < a[3] - SLACK


def _texts(draw: list[dict[str, Any]], owner: str) -> list[tuple[str, Box, float]]:
    """Text boxes of an xdot drawing: (text, box, font size)."""
    out, size = [], 14.0
    for op in draw:
        if op["op"] == "F":
            size = float(op["size"])
        elif op["op"] == "T":
            x, y = op["pt"]
            w = float(op["width"])
            x0 = {"l": x, "c": x - w / 2, "r": x - w}[op["align"]]
            out.append((f"{owner}: {op['text']}", (x0, y - 0.2 * size, x0 + w, y + 0.8 * size), size))
    return out


def layout(source: str) -> tuple[dict[str, Box], list[tuple[str, Box, float]], list[tuple[str, Box, float]]]:
    """Node boxes by name, edge-label texts, and every other text (node and cluster labels)."""
    data = json.loads(run_dot(source, "json"))
    nodes: dict[str, Box] = {}
    edge_texts, other_texts = [], []
    for obj in data.get("objects", []):
        if "nodes" in obj or "bb" in obj:  # a subgraph: a cluster's title is its text
            other_texts.extend(_texts(obj.get("_ldraw_", []), f"cluster {obj['name']}"))
            continue
        x, y = map(float, obj["pos"].split(","))
        w, h = float(obj["width"]) * 72, float(obj["height"]) * 72
        nodes[obj["name"]] = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
        other_texts.extend(_texts(obj.get("_ldraw_", []), obj["name"]))
    for e in data.get("edges", []):
        edge_texts.extend(_texts(e.get("_ldraw_", []), f"edge {e['tail']}->{e['head']}"))
    other_texts.extend(_texts(data.get("_ldraw_", []), "title"))
    return nodes, edge_texts, other_texts


def problems(source: str) -> list[str]:
    nodes, edge_texts, other_texts = layout(source)
    found = [f"nodes {a} and {b} overlap" for (a, ba), (b, bb) in combinations(nodes.items(), 2) if _overlap(ba, bb)]
    for text, box, _ in edge_texts:
        found.extend(f"'{text}' lies on node {n}" for n, nb in nodes.items() if _overlap(box, nb))
    cluster_titles = [t for t in other_texts if t[0].startswith(("cluster", "title"))]
    for text, box, _ in cluster_titles:
        found.extend(f"'{text}' lies on node {n}" for n, nb in nodes.items() if _overlap(box, nb))
    loose = edge_texts + cluster_titles
    found.extend(f"'{a}' and '{b}' overlap" for (a, ba, _), (b, bb, _) in combinations(loose, 2) if _overlap(ba, bb))
    found.extend(f"'{t}' is {s} pt" for t, _, s in edge_texts + other_texts if s < MIN_PT)
    return found


@pytest.mark.parametrize("rankdir", ["TB", "LR"])
@pytest.mark.parametrize("spec", SPECS)
def test_seed_diagrams_are_legible(spec: str, rankdir: Rankdir) -> None:
    source = to_graphviz(ROOT / "specs" / spec, rankdir=rankdir).source
    assert problems(source) == []


@pytest.mark.parametrize("depth", [0, "all"])
@pytest.mark.parametrize("spec", ["transformer.yaml", "bert.yaml"])
def test_folded_and_unrolled_diagrams_are_legible(spec: str, depth: Depth) -> None:
    if not (ROOT / "specs" / spec).exists():
        pytest.skip(f"specs/{spec} is not there")
    source = to_graphviz(ROOT / "specs" / spec, depth=depth, unroll=depth == "all").source
    assert problems(source) == []


def test_the_check_sees_overlaps() -> None:
    """The checker itself: two nodes pinned to one spot, and tiny text, are reported."""
    source = 'digraph { layout=neato; overlap=true; a [pos="0,0!" label="aaaa"]; b [pos="0.2,0!" label="bbbb" fontsize=6] }'
    found = problems(source)
    assert any("nodes a and b overlap" in p for p in found)
    assert any("is 6.0 pt" in p for p in found)
