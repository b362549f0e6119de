"""Writing a diagram to a file, the format picked by the suffix: ``.svg .png .pdf`` (laid out
by Graphviz's ``dot`` program), ``.dot`` (DOT text), ``.mmd`` (Mermaid) and ``.html`` (a
self-contained page around the SVG). ``.dot`` and ``.mmd`` need no Graphviz.
"""

from __future__ import annotations

import os
from pathlib import Path

import networkx as nx

from nnspec.backends.clikit import atomic_output

from .dot import Options, Rankdir, dot_of, nodes_dot
from .layout import GraphvizNotFound, LayoutBudget, LayoutTimeout, dot_program, layout_budget, run_dot
from .mermaid import to_mermaid
from .page import Drawing, html_page
from .view import Depth, Item, View, as_graph, build_view

__all__ = ["FORMATS", "NEEDS_DOT", "GraphvizNotFound", "LayoutBudget", "LayoutTimeout", "diagram_bytes",
           "dot_program", "render", "run_dot"]  # the layout names from .layout

FORMATS = {".svg": "SVG image", ".png": "PNG image", ".pdf": "PDF document", ".dot": "Graphviz DOT text",
           ".mmd": "Mermaid flowchart", ".html": "web page with the SVG and each node's details"}
"""Output suffixes and what each writes."""

NEEDS_DOT = frozenset({".svg", ".png", ".pdf", ".html"})
"""Suffixes laid out by Graphviz's ``dot`` program."""

def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        raise ValueError(f"cannot tell the format of '{path.name}': give the file one of the suffixes {known}")
    return suffix


MAX_PAGE_LEVELS = 8
"""At most this many depths of one drawing go into an .html page (each is laid out by ``dot``)."""


def diagram_bytes(view: View, opt: Options, suffix: str, graph: nx.MultiDiGraph | None = None) -> bytes:
    """The file contents for `suffix` (one of `FORMATS`)."""
    if suffix == ".mmd":
        return to_mermaid(view, opt).encode("utf-8")
    source: str = dot_of(view, opt).source
    if suffix == ".dot":
        return source.encode("utf-8")
    if suffix == ".html":
        return _page(view, opt, graph).encode("utf-8")
    return run_dot(source, suffix[1:])


def _svg(view: View, opt: Options) -> str:
    return run_dot(dot_of(view, opt, edge_ids=True).source, "svg").decode("utf-8")


def _page(view: View, opt: Options, graph: nx.MultiDiGraph | None) -> str:
    """The .html page: the drawing at every depth (up to `MAX_PAGE_LEVELS`), and the node of each
    block folded on its own, so that the page folds and opens blocks one by one."""
    if graph is None:  # one drawing, its depth only
        svg = _svg(view, opt)
        return html_page(view, svg, [Drawing(view, svg)], opt=opt)
    depths = sorted({*range(min(view.max_depth, MAX_PAGE_LEVELS - 1) + 1), view.depth})
    levels = [Drawing(v, _svg(v, opt)) for v in
              (view if d == view.depth else build_view(graph, d, view.unroll) for d in depths)]
    blocks = _folded_blocks(graph, levels[-1].view)
    blocks_svg = run_dot(nodes_dot(view.name, blocks, opt).source, "svg").decode("utf-8") if blocks else ""
    return html_page(view, next(d.svg for d in levels if d.view is view), levels, blocks, blocks_svg, opt)


def _folded_blocks(graph: nx.MultiDiGraph, deepest: View) -> list[Item]:
    """The folded node of every cluster of `deepest`: one view per nesting level, with every
    cluster of that level folded (a cluster's node does not depend on what else is folded)."""
    out: list[Item] = []
    for level in sorted({g.level for g in deepest.groups}):
        paths = [g.path for g in deepest.groups if g.level == level]
        folded = build_view(graph, deepest.depth, deepest.unroll, folded=paths)
        keys = {f"block/{p}" for p in paths}
        out.extend(i for i in folded.items if i.key in keys)
    return out


def render(spec_or_graph: object, path: str | Path, depth: Depth = None, rankdir: Rankdir = "TB",
           shapes: bool = True, params: bool = True, *, unroll: bool = False, signature: str | None = None,
           layout: LayoutBudget | None = None) -> Path:
    """Draw a spec's graph into `path`, the format picked by its suffix (see `FORMATS`).

    The file is written through a temporary file and renamed, so a failure leaves no
    half-written file and never replaces a good one. Arguments are those of `to_graphviz`, and
    `layout`: the seconds every ``dot`` layout of this render may take together (default
    `Limits.max_layout_seconds`); its ``notes`` say where the cheaper layout was drawn instead.

    Returns:
        The path written.

    Raises:
        ValueError: for an unknown suffix or a path in no directory (before anything is read), a bad
            depth or rankdir.
        GraphvizNotFound: for a format that needs ``dot`` when it is missing (before anything is read).
        LayoutTimeout: when even the cheapest layout runs past the budget.
        SpecError: when the spec does not check.
    """
    target = Path(path)
    suffix = _suffix(target)
    if target.is_dir():
        raise ValueError(f"'{target}' is a directory; give a file name")
    if not target.parent.is_dir():
        raise ValueError(f"directory '{target.parent}' does not exist")
    if suffix in NEEDS_DOT:
        dot_program(suffix)
    opt = Options(rankdir, shapes, params)
    graph = as_graph(spec_or_graph, signature)
    view = build_view(graph, depth, unroll)
    with layout_budget(layout or LayoutBudget()):
        data = diagram_bytes(view, opt, suffix, graph)
    with atomic_output(target) as tmp:
        tmp.write_bytes(data)
        _readable(tmp)
    return target


def _readable(path: Path) -> None:
    """Give a temporary file (created 0600) the permissions a new file would get (umask applied)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)
