"""Where one fx graph computes another: a signature whose whole graph reappears inside a larger
graph of the same spec (``encode`` inside ``forward``), so that generated code can call it there.

Both graphs are lowered over the same submodules, so a match is structural: the same ops on the
same submodules and weights with the same constants, node for node, back from the smaller graph's
outputs; its placeholders bind to whatever the larger graph computes in their place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import fx

__all__ = ["Occurrence", "find_occurrence", "same_graph"]

SameTarget = Callable[[fx.Node, fx.Node], bool]
"""Whether two call_module nodes (of the smaller and the larger graph) run the same code."""


@dataclass(frozen=True)
class Occurrence:
    """The nodes of a larger graph that compute a smaller graph.

    Attributes:
        args: what the larger graph passes for each placeholder of the smaller one, in order.
        results: the larger graph's nodes for the smaller one's outputs, in order.
        inside: every larger-graph node the smaller graph's computation covers (results included).
        last: the last of `inside` in graph order: a call placed there sees all its arguments.
    """

    args: tuple[fx.Node, ...]
    results: tuple[fx.Node, ...]
    inside: frozenset[fx.Node]
    last: fx.Node


class _Matcher:
    def __init__(self, same_target: SameTarget) -> None:
        self.same_target = same_target
        self.pairs: dict[fx.Node, fx.Node] = {}

    def node(self, small: fx.Node, big: fx.Node) -> bool:
        known = self.pairs.get(small)
        if known is not None:
            return known is big
        if small.op == "placeholder":
            self.pairs[small] = big
            return True
        if small.op != big.op or small.op == "output" or len(small.args) != len(big.args) \
                or small.kwargs.keys() != big.kwargs.keys():
            return False
        if small.op == "call_module":
            if not self.same_target(small, big):
                return False
        elif small.target != big.target:
            return False
        self.pairs[small] = big
        return self.value(small.args, big.args) and self.value(small.kwargs, big.kwargs)

    def value(self, a: Any, b: Any) -> bool:
        if isinstance(a, fx.Node):
            return isinstance(b, fx.Node) and self.node(a, b)
        if isinstance(a, tuple | list):
            return type(a) is type(b) and len(a) == len(b) and all(self.value(x, y) for x, y in zip(a, b))
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(self.value(a[k], b[k]) for k in a)
        if isinstance(a, slice):
            return isinstance(b, slice) and self.value((a.start, a.stop, a.step), (b.start, b.stop, b.step))
        return type(a) is type(b) and bool(a == b)


def find_occurrence(small: fx.Graph, big: fx.Graph, same_target: SameTarget,
                   taken: frozenset[fx.Node] = frozenset()) -> Occurrence | None:
    """Where `big` computes all of `small` (none of it in `taken`), such that `big` reads nothing
    the computation makes but its results, and reads those only after its last node; else None."""
    order = {n: i for i, n in enumerate(big.nodes)}
    out = next(n for n in small.nodes if n.op == "output")
    wanted = out.args[0] if isinstance(out.args[0], tuple) else (out.args[0],)
    if not wanted or not all(isinstance(v, fx.Node) and v.op != "placeholder" for v in wanted):
        return None
    matcher = _Matcher(same_target)
    for value in wanted:
        for candidate in big.nodes:
            if candidate in taken or candidate.meta.get("nnspec") != value.meta.get("nnspec"):
                continue
            saved = dict(matcher.pairs)
            if matcher.node(value, candidate):
                break
            matcher.pairs = saved
        else:
            return None
    placeholders = [n for n in small.nodes if n.op == "placeholder"]
    if any(p not in matcher.pairs for p in placeholders):  # a placeholder it never reads: nothing to pass
        return None
    inside = frozenset(b for s, b in matcher.pairs.items() if s.op != "placeholder")
    args = tuple(matcher.pairs[p] for p in placeholders)
    results = tuple(matcher.pairs[v] for v in wanted)
    if inside & taken or any(a in inside for a in args):
        return None
    last = max(inside, key=order.__getitem__)
    for node in inside:
        outside = [u for u in node.users if u not in inside]
        if outside and (node not in results or any(order[u] < order[last] for u in outside)):
            return None
    return Occurrence(args, results, inside, last)


def same_graph(a: fx.Graph, b: fx.Graph) -> bool:
    """Whether two graphs compute the same thing the same way: node for node, the same ops on the same
    targets and constants, reading the same earlier nodes (the names of nodes may differ)."""
    if len(a.nodes) != len(b.nodes):
        return False
    matcher = _Matcher(lambda x, y: x.target == y.target)
    for x, y in zip(a.nodes, b.nodes):
        if x.op != y.op or (x.op != "placeholder" and x.target != y.target):
            return False
        if x.op == "placeholder":
            matcher.pairs[x] = y
        elif not (matcher.value(x.args, y.args) and matcher.value(x.kwargs, y.kwargs)):
            return False
        matcher.pairs[x] = y
    return True
