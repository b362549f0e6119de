"""The DOT writer: a `View` to a `graphviz.Digraph` with HTML-like labels, nested clusters,
shape-labelled edges and a legend. The output is a pure function of the view: same spec,
same bytes."""

from __future__ import annotations

import html
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal

import graphviz

from .style import BORDER, CLUSTER_FILLS, COLORS, FONT, fmt_count, look_of
from .view import Edge, Group, Item, View, shown

__all__ = ["MAX_BOUNDARY", "Options", "details", "dot_of", "edge_id", "node_id", "nodes_dot", "ties"]

Rankdir = Literal["TB", "LR"]
TIE_COLOR = "#AA3377"
LEGEND = "legend/families"  # a key no node id can take (ids have no slash)
MAX_BOUNDARY = 5  # in/out types listed on a folded block before "…"


@dataclass(frozen=True)
class Options:
    """What a drawing shows beyond its structure.

    Attributes:
        rankdir: TB (top to bottom) or LR (left to right, for long sequential nets).
        shapes: tensor types on edges, inputs, outputs and folded blocks.
        params: parameter counts on nodes and clusters.
    """

    rankdir: Rankdir = "TB"
    shapes: bool = True
    params: bool = True

    def __post_init__(self) -> None:
        if self.rankdir not in ("TB", "LR"):
            raise ValueError(f"rankdir must be TB or LR, got {self.rankdir!r}")


def node_id(item: Item) -> str:
    """The element id the node gets in SVG (Graphviz numbers its own ``node1``…, so prefix ours)."""
    return f"nn-{item.key}"


def edge_id(index: int) -> str:
    """The element id of the `index`-th edge of a view in SVG drawn with ``edge_ids``."""
    return f"nn-edge/{index}"


def _e(text: str) -> str:
    return html.escape(text, quote=False)


def _small(text: str) -> str:
    return f'<font point-size="9">{text}</font>'


def _params_line(n: int) -> str:
    return _small(f"{fmt_count(n)} params")


def _label(item: Item, opt: Options) -> str:
    lines = [f"<b>{_e(item.title)}</b>"]
    if item.kind in ("input", "output"):
        if opt.shapes:
            lines.append(_small(_e(item.label)))
    elif item.kind == "op":
        op = "" if item.title == item.op else item.op  # a node named after its op says it once
        if op or item.label:
            lines.append(_e(f"{op} {item.label}".strip()))
        if opt.params and item.params:
            lines.append(_params_line(item.params))
        lines.extend(f'<font point-size="9" color="{TIE_COLOR}"><i>{_e(t)}</i></font>' for t in ties(item))
    else:
        lines.append(_e(item.op) + (f" <b>×{item.repeat}</b>" if item.repeat else ""))
        if opt.shapes:
            for side, types in (("in", item.inputs), ("out", item.outputs)):
                shown = [*types[:MAX_BOUNDARY], *(["…"] if len(types) > MAX_BOUNDARY else [])]
                lines.extend(_small(_e(f"{side}  {t}")) for t in shown)
        if opt.params:
            lines.append(_params_line(item.params))
    return "<" + "<br/>".join(lines) + ">"


def ties(item: Item) -> list[str]:
    """One line per tied weight of an op item (``weight tied to src_embed``).

    A tie is written on the node rather than drawn as an edge: a tied head sits at the far
    end of the graph from its embedding, and a line between them would cross the drawing.
    """
    if item.node is None:
        return []
    return [f"{w} tied to {owner}" + ("" if ow == w else f".{ow}") for w, (owner, ow) in sorted(item.node.ties.items())]


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def details(item: Item) -> list[tuple[str, str]]:
    """Everything known about an item, as (field, value) rows: ids, op, every argument, types, weights."""
    rows = [("id", item.full_id)]
    if item.stack > 1:
        rows.append(("copies", f"drawn once for {item.stack} copies (ids differ in the copy index)"))
    rows.append(("op", item.op if item.kind != "block" else f"block {item.op}"))
    n = item.node
    if item.kind == "block":
        if item.repeat:
            rows.append(("repeat", str(item.repeat)))
        rows.extend(("in", t) for t in item.inputs)
        rows.extend(("out", t) for t in item.outputs)
        rows.append(("nodes", str(len(item.members))))
    elif item.kind == "output":
        rows.append(("type", item.label))
    elif n is not None and n.model is None:
        rows.append(("type", n.outputs["y"].describe()))
    elif n is not None and n.model is not None:
        if n.model.doc:
            rows.append(("doc", n.model.doc))
        # an argument left unset (None: no value, a derived default) says nothing worth a row
        rows.extend((f"arg {k}", _fmt(v)) for k, v in n.model.args().items() if v is not None)
        rows.extend((f"in {p}", f"{t.describe()} ← {n.bindings[p]}") for p, t in n.inputs.items())
        rows.extend((f"out {p}", t.describe()) for p, t in n.outputs.items())
        rows.extend((f"weight {w}", "×".join(map(str, s)) + (f", init {n.inits[w]}" if w in n.inits else ""))
                    for w, s in n.weights.items())
        rows.extend((f"tied {w}", f"{o}.{ow}") for w, (o, ow) in n.ties.items())
        if n.pos.line:  # the file's name only, so the same spec gives the same bytes from any directory
            rows.append(("source", f"{PurePath(n.pos.file).name}:{n.pos.line}:{n.pos.col}"))
    if item.kind in ("op", "block"):
        rows.append(("params", f"{item.params:,}"))
    return rows


def _tooltip(item: Item) -> str:
    text = "\n".join(f"{k}: {v}" for k, v in details(item))
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _node(dg: graphviz.Digraph, item: Item, opt: Options) -> None:
    look = look_of(item.kind, item.op, item.family, item.repeat)
    attrs = {"shape": look.shape, "style": look.style, "fillcolor": look.fill, "id": node_id(item),
             "tooltip": _tooltip(item)}
    if item.kind == "block":
        attrs["margin"] = "0.2,0.1"  # room for box3d's depth and the double border
    if look.peripheries != 1:
        attrs["peripheries"] = str(look.peripheries)
    dg.node(item.key, _label(item, opt), **attrs)


def _cluster_label(group: Group, opt: Options) -> str:
    parts = [f"<b>{_e(group.title)}</b>", _e(group.block)]
    if group.repeat:
        parts.append(f'<font point-size="14"><b>{group.repeat}×</b></font>')
    if opt.params and group.params:
        parts.append(_small(f"{fmt_count(group.params)} params"))
    return "<" + "  ".join(parts) + ">"


def _cluster(dg: graphviz.Digraph, view: View, group: Group, opt: Options) -> None:
    with dg.subgraph(name=f"cluster_{group.path}") as sub:
        sub.attr(label=_cluster_label(group, opt), id=f"nn-{group.key}", style="rounded,filled",
                 fillcolor=CLUSTER_FILLS[(group.level - 1) % len(CLUSTER_FILLS)],
                 color="#333333" if group.repeat else "#999999", penwidth="1.6" if group.repeat else "1",
                 labeljust="l", tooltip=f"{group.path}: block {group.block}")
        _body(sub, view, group.key, opt)


def _body(dg: graphviz.Digraph, view: View, parent: str | None, opt: Options) -> None:
    groups, items = view.children(parent)
    for item in items:
        _node(dg, item, opt)
    for group in groups:
        _cluster(dg, view, group, opt)


def _edge(dg: graphviz.Digraph, view: View, edge: Edge, opt: Options, eid: str | None) -> None:
    head = view.item(edge.head)
    parts = []
    if opt.shapes and head.kind != "output":  # an output node shows its type itself
        parts.append(_e(shown(edge.type)))
    if edge.tail_port:
        parts.insert(0, f"<i>{_e(edge.tail_port)}</i>")
    text = " ".join(parts)
    if edge.head_ports:
        text += ("<br/>" if text else "") + f"<i>→ {_e(', '.join(edge.head_ports))}</i>"
    dg.edge(edge.tail, edge.head, label=f"<{text}>" if text else "", **({"id": eid} if eid else {}))


def _legend(view: View) -> str | None:
    """A one-row table of the colours drawn and their families (None when nothing is coloured)."""
    kinds = [k for k in COLORS if k in view.families and k not in ("input", "output")]
    if not kinds:
        return None
    cells = "".join(f'<td bgcolor="{COLORS[k]}" border="1" width="14"> </td><td align="left">{k}</td>' for k in kinds)
    return ('<<table border="0" cellborder="0" cellspacing="2" cellpadding="2">'
            f"<tr>{cells}</tr></table>>")


def _title(view: View, opt: Options) -> str:
    parts = [f"<b>{_e(view.name)}</b>"]
    if view.signature:
        parts.append(_e(f"signature {view.signature}"))
    if opt.params:
        parts.append(f"{view.params:,} params")
    return "<" + "  ·  ".join(parts) + ">"


def _asap_ranks(view: View) -> list[list[str]]:
    """Op and block nodes grouped by their longest distance from the inputs, where a rank holds several.

    Graphviz ranks to keep edges short, which slides a side branch (the decoder's first
    layers) down to where it is consumed; papers draw it beside the main branch, as soon as
    its inputs are there. Pinning each node to that earliest rank does the same.
    """
    level: dict[str, int] = {i.key: 0 for i in view.items if i.kind == "input"}
    preds: dict[str, list[str]] = {}
    for e in view.edges:
        preds.setdefault(e.head, []).append(e.tail)
    ranks: dict[int, list[str]] = {}
    for item in view.items:  # topological order
        if item.kind in ("op", "block"):
            level[item.key] = 1 + max((level[p] for p in preds.get(item.key, ())), default=0)
            ranks.setdefault(level[item.key], []).append(item.key)
    return [keys for _, keys in sorted(ranks.items()) if len(keys) > 1]


def _digraph(name: str, comment: str, opt: Options, title: str | None = None) -> graphviz.Digraph:
    dg = graphviz.Digraph(name=name, comment=comment)
    label = {"label": title, "labelloc": "t"} if title else {}
    dg.attr("graph", rankdir=opt.rankdir, newrank="true", fontname=FONT, fontsize="13", **label, nodesep="0.3",
            ranksep="0.35", bgcolor="white", pad="0.2")
    dg.attr("node", fontname=FONT, fontsize="11", color=BORDER, margin="0.12,0.04", height="0.3", penwidth="1")
    dg.attr("edge", fontname=FONT, fontsize="9", color="#666666", fontcolor="#333333", arrowsize="0.7")
    return dg


def nodes_dot(name: str, items: Sequence[Item], opt: Options) -> graphviz.Digraph:
    """The nodes of `items` alone, drawn as in a diagram but with no edges or clusters: where the
    interactive page takes the drawing of a block it folds."""
    dg = _digraph(name, f"nnspec nodes of {name}", opt)
    for item in items:
        _node(dg, item, opt)
    return dg


def dot_of(view: View, opt: Options, *, edge_ids: bool = False) -> graphviz.Digraph:
    """Draw `view` as a Graphviz digraph (see `nnspec.backends.graphviz.to_graphviz`); with
    `edge_ids`, the `i`-th edge of the view gets the SVG id `edge_id(i)`."""
    dg = _digraph(view.name, f"nnspec diagram of {view.name} (depth {view.depth})", opt, _title(view, opt))
    _body(dg, view, None, opt)
    for i, edge in enumerate(view.edges):
        _edge(dg, view, edge, opt, edge_id(i) if edge_ids else None)
    for same in _asap_ranks(view):
        with dg.subgraph() as rank:
            rank.attr(rank="same")
            for key in same:
                rank.node(key)
    with dg.subgraph() as ends:
        ends.attr(rank="min")
        inputs = [item.key for item in view.items if item.kind == "input"]
        for key in inputs:
            ends.node(key)
        for a, b in itertools.pairwise(inputs):  # inputs left to right as declared (the source first)
            ends.edge(a, b, style="invis")
    with dg.subgraph() as ends:
        ends.attr(rank="max")
        for item in view.items:
            if item.kind == "output":
                ends.node(item.key)
        legend = _legend(view)
        if legend:
            ends.node(LEGEND, legend, shape="plain", id=f"nn-{LEGEND}")
    return dg
