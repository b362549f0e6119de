"""What a diagram shows of a checked graph: which nodes are drawn, which block calls are
clusters and which are folded into one node, and the tensors between what is drawn.

The DOT, Mermaid and HTML writers all draw the same `View`, so they agree on what is there.

Depth counts block calls: a node inside ``encoder`` (a call) inside the main graph sits at
level 1, a node of ``encoder.ff`` at level 2. With ``depth=d`` every call at level ``d + 1``
is folded into one node that stands for everything inside it. A repeated call is one level:
folded, it is one node marked ``×N``; drawn, it is one copy (copy 0) in a cluster marked
``×N``, the way papers draw the Transformer's stacks, unless ``unroll`` draws every copy.

Besides the depth, any one call (or, unrolled, any one copy) can be drawn folded by its path
(``folded``): the interactive page folds and opens blocks one by one this way.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final, Literal

import networkx as nx

from nnspec.builder import INPUT, Node, Spec, TensorType, compile_graph, load_spec, nodes

__all__ = [
    "ALL", "AUTO_MAX_ITEMS", "Depth", "Edge", "Group", "Item", "View", "as_graph", "build_view", "foldable", "max_depth",
    "shown",
]

ALL: Final = "all"
Depth = int | Literal["all"] | None
"""How deep blocks are drawn: a level, ``"all"``, or None for the automatic choice."""

AUTO_MAX_ITEMS = 60
"""The automatic depth is the deepest that draws at most this many op and block nodes."""

Kind = Literal["input", "output", "op", "block"]


@dataclass(frozen=True)
class Item:
    """One drawn node: a graph input or output, an op node, or a folded block.

    Attributes:
        key: unique name in the drawing (the node id for ops and inputs, ``output/<name>``,
            ``block/<path>``).
        kind: input, output, op or block.
        title: the id shown, relative to the enclosing cluster.
        full_id: the dotted id (of copy 0 where one copy stands for a repeated call).
        op: the op name; the block's name for a folded block.
        family: the op family (`builder.FAMILIES`), or input, output, block.
        label: key arguments (``6@5x5``); for inputs and outputs their type.
        params: parameters it stands for (one copy, inside a stacked repeat).
        group: key of the innermost cluster that holds it, None at the top.
        repeat: copies of a folded repeated block.
        stack: how many copies of it the drawing stands for (stacked repeats around it).
        inputs: types entering a folded block.
        outputs: types leaving a folded block.
        members: the node ids a folded block stands for.
        node: the graph node of an input or op item.
    """

    key: str
    kind: Kind
    title: str
    full_id: str
    op: str
    family: str
    label: str
    params: int = 0
    group: str | None = None
    repeat: int | None = None
    stack: int = 1
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    node: Node | None = None


@dataclass(frozen=True)
class Group:
    """One cluster: a block call drawn open.

    Attributes:
        key: unique name (``cluster/<path>``).
        path: the call's dotted path (copy 0's where a repeat is stacked).
        title: the path relative to the enclosing cluster.
        block: the block's name.
        repeat: copies of a repeated call (one drawn, or all of them inside when unrolled).
        index: which copy, for one copy of an unrolled repeat.
        params: parameters of everything inside (every copy of a repeat).
        parent: key of the enclosing cluster, None at the top.
        level: how many clusters hold it, itself included (1 at the top).
    """

    key: str
    path: str
    title: str
    block: str
    repeat: int | None
    index: int | None
    params: int
    parent: str | None
    level: int


@dataclass(frozen=True)
class Edge:
    """A tensor between two drawn items.

    Attributes:
        tail: key of the producing item.
        head: key of the consuming item.
        type: the tensor type.
        tail_port: the producer's output port, where it has several.
        head_ports: the consumer's input ports, where it has several named ones.
        tensor: which tensor it is, ``producer:port`` (the producer's id as drawn: copy 0's where
            copies are stacked); several edges carry one tensor to several consumers.
    """

    tail: str
    head: str
    type: TensorType
    tail_port: str | None = None
    head_ports: tuple[str, ...] = ()
    tensor: str = ""


@dataclass(frozen=True)
class View:
    """Everything a writer draws: items in topological order, clusters parents first, edges."""

    name: str
    doc: str | None
    signature: str | None
    params: int
    depth: int
    max_depth: int
    unroll: bool
    items: tuple[Item, ...]
    groups: tuple[Group, ...]
    edges: tuple[Edge, ...]

    @cached_property
    def _by_key(self) -> dict[str, Item]:
        return {i.key: i for i in self.items}

    def item(self, key: str) -> Item:
        return self._by_key[key]

    @property
    def families(self) -> set[str]:
        """The families of the items drawn (input, output and block included)."""
        return {i.family for i in self.items}

    def children(self, parent: str | None) -> tuple[list[Group], list[Item]]:
        """The clusters and items directly inside cluster `parent` (None: the top level)."""
        return [g for g in self.groups if g.parent == parent], [i for i in self.items if i.group == parent]


# --- placing one node --------------------------------------------------------------------


@dataclass(frozen=True)
class _GroupSpec:
    key: str
    path: str
    block: str
    repeat: int | None
    index: int | None
    prefix: str  # stripped from the ids of what it holds
    parent: str | None
    level: int  # clusters around it, itself included


@dataclass(frozen=True)
class _Place:
    """Where one graph node lands: the item drawn for it and the clusters around that item."""

    target: str
    rep_id: str
    groups: tuple[tuple[_GroupSpec, bool], ...]  # outermost first, and whether the node counts toward its total
    copies: dict[str, int] = field(default_factory=dict)  # stacked repeat path -> which copy holds the node
    counts: bool = True  # whether the node counts toward its item's total (copy 0 of stacked repeats)
    fold: tuple[str, str, int | None, str] | None = None  # folded call or copy: (path, block, repeat, title)
    stack: int = 1

    @property
    def prefix(self) -> str:
        return self.groups[-1][0].prefix if self.groups else ""


def _place(n: Node, depth: int, unroll: bool, mixed: frozenset[str] = frozenset(),
           folded: frozenset[str] = frozenset()) -> _Place:
    """Where `n` lands; repeats are stacked (copy 0 drawn for all) unless `unroll`, or their call
    path is in `mixed` (copies that differ, which one drawing would misstate). A call below
    `depth`, or one whose path is in `folded` (or an unrolled copy whose path is), is one node."""

    def unrolled(call: str) -> bool:
        return unroll or call in mixed

    segs = n.id.split(".")
    for f in n.scope:
        if f.index is not None and not unrolled(f.path.rpartition(".")[0]):
            segs[f.path.count(".")] = "0"  # copy 0 stands for every copy

    def rep(path: str) -> str:
        return ".".join(segs[: path.count(".") + 1])

    rep_id = ".".join(segs)
    level, stack, counts = 0, 1, True
    groups: list[tuple[_GroupSpec, bool]] = []
    copies: dict[str, int] = {}
    parent: str | None = None
    for f in n.scope:
        if f.index is not None:  # one copy of the repeated call just entered
            call = f.path.rpartition(".")[0]
            if unrolled(call):
                path = rep(f.path)
                if path in folded:  # one copy folded: titled with its call (encoder.3), like its cluster
                    title = _strip(path, groups[-2][0].prefix if len(groups) > 1 else "")
                    return _Place(f"block/{path}", rep_id, tuple(groups), copies, counts, (path, f.block, None, title),
                                  stack)
                spec = _GroupSpec(f"cluster/{path}", path, f.block, None, f.index, path + ".", parent, len(groups) + 1)
                groups.append((spec, counts))
                parent = spec.key
            else:
                copies[rep(call)] = f.index
                counts = counts and f.index == 0
            continue
        level += 1
        path = rep(f.path)
        if level > depth or path in folded:
            title = _strip(path, groups[-1][0].prefix if groups else "")
            return _Place(f"block/{path}", rep_id, tuple(groups), copies, counts, (path, f.block, f.repeat, title),
                          stack)
        stacked = f.repeat is not None and not unrolled(f.path)
        spec = _GroupSpec(f"cluster/{path}", path, f.block, f.repeat, None, path + (".0." if stacked else "."),
                          parent, len(groups) + 1)
        groups.append((spec, counts))
        parent = spec.key
        stack *= f.repeat if stacked and f.repeat else 1
    return _Place(rep_id, rep_id, tuple(groups), copies, counts, None, stack)


def _mixed_repeats(g: nx.MultiDiGraph) -> frozenset[str]:
    """Call paths of repeats whose copies differ (in arguments, shapes or weights), so that no copy
    stands for the others: VGG's first convolution of a stage takes other channels than the rest."""
    copies: dict[str, dict[int, list[tuple[object, ...]]]] = {}
    for n in nodes(g):
        for f in n.scope:
            if f.index is not None:
                call = f.path.rpartition(".")[0]
                copies.setdefault(call, {}).setdefault(f.index, []).append(_signature(n, n.id[len(f.path) + 1:]))
    return frozenset(call for call, by_copy in copies.items() if len({tuple(s) for s in by_copy.values()}) > 1)


def _signature(n: Node, rel: str) -> tuple[object, ...]:
    """What must agree between copies of a repeat for one drawing to be true of all: the node's
    place in its copy, op, arguments, tensor types and weight shapes."""
    args = tuple((k, repr(v)) for k, v in n.model.args().items()) if n.model is not None else ()
    return (rel, n.op, args, tuple((p, t.describe()) for p, t in n.inputs.items()),
            tuple((p, t.describe()) for p, t in n.outputs.items()), tuple(n.weights.items()))


def _levels(n: Node) -> int:
    return sum(1 for f in n.scope if f.index is None)


def max_depth(g: nx.MultiDiGraph) -> int:
    """The deepest block nesting in the graph (0 without blocks)."""
    return max((_levels(n) for n in nodes(g)), default=0)


def _auto_depth(g: nx.MultiDiGraph, unroll: bool, mixed: frozenset[str]) -> int:
    ops = [n for n in nodes(g) if n.op != INPUT]
    for d in range(max_depth(g), 0, -1):
        if len({_place(n, d, unroll, mixed).target for n in ops}) <= AUTO_MAX_ITEMS:
            return d
    return 0


def _shallowest_repeat(g: nx.MultiDiGraph) -> int:
    """The level at which the outermost repeated call opens (0 without repeats)."""
    levels = []
    for n in nodes(g):
        level = 0
        for f in n.scope:
            level += f.index is None
            if f.repeat is not None and f.index is None:
                levels.append(level)
                break
    return min(levels, default=0)


def _resolve_depth(g: nx.MultiDiGraph, depth: Depth, unroll: bool, mixed: frozenset[str]) -> int:
    if depth is None:  # unrolling asks to see the copies: open at least the outermost repeated call
        auto = _auto_depth(g, unroll, mixed)
        return max(auto, _shallowest_repeat(g)) if unroll else auto
    if depth == ALL:
        return max_depth(g)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a level (0, 1, ...), 'all' or None for automatic, got {depth!r}")
    return min(depth, max_depth(g))


# --- the view ------------------------------------------------------------------------------


def _strip(path: str, prefix: str) -> str:
    return path[len(prefix):] if prefix and path.startswith(prefix) else path


def _multi_input(n: Node) -> bool:
    """Whether the op has several named input ports (so an edge says which one it feeds)."""
    assert n.model is not None
    return len(type(n.model).INPUTS) > 1


@dataclass
class _Draft:
    """An item while its members, parameters and boundary types are being collected."""

    key: str
    kind: Kind
    title: str
    full_id: str
    op: str
    family: str
    label: str
    group: str | None = None
    repeat: int | None = None
    stack: int = 1
    node: Node | None = None
    params: int = 0
    members: list[str] = field(default_factory=list)
    inputs: dict[tuple[str, str], str] = field(default_factory=dict)  # tensor -> its type, as shown
    outputs: dict[tuple[str, str], str] = field(default_factory=dict)

    def freeze(self) -> Item:
        return Item(self.key, self.kind, self.title, self.full_id, self.op, self.family, self.label, self.params,
                    self.group, self.repeat, self.stack, tuple(dict.fromkeys(self.inputs.values())),
                    tuple(dict.fromkeys(self.outputs.values())), tuple(self.members), self.node)


def shown(t: TensorType) -> str:
    """A tensor type as drawn: its shape, and its dtype where that is not float32."""
    return str(t) if t.dtype == "float32" else f"{t} {t.dtype}"


class _Builder:
    def __init__(self, g: nx.MultiDiGraph, depth: int, unroll: bool, mixed: frozenset[str],
                 folded: frozenset[str] = frozenset()) -> None:
        self.g = g
        self.depth = depth
        self.unroll = unroll
        self.mixed = mixed
        self.folded = folded
        self.places: dict[str, _Place] = {}
        self.drafts: dict[str, _Draft] = {}  # in node order, so items come out topologically sorted
        self.groups: dict[str, tuple[_GroupSpec, int]] = {}
        self.edges: dict[tuple[str, tuple[str, str], str], Edge] = {}

    def node(self, key: str) -> Node:
        node: Node = self.g.nodes[key]["node"]
        return node

    def place_all(self) -> None:
        for n in nodes(self.g):
            p = _place(n, self.depth, self.unroll, self.mixed, self.folded) if n.op != INPUT else _Place(n.id, n.id, ())
            self.places[n.id] = p
            for spec, counts in p.groups:
                _, total = self.groups.get(spec.key, (spec, 0))
                self.groups[spec.key] = (spec, total + (n.params if counts else 0))
            d = self.drafts.get(p.target)
            if d is None:
                d = self.drafts[p.target] = self._draft(n, p)
            if p.fold is not None:
                d.members.append(n.id)
            if p.counts:
                d.params += n.params

    def _draft(self, n: Node, p: _Place) -> _Draft:
        group = p.groups[-1][0].key if p.groups else None
        if n.op == INPUT:
            return _Draft(n.id, "input", n.id, n.id, INPUT, "input", shown(n.outputs["y"]), node=n)
        if p.fold is not None:
            path, block, repeat, title = p.fold
            return _Draft(p.target, "block", title, path, block, "block", "", group, repeat, p.stack)
        assert n.model is not None
        return _Draft(p.target, "op", _strip(p.rep_id, p.prefix), p.rep_id, n.op, type(n.model).FAMILY,
                      n.model.label(), group, None, p.stack, n)

    def _crosses_copies(self, u: str, v: str) -> bool:
        """Whether a tensor goes from one copy of a stacked repeat to another (both drawn as one)."""
        cu, cv = self.places[u].copies, self.places[v].copies
        return any(k in cv and cv[k] != i for k, i in cu.items())

    def connect(self) -> None:
        for n in nodes(self.g):
            for port, ref in n.bindings.items():
                self._tensor(ref.node, ref.port, n.id, port)
        for name, ref in self.g.graph["outputs"].items():
            key = f"output/{name}"
            t = self.node(ref.node).outputs[ref.port]
            self.drafts[key] = _Draft(key, "output", name, name, "output", "output", shown(t))
            self._tensor(ref.node, ref.port, None, key)

    def _tensor(self, u: str, port: str, v: str | None, head_port: str) -> None:
        """Draw tensor `u.port` into `v` (a graph output when `v` is None, keyed `head_port`)."""
        pu, producer = self.places[u], self.node(u)
        t = producer.outputs[port]
        tail = pu.target
        head = self.places[v].target if v is not None else head_port
        if tail == head or (v is not None and self._crosses_copies(u, v)):
            return
        tensor = (pu.rep_id, port)
        if self.drafts[tail].kind == "block":
            self.drafts[tail].outputs.setdefault(tensor, shown(t))
        if self.drafts[head].kind == "block":
            self.drafts[head].inputs.setdefault(tensor, shown(t))
        tail_port = port if pu.fold is None and len(producer.outputs) > 1 else None
        ports: tuple[str, ...] = ()
        if v is not None and self.places[v].fold is None and _multi_input(self.node(v)):
            ports = (head_port,)
        key = (tail, tensor, head)
        old = self.edges.get(key)
        if old is not None:
            ports = tuple(dict.fromkeys((*old.head_ports, *ports)))
        self.edges[key] = Edge(tail, head, t, tail_port, ports, f"{pu.rep_id}:{port}")

    def group_list(self) -> tuple[Group, ...]:
        specs = {k: s for k, (s, _) in self.groups.items()}

        def title(s: _GroupSpec) -> str:
            # a copy of an unrolled repeat is titled with its call (encoder.3), not the bare index
            parent = specs[s.parent] if s.parent else None
            if parent is not None and s.index is not None:
                parent = specs[parent.parent] if parent.parent else None
            return _strip(s.path, parent.prefix) if parent else s.path

        return tuple(Group(key, s.path, title(s), s.block, s.repeat, s.index, total, s.parent, s.level)
                     for key, (s, total) in self.groups.items())


def foldable(g: nx.MultiDiGraph, unroll: bool = False) -> list[str]:
    """The paths `build_view` can fold: every block call drawn (copy 0's inside stacked repeats)
    and, unrolled, every copy of a repeated call; parents before what they hold."""
    return _foldable(g, unroll, frozenset() if unroll else _mixed_repeats(g))


def _foldable(g: nx.MultiDiGraph, unroll: bool, mixed: frozenset[str]) -> list[str]:
    deepest = max_depth(g)
    paths: dict[str, None] = {}
    for n in nodes(g):
        for spec, _ in _place(n, deepest, unroll, mixed).groups:
            paths[spec.path] = None
    return list(paths)


def build_view(g: nx.MultiDiGraph, depth: Depth = None, unroll: bool = False, folded: Iterable[str] = ()) -> View:
    """What a diagram of `g` shows at `depth` (see the module docstring), with the calls or copies
    whose paths are in `folded` (see `foldable`) folded too, whatever their level.

    Raises:
        ValueError: for a depth that is not a level, ``"all"`` or None, or a path in `folded` that
            names no block call (or unrolled copy) of the drawing.
    """
    mixed = frozenset() if unroll else _mixed_repeats(g)
    level = _resolve_depth(g, depth, unroll, mixed)
    fold = frozenset(folded)
    if fold:
        known = _foldable(g, unroll, mixed)
        unknown = sorted(fold - set(known))
        if unknown:
            hint = "".join(f"; did you mean '{m}'?" for m in difflib.get_close_matches(unknown[0], known, 1))
            raise ValueError(f"'{unknown[0]}' is no block call drawn as a cluster{hint}")
    b = _Builder(g, level, unroll, mixed, fold)
    b.place_all()
    b.connect()
    total = sum(n.params for n in nodes(g))
    return View(g.graph["name"], g.graph.get("doc"), g.graph.get("signature"), total, level, max_depth(g), unroll,
                tuple(d.freeze() for d in b.drafts.values()), b.group_list(), tuple(b.edges.values()))


def as_graph(spec_or_graph: object, signature: str | None = None) -> nx.MultiDiGraph:
    """The checked graph of a graph, a `Spec`, or what `load_spec` reads (a path, text or mapping).

    Raises:
        SpecError: when the spec does not load or check.
    """
    if isinstance(spec_or_graph, nx.MultiDiGraph):
        if signature is not None and spec_or_graph.graph.get("signature") != signature:
            raise ValueError(f"the graph is not of signature '{signature}'; pass the spec to draw another signature")
        return spec_or_graph
    spec = spec_or_graph if isinstance(spec_or_graph, Spec) else load_spec(spec_or_graph)  # type: ignore[arg-type]
    return compile_graph(spec, signature)
