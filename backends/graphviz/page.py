"""The HTML writer: one self-contained page (no network, no external file), an interactive
viewer of the SVG drawing:

- pan (drag) and zoom (wheel, ``+``/``-``), ``fit`` to the window (how it opens) and ``1:1``;
- search by node id or op: matches are marked, Enter steps through them and selects each;
- blocks folded and opened one by one: a click on a cluster folds it into its block's node, a
  click on a folded block opens it; ``fold all``, ``open all`` and a level up or down for all
  at once (see `viewer` for how the page does it with Graphviz's drawings inside);
- a side panel with every node's details (arguments, shapes, parameters, initialisers), shown
  when the pointer rests on a node and pinned by a click.

Without JavaScript the page shows the drawing at its depth and lists every node's details.
``page.html#c1`` opens with node ``c1`` selected. Once its script has drawn the page it sets
``data-bound`` (how many nodes shown have details), ``data-depth`` (the depth of the drawing
shown) and ``data-folded`` (the clusters folded in it) on ``<body>``, which tests read.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .dot import Options, details, node_id
from .style import fmt_count
from .view import Group, Item, View, shown
from .viewer import SCRIPT, STYLE

__all__ = ["Drawing", "html_page"]


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _detail(item: Item) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in details(item))
    nid = node_id(item)
    return (f'<section class="detail" id="detail-{_e(nid)}" data-node="{_e(nid)}" data-op="{_e(item.op or item.kind)}">'
            f"<h2>{_e(item.full_id)}</h2><table>{rows}</table></section>")


def _mark_blocks(svg: str, items: View | Sequence[Item]) -> str:
    """Give the SVG groups of folded blocks the class ``block`` (a click opens them)."""
    for item in items.items if isinstance(items, View) else items:
        if item.kind == "block":
            nid = node_id(item).replace("-", "&#45;")  # as Graphviz writes the id
            svg = svg.replace(f'<g id="{nid}" class="node">', f'<g id="{nid}" class="node block">')
    return svg


def _inline_svg(svg: str) -> str:
    """The SVG document as an element to inline: no XML declaration, no DOCTYPE."""
    svg = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg)
    return svg.strip()


@dataclass(frozen=True)
class Drawing:
    """A view and Graphviz's SVG of it, drawn with edge ids (``dot_of(view, opt, edge_ids=True)``)."""

    view: View
    svg: str


def _call_depth(group: Group, by_key: dict[str, Group]) -> int:
    """How many block calls hold the cluster's contents (a copy of an unrolled repeat is its call's)."""
    depth, g = 0, group
    while True:
        depth += g.index is None
        if g.parent is None:
            return depth
        g = by_key[g.parent]


def _data(levels: Sequence[View], blocks: Iterable[Item], opt: Options) -> dict[str, Any]:
    """What the script needs to fold and open clusters (see `viewer`): the clusters it can fold,
    each with its folded node, and per depth each item's cluster and each edge's ends and label."""
    deepest = max(levels, key=lambda v: v.depth)
    by_key = {g.key: g for g in deepest.groups}
    folded = {i.key for i in blocks}
    groups = {g.key: {"parent": g.parent, "depth": _call_depth(g, by_key), "block": f"block/{g.path}"}
              for g in deepest.groups if f"block/{g.path}" in folded}

    def edges(v: View) -> list[list[str]]:
        # label parts as `dot._edge` draws them: the shape (not on an edge into an output), the
        # producer's port where it has several, the consumer's ports where it has several
        return [[e.tail, e.head, e.tensor, shown(e.type) if opt.shapes and v.item(e.head).kind != "output" else "",
                 e.tail_port or "", ", ".join(e.head_ports)] for e in v.edges]

    return {"rankdir": opt.rankdir, "groups": groups,
            "levels": {str(v.depth): {"groups": [g.key for g in v.groups if g.key in groups],
                                      "items": {i.key: i.group for i in v.items}, "edges": edges(v)}
                       for v in sorted(levels, key=lambda v: v.depth)}}


def _json_script(element_id: str, value: object) -> str:
    """`value` as JSON in a script element: ``<`` escaped, so no text in it ends the element."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def html_page(view: View, svg: str, levels: Sequence[Drawing] = (), blocks: Sequence[Item] = (), blocks_svg: str = "",
              opt: Options | None = None) -> str:
    """The page for `view`, whose drawing `svg` is Graphviz's SVG of the same view.

    Args:
        view: the view drawn when the page opens.
        svg: its SVG.
        levels: the same graph's drawing at each depth the page can show; `view` is used where
            its depth is not among them.
        blocks: for each cluster the page can fold, the node of its block folded (the view built
            with its path in ``folded``); without them, clusters are not folded one by one.
        blocks_svg: Graphviz's SVG of `blocks` (``dot.nodes_dot``), where the page takes their drawing.
        opt: the options the drawings were made with.
    """
    opt = opt or Options()
    sub = f"signature {view.signature} · " if view.signature else ""
    facts = (f"{sub}{view.params:,} params ({fmt_count(view.params)}) · blocks drawn to depth {view.depth} "
             f"of {view.max_depth}{' · repeats unrolled' if view.unroll else ''}")
    doc = f"<p>{_e(view.doc)}</p>" if view.doc else ""
    layers = {d.view.depth: d for d in levels}
    layers.setdefault(view.depth, Drawing(view, svg))
    views = [layers[d].view for d in sorted(layers)]
    items = {i.key: i for v in views for i in v.items}
    for item in blocks:
        items.setdefault(item.key, item)
    panel = "\n".join(_detail(i) for i in items.values())
    templates = "\n".join(f'<template class="level" data-depth="{d}">{_inline_svg(_mark_blocks(x.svg, x.view))}</template>'
                          for d, x in sorted(layers.items()))
    catalog = _inline_svg(_mark_blocks(blocks_svg, blocks)) if blocks else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="nnspec">
<title>{_e(view.name)} · nnspec diagram</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>{_e(view.name)}</h1>{doc}<p>{_e(facts)}</p></header>
<main>
<div id="view">
<div id="tools">
<button id="fit" title="Fit the drawing to the window">fit</button><button id="one" title="Actual size">1:1</button>
<button id="zin" title="Zoom in (or the wheel)">+</button><button id="zout" title="Zoom out">&minus;</button>
<button id="foldall" title="Fold every block">fold all</button>
<button id="collapse" title="Fold the deepest open blocks (or click a block's frame to fold it)">collapse</button>
<button id="expand" title="Open the next level of blocks (or click a folded block to open it)">expand</button>
<button id="openall" title="Open every block">open all</button>
<span id="depth"></span>
<input id="q" type="search" placeholder="search node id or op, Enter: next" aria-label="search">
<span id="found"></span>
</div>
<div id="diagram" data-depth="{view.depth}">
{_inline_svg(_mark_blocks(svg, view))}
</div>
</div>
{templates}
<template id="nn-blocks">{catalog}</template>
{_json_script("nn-data", _data(views, blocks, opt))}
<aside id="panel">
<p class="hint" id="hint">Rest the pointer on a node for its arguments; click to pin them. Click a block's frame
to fold it, a folded block to open it.</p>
{panel}
</aside>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""
