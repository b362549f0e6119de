"""Block recursion: the calls written in the block definitions must form no cycle.

The expander reports a block that calls itself where it expands the call. A recursive call in a
node that is never expanded (it reaches no output, its ``when:`` is false, or its block is never
called) is an error too: `recursion_errors` reads the call graph of the definitions themselves.
An op chosen by a param (``op: '${norm}'``) is known only where it is expanded, and checked there.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from .errors import Diagnostic, SourcePos
from .source import DataPath
from .spec import Spec

__all__ = ["recursion_errors"]


def recursion_errors(spec: Spec, reported: Iterable[Diagnostic]) -> list[Diagnostic]:
    """One error for each group of blocks that call each other in a cycle, unless the expander has
    reported a call of that cycle already (`reported`); located at the call that closes the cycle."""
    calls = nx.DiGraph()
    for name, block in spec.blocks.items():
        calls.add_node(name)
        for nid, raw in block.nodes.items():
            op = raw.get("op")
            if isinstance(op, str) and op in spec.blocks and not calls.has_edge(name, op):
                calls.add_edge(name, op, node=nid, path=("blocks", name, "nodes", nid, "op"))
    seen: set[SourcePos] = {d.pos for d in reported if d.code == "recursion"}
    order = {name: i for i, name in enumerate(spec.blocks)}
    errors = []
    for group in nx.strongly_connected_components(calls):
        first = min(group, key=order.__getitem__)
        if len(group) == 1 and not calls.has_edge(first, first):
            continue
        inside = calls.subgraph(group)
        if any(spec.source.pos(path) in seen for _, _, path in inside.edges(data="path")):
            continue  # the expander met a call of this group and reported it
        cycle = nx.find_cycle(inside, source=first)
        edges = [calls.edges[a, b] for a, b in cycle]
        chain = " -> ".join([*(a for a, _ in cycle), cycle[0][0]])
        closing = edges[-1]
        path: DataPath = closing["path"]
        errors.append(Diagnostic(
            "recursion", f"block '{cycle[0][0]}' calls itself: {chain} (the call is in block '{cycle[-1][0]}'; "
            "a block may not call itself, even from a node that is left out)", spec.source.pos(path), closing["node"]))
    return sorted(errors, key=lambda d: d.pos)
