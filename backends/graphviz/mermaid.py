"""The Mermaid writer: a `View` as a Mermaid ``flowchart`` for Markdown pages that render one
(GitHub, GitLab, many doc sites). Needs no Graphviz.

Node ids are ``n_`` plus the drawn key with every other character made ``_`` (so no id is a
Mermaid keyword such as ``end``); labels are quoted with Mermaid's ``#quot;`` entities.
"""

from __future__ import annotations

import re

from .dot import MAX_BOUNDARY, Options, ties
from .style import BORDER, COLORS, fmt_count, look_of
from .view import Group, Item, View, shown

__all__ = ["to_mermaid"]

# Mermaid node shapes: (opening, closing) around the quoted label
_SHAPES = {
    "io": ('[/"', '"/]'),  # parallelogram, the flowchart symbol for data in and out
    "box": ('("', '")'),
    "plain": ('["', '"]'),
    "ellipse": ('(["', '"])'),
    "invtrapezium": ('[/"', '"\\]'),
    "trapezium": ('[\\"', '"/]'),
    "block": ('[["', '"]]'),
}


def _text(text: str) -> str:
    """Text safe inside a quoted Mermaid label (which also reads HTML)."""
    for raw, entity in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, entity)
    return text


class _Ids:
    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        if key not in self.ids:
            base = "n_" + re.sub(r"[^A-Za-z0-9_]", "_", key)
            name, i = base, 1
            while name in self.ids.values():
                i += 1
                name = f"{base}_{i}"
            self.ids[key] = name
        return self.ids[key]


def _shape(item: Item) -> str:
    if item.kind in ("input", "output"):
        return "io"
    if item.kind == "block":
        return "block"
    shape = look_of(item.kind, item.op, item.family).shape  # SHAPES' row, a plugin's shape, or a box
    if shape == "box" or shape not in _SHAPES:
        return "plain" if item.family == "tensor" else "box"
    return shape


def _label(item: Item, opt: Options) -> str:
    lines = [f"<b>{_text(item.title)}</b>"]
    if item.kind in ("input", "output"):
        if opt.shapes:
            lines.append(_text(item.label))
    elif item.kind == "op":
        op = "" if item.title == item.op else item.op
        if op or item.label:
            lines.append(_text(f"{op} {item.label}".strip()))
        if opt.params and item.params:
            lines.append(f"{fmt_count(item.params)} params")
        lines.extend(f"<i>{_text(t)}</i>" for t in ties(item))
    else:
        lines.append(_text(item.op) + (f" ×{item.repeat}" if item.repeat else ""))
        if opt.shapes:
            lines.extend(_text(f"in {t}") for t in item.inputs[:MAX_BOUNDARY])
            lines.extend(_text(f"out {t}") for t in item.outputs[:MAX_BOUNDARY])
        if opt.params:
            lines.append(f"{fmt_count(item.params)} params")
    return "<br/>".join(lines)


def _node(item: Item, ids: _Ids, opt: Options, indent: str) -> str:
    opening, closing = _SHAPES[_shape(item)]
    return f"{indent}{ids(item.key)}{opening}{_label(item, opt)}{closing}:::{item.family}"


def _group_title(group: Group, opt: Options) -> str:
    parts = [f"<b>{_text(group.title)}</b>", _text(group.block)]
    if group.repeat:
        parts.append(f"<b>{group.repeat}×</b>")
    if opt.params and group.params:
        parts.append(f"{fmt_count(group.params)} params")
    return " · ".join(parts)


def _body(view: View, parent: str | None, ids: _Ids, opt: Options, depth: int, out: list[str]) -> None:
    indent = "  " * depth
    groups, items = view.children(parent)
    out.extend(_node(item, ids, opt, indent) for item in items)
    for group in groups:
        out.append(f'{indent}subgraph {ids(group.key)} ["{_group_title(group, opt)}"]')
        out.append(f"{indent}  direction {opt.rankdir}")
        _body(view, group.key, ids, opt, depth + 1, out)
        out.append(f"{indent}end")


def to_mermaid(view: View, opt: Options) -> str:
    """The view as Mermaid flowchart text (ends with a newline)."""
    ids = _Ids()
    title = f"{view.name} · {view.params:,} params" if opt.params else view.name
    out = ["---", f'title: "{_text(title)}"', "---", f"flowchart {opt.rankdir}"]
    for family, color in COLORS.items():
        width = "2px" if family in ("input", "output") else "1px"
        out.append(f"  classDef {family} fill:{color},stroke:{BORDER},stroke-width:{width},color:#000000")
    _body(view, None, ids, opt, 1, out)
    for e in view.edges:
        tail, head = ids(e.tail), ids(e.head)
        parts = []
        if e.tail_port:
            parts.append(_text(e.tail_port))
        if opt.shapes and view.item(e.head).kind != "output":
            parts.append(_text(shown(e.type)))
        if e.head_ports:
            parts.append(_text(f"→ {', '.join(e.head_ports)}"))
        label = " ".join(parts)
        out.append(f'  {tail} -->|"{label}"| {head}' if label else f"  {tail} --> {head}")
    kinds = [k for k in COLORS if k in view.families and k not in ("input", "output")]
    out.append('  subgraph legend ["legend"]')
    out.append("    direction LR")
    out.extend(f'    legend_{k}["{k}"]:::{k}' for k in kinds)
    if len(kinds) > 1:  # invisible links lay the swatches out in one row
        out.append("    " + " ~~~ ".join(f"legend_{k}" for k in kinds))
    out.append("  end")
    # Unlinked, the legend is a graph of its own that the layout puts beside the diagram's top,
    # pushing it aside; an invisible link from the last output ranks it below (right of, in LR).
    last = [i for i in view.items if i.kind == "output"][-1:] or list(view.items[-1:])
    if kinds and last:
        out.append(f"  {ids(last[0].key)} ~~~ legend")
    return "\n".join(out) + "\n"
