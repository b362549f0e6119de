"""The Graphviz back end: architecture diagrams from the checked graph.

    >>> from nnspec.backends.graphviz import to_graphviz, render
    >>> dg = to_graphviz("specs/lenet5.yaml", rankdir="LR")   # graphviz.Digraph
    >>> render("specs/transformer.yaml", "transformer.svg")   # the suffix picks the format

Blocks are clusters nested as the spec nests them; ``depth`` folds deeper calls into one
node each; a repeated call is drawn once and marked ``N×`` (``unroll=True`` draws every copy).
The op table of this back end is `style.SHAPES` (a node shape per op); colours go by family.
"""

from __future__ import annotations

import graphviz

from .dot import Options, Rankdir, dot_of
from .mermaid import to_mermaid
from .render import FORMATS, GraphvizNotFound, render
from .style import SHAPES
from .view import ALL, Depth, View, as_graph, build_view

__all__ = ["ALL", "FORMATS", "SHAPES", "Depth", "GraphvizNotFound", "Options", "View", "build_view", "render",
           "to_graphviz", "to_mermaid"]


def to_graphviz(spec_or_graph: object, depth: Depth = None, rankdir: Rankdir = "TB", shapes: bool = True,
                params: bool = True, *, unroll: bool = False, signature: str | None = None) -> graphviz.Digraph:
    """Draw a spec's checked graph as a Graphviz digraph.

    Args:
        spec_or_graph: a checked graph (`nnspec.builder.compile_graph`), a `Spec`, or what
            `nnspec.builder.load_spec` reads (a path, spec text or a mapping).
        depth: how many levels of block calls are drawn open (0: every top-level call is one
            node); ``"all"`` opens every call; None picks the deepest level that stays legible
            (at most `view.AUTO_MAX_ITEMS` op and block nodes).
        rankdir: ``TB`` or ``LR``.
        shapes: label edges (and inputs, outputs, folded blocks) with tensor types.
        params: show parameter counts.
        unroll: draw every copy of a repeated call instead of one copy marked ``N×``.
        signature: the signature to draw when given a spec (default: the main graph).

    Returns:
        The digraph; ``.source`` is deterministic DOT text, ``.render()``/``.pipe()`` lay it out.

    Raises:
        SpecError: when given a spec that does not check.
        ValueError: for a bad depth or rankdir.
    """
    opt = Options(rankdir, shapes, params)
    return dot_of(build_view(as_graph(spec_or_graph, signature), depth, unroll), opt)
