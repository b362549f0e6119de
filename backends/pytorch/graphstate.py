"""fx graphs as picklable rows, node for node: how a module built from a spec travels through
pickle and deepcopy. GraphModule's own pickling re-traces its code when loaded, which freezes
``self.training`` reads (attention dropout) into constants; rows keep the graph as built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import fx

__all__ = ["GraphState", "graph_from_state", "graph_state"]


@dataclass(frozen=True)
class _Value:
    """A reference to an earlier fx node, by name, in a pickled graph (not a tuple, so that fx's
    map_aggregate does not walk into it)."""

    name: str


GraphState = list[tuple[str, str, Any, Any, Any, Any, Any]]


def graph_state(graph: fx.Graph) -> GraphState:
    """An fx graph as picklable rows: (op, name, target, args, kwargs, type, meta)."""
    def ref(n: fx.Node) -> Any:
        return _Value(n.name)

    return [(n.op, n.name, n.target, fx.node.map_arg(n.args, ref), fx.node.map_arg(n.kwargs, ref), n.type,
             {k: v for k, v in n.meta.items() if k == "nnspec"}) for n in graph.nodes]


def graph_from_state(state: GraphState) -> fx.Graph:
    """The fx graph that `graph_state` wrote, node for node."""
    graph = fx.Graph()
    made: dict[str, fx.Node] = {}

    def value(arg: Any) -> Any:
        return fx.node.map_aggregate(arg, lambda a: made[a.name] if isinstance(a, _Value) else a)

    for op, name, target, args, kwargs, type_expr, meta in state:
        node = graph.create_node(op, target, value(args), value(kwargs), name, type_expr)
        node.meta.update(meta)
        made[name] = node
    return graph
