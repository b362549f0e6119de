"""Rows of `nnspec summary`: one per node, or per block call folded below a depth."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from .graph import INPUT, nodes

__all__ = ["Row", "summary_rows"]


@dataclass(frozen=True)
class Row:
    """One line of the summary table."""

    id: str
    op: str
    shape: str
    params: int
    depth: int
    tied: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "op": self.op, "shape": self.shape, "params": self.params, "depth": self.depth,
                "tied": list(self.tied)}


def summary_rows(g: nx.MultiDiGraph, depth: int | None = None) -> list[Row]:
    """Rows in graph order; with `depth`, block calls nested deeper than it fold into one row.

    Depth counts block frames: a top-level ``repeat: 6`` call is depth 1 and each of its
    copies depth 2; ``depth=0`` folds every top-level block call into one row.
    """
    rows: list[Row] = []
    folded: dict[str, int] = {}
    for n in nodes(g):
        shape = ", ".join(f"[{', '.join(str(d) for d in t.shape)}]" for t in n.outputs.values())
        if n.op == INPUT:
            rows.append(Row(n.id, "input", shape, 0, 0))
            continue
        if depth is None or len(n.scope) <= depth:
            tied = tuple(f"{name} = {owner}.{weight}" for name, (owner, weight) in n.ties.items())
            rows.append(Row(n.id, n.op, shape, n.params, len(n.scope), tied))
            continue
        frame = n.scope[depth]
        op = f"{frame.block} ×{frame.repeat}" if frame.repeat else frame.block
        if frame.path in folded:
            i = folded[frame.path]
            rows[i] = Row(frame.path, op, shape, rows[i].params + n.params, depth + 1)
        else:
            folded[frame.path] = len(rows)
            rows.append(Row(frame.path, op, shape, n.params, depth + 1))
    return rows
