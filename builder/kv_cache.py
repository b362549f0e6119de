"""The key/value-cache decoding signature of a causal decoder, derived from its checked graph.

For every causal self-attention (a ``multi_head_attention`` node with ``causal: true`` and no
key or value input), in graph order i = 0, 1, ..., the derived graph has, as Optimum's
merged decoder does:

- inputs ``past_key_values.{i}.key`` and ``.value`` (batch, kv_heads, past_sequence_length,
  head_dim): the projected (and rotated) keys and values of the earlier positions; a past
  length of 0 is the prefill, so one graph serves prefill and decode;
- outputs ``present.{i}.key`` and ``.value`` (batch, kv_heads, past_sequence_length + seq,
  head_dim): the past with this call's keys and values appended;
- an input ``position_ids`` (batch, seq), int64, bound to every position op over the decoded
  sequence (``position_embedding``, ``sinusoidal_position``, ``rotary``, rotary attention), so
  that learned, sinusoidal and rotary positions continue after the past (and skip left padding);
- a key padding mask over past and new keys (batch, past_sequence_length + seq), bool, True
  at padding: the attention's own mask input, lengthened, or a new input ``padding_mask``.

Cross-attention (a ``multi_head_attention`` whose query is the decoded sequence and whose key
and value come from graph inputs that do not vary along it: an encoder's memory) is not
recomputed at every step either. Its keys and values, projected into heads, are computed once
by a second derived graph, ``cross_kv`` (``<signature>_cross_kv``): the nodes that compute key
and value, then the attention reduced to its key/value projection, with outputs
``present.{i}.encoder.key`` and ``.value`` (batch, kv_heads, key_length, head_dim). The cache
signature takes them back as inputs ``past_key_values.{i}.encoder.key`` and ``.value`` and no
longer takes what only they needed (the memory). As in Optimum's seq2seq decoders, a graph with
cross-attention then names its self-attention cache ``past_key_values.{i}.decoder.key`` /
``present.{i}.decoder.key``; i counts self-attentions and cross-attentions each in graph order
(the layer index, in a decoder with one of each per layer).

The graph is named ``with_past`` when derived from the main graph and ``<signature>_with_past``
from a signature. Nothing is special-cased by spec name: a graph qualifies when nothing but
its causal self-attention combines positions of the decoded sequence (the query length of
those attentions): no other attention over it as keys, no convolution, pooling or recurrent
layer over it, no reduction along it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import networkx as nx
import sympy

from .errors import SpecError
from .graph import INPUT, Node, graph_inputs, nodes
from .ops.attention import MultiHeadAttention, Rotary
from .ops.layers import PositionEmbedding, SinusoidalPosition
from .resolve import TensorRef
from .tensor import ShapeError, TensorType, same_dim, symbol

__all__ = [
    "CACHE_SUFFIX", "CROSS_SUFFIX", "PAST_LENGTH", "CacheError", "base_signature", "cache_error", "cache_name",
    "cross_name", "derive", "derived_graphs", "is_derived", "with_cross_kv", "with_kv_cache",
]

CACHE_SUFFIX = "with_past"
"""The derived signature's name (main graph), or its suffix after ``<signature>_``."""
CROSS_SUFFIX = "cross_kv"
"""The derived graph that computes the cross-attention keys and values once (main graph), or its suffix."""
PAST_LENGTH = "past_sequence_length"
"""The symbolic dim of the cached length (0 at prefill)."""
POSITIONS = "position_ids"
PADDING = "padding_mask"
PAST_PREFIX, PRESENT_PREFIX = "past_key_values.", "present."


class CacheError(ValueError):
    """A graph has no key/value-cache signature; the message says why."""


def cache_name(signature: str | None) -> str:
    """The derived signature's name for a graph (None: the main graph)."""
    return CACHE_SUFFIX if signature is None else f"{signature}_{CACHE_SUFFIX}"


def cross_name(signature: str | None) -> str:
    """The name of the derived graph that computes a graph's cross-attention keys and values."""
    return CROSS_SUFFIX if signature is None else f"{signature}_{CROSS_SUFFIX}"


def is_derived(name: str | None) -> bool:
    """Whether a signature name is that of a derived graph (a cache signature or its cross keys and values)."""
    return name is not None and any(name == s or name.endswith(f"_{s}") for s in (CACHE_SUFFIX, CROSS_SUFFIX))


def base_signature(name: str, signatures: Any) -> tuple[bool, str | None]:
    """Whether `name` is a derived signature, and the signature it derives from (None: main).

    A signature the spec declares itself keeps its meaning, even if its name ends in ``with_past``.
    """
    if name in signatures:
        return False, None
    for suffix in (CACHE_SUFFIX, CROSS_SUFFIX):
        if name == suffix:
            return True, None
        base = name.removesuffix(f"_{suffix}")
        if base != name and base in signatures:
            return True, base
    return False, None


def derive(name: str, g: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """The derived graph `name` (see `base_signature`) of `g`, the graph it derives from."""
    return with_cross_kv(g) if name.endswith(CROSS_SUFFIX) else with_kv_cache(g)


def _sites(g: nx.MultiDiGraph) -> list[Node]:
    """The causal self-attention nodes, in graph order."""
    return [n for n in nodes(g) if isinstance(n.model, MultiHeadAttention) and n.model.causal
            and "key" not in n.bindings and "value" not in n.bindings and "past_key" not in n.bindings]


def _check_other_attention(g: nx.MultiDiGraph, sites: list[Node], length: sympy.Expr) -> None:
    """Incremental decoding is exact only if no other attention reads the decoded sequence as keys."""
    cached = {n.id for n in sites}
    for n in nodes(g):
        if n.id in cached or n.model is None or n.model.FAMILY != "attention" or isinstance(n.model, Rotary):
            continue
        key = n.inputs.get("key", n.inputs.get("query"))
        axis = -2 if n.op == "attention" else 1
        if key is not None and key.rank >= 2 and same_dim(key.shape[axis], length):
            raise CacheError(f"node '{n.id}' ({n.op}) attends over the decoded sequence without a cache "
                             "(only causal multi_head_attention self-attention is cached)")


_MIXING_FAMILIES = frozenset({"conv", "pool", "recurrent"})
"""Op families that combine neighbouring positions along every axis they read."""
_ALONG_DIM = frozenset({"mean", "sum", "max", "min", "softmax", "log_softmax", "glu"})
"""Ops that combine positions along their `dim` argument (every axis when it is None)."""


def _check_sequence_mixing(g: nx.MultiDiGraph, sites: list[Node], length: sympy.Expr) -> None:
    """Incremental decoding is exact only if nothing but the cached attention combines positions:
    refuse convolutions, pooling, recurrent layers over the decoded sequence, reductions along it,
    and layers (linear, norms) whose feature axis it is."""
    cached = {n.id for n in sites}
    for n in nodes(g):
        if n.model is None or n.id in cached or n.model.FAMILY == "attention":
            continue
        axes = {(port, i % t.rank) for port, t in n.inputs.items() for i, d in enumerate(t.shape) if same_dim(d, length)}
        if not axes:
            continue
        why = None
        if n.model.FAMILY in _MIXING_FAMILIES:
            why = "reads across the decoded sequence"
        elif n.op in _ALONG_DIM:
            dim = getattr(n.model, "dim", None)
            dims = None if dim is None else [dim] if isinstance(dim, int) else list(dim)
            if any(dims is None or any(d % n.inputs[port].rank == i for d in dims) for port, i in axes):
                why = "reduces along the decoded sequence"
        elif (n.op == "linear" or n.model.FAMILY == "norm") and any(i == n.inputs[p].rank - 1 for p, i in axes):
            why = "has the decoded sequence as its feature axis"
        if why:
            raise CacheError(f"node '{n.id}' ({n.op}) {why}; a key/value cache would change its result")


def _position_nodes(g: nx.MultiDiGraph, length: sympy.Expr) -> list[Node]:
    """Position ops over the decoded sequence that count positions themselves (no positions input)."""
    out = []
    for n in nodes(g):
        if "positions" in n.bindings:
            continue
        if isinstance(n.model, PositionEmbedding | SinusoidalPosition):
            seq = n.inputs["x"].shape[1]
        elif isinstance(n.model, Rotary):
            seq = n.inputs["x"].shape[2]
        elif isinstance(n.model, MultiHeadAttention) and n.model.rotary:
            seq = n.inputs["query"].shape[1]
        else:
            continue
        if same_dim(seq, length):
            out.append(n)
    return out


def _mask_inputs(g: nx.MultiDiGraph, sites: list[Node]) -> set[str]:
    """The graph inputs the sites take as key_padding_mask; each must feed nothing else."""
    masks = {n.bindings["key_padding_mask"].node for n in sites if "key_padding_mask" in n.bindings}
    site_ids = {n.id for n in sites}
    for name in masks:
        if g.nodes[name]["node"].op != INPUT:
            raise CacheError(f"the key_padding_mask '{name}' is computed in the graph; a cache needs it as an input")
        for _, consumer, port in g.out_edges(name, keys=True):
            if consumer not in site_ids or port != "key_padding_mask":
                raise CacheError(f"input '{name}' is a key padding mask and also feeds node '{consumer}'; "
                                 "a cache lengthens the mask, so it must feed only the cached attention")
    return masks


@dataclass(frozen=True)
class _Plan:
    """What a graph's cache signature caches: its causal self-attentions and its cross-attentions over
    a fixed memory, and the decoded sequence's batch and length dims."""

    sites: list[Node]
    cross: list[Node]
    batch: sympy.Expr
    length: sympy.Expr

    def names(self, kind: str, i: int) -> tuple[str, str]:
        """The key and value names (after ``past_key_values.`` / ``present.``) of cache `i` of a kind
        (``decoder``: self-attention, ``encoder``: cross-attention), as Optimum names them."""
        middle = f"{kind}." if self.cross else ""
        return f"{i}.{middle}key", f"{i}.{middle}value"


def _plan(g: nx.MultiDiGraph) -> _Plan:
    """Check that a key/value cache keeps `g`'s results, and find what it caches.

    Raises:
        CacheError: the graph has no causal self-attention, or its sequence meets other
            attention or a mask the cache cannot lengthen.
    """
    sites = _sites(g)
    if not sites:
        raise CacheError("the graph has no causal self-attention (multi_head_attention with causal: true)")
    q0 = sites[0].inputs["query"]
    batch, length = q0.shape[0], q0.shape[1]
    for n in sites:
        q = n.inputs["query"]
        if not (same_dim(q.shape[0], batch) and same_dim(q.shape[1], length)):
            raise CacheError(f"causal self-attentions over different sequences: [{q0}] and [{q}] (node '{n.id}')")
    if length.is_Integer:
        raise CacheError(f"the decoded sequence has a fixed length {length}; a cache needs a symbolic one")
    if sites[0].inputs["query"].dtype == "bool":  # pragma: no cover - the op's shape rule refuses it
        raise CacheError("attention over bool values")
    _check_other_attention(g, sites, length)
    _check_sequence_mixing(g, sites, length)
    return _Plan(sites, _cross_sites(g, length), batch, length)


def _cross_sites(g: nx.MultiDiGraph, length: sympy.Expr) -> list[Node]:
    """The cross-attention over a fixed memory, in graph order: multi_head_attention whose query is the
    decoded sequence and whose key and value depend on no graph input that varies along it."""
    varying = {name for name, t in graph_inputs(g).items() if t.symbols & {s.name for s in length.free_symbols}}  # type: ignore[attr-defined]
    out = []
    for n in nodes(g):
        if not isinstance(n.model, MultiHeadAttention) or not {"key", "value"} & set(n.bindings):
            continue
        if "projected_key" in n.bindings or not same_dim(n.inputs["query"].shape[1], length):
            continue
        refs = {n.bindings[p].node for p in ("key", "value") if p in n.bindings}
        if any(r in varying or nx.ancestors(g, r) & varying for r in refs):
            continue  # keys that grow with the sequence: _check_other_attention has refused them already
        if n.model.causal or n.model.rotary:
            what = "causal" if n.model.causal else "rotary"
            raise CacheError(f"node '{n.id}' is {what} cross-attention; its keys and values cannot be cached "
                             "(query positions move with the cache)")
        out.append(n)
    return out


def with_kv_cache(g: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """The cache signature of a checked graph (see the module doc).

    Raises:
        CacheError: the graph has no causal self-attention, or its sequence meets other
            attention or a mask the cache cannot lengthen.
    """
    plan = _plan(g)
    sites, batch, length = plan.sites, plan.batch, plan.length
    past = symbol(PAST_LENGTH)
    total = past + length
    masks = _mask_inputs(g, sites)
    positions = _position_nodes(g, length)
    out = g.copy()
    out.graph = dict(g.graph)
    out.graph["signature"] = cache_name(g.graph.get("signature"))
    new_inputs: dict[str, TensorType] = {}
    if positions:
        new_inputs[POSITIONS] = TensorType((batch, length), "int64")
    if any("key_padding_mask" not in n.bindings for n in sites):
        new_inputs[PADDING] = TensorType((batch, total), "bool")
    for name in sorted(masks):  # lengthened over past and new keys
        _set_input(out, name, TensorType((batch, total), "bool"))
    outputs = dict(g.graph["outputs"])
    extra: dict[str, dict[str, TensorRef]] = {n.id: {"positions": TensorRef(POSITIONS, "y")} for n in positions}
    for i, n in enumerate(sites):
        head = int(n.inputs["query"].shape[2]) // n.model.num_heads  # type: ignore[union-attr]
        kv = TensorType((batch, sympy.Integer(n.model.kv_heads), past, sympy.Integer(head)),  # type: ignore[union-attr]
                        n.inputs["query"].dtype)
        key, value = plan.names("decoder", i)
        new_inputs[f"{PAST_PREFIX}{key}"] = new_inputs[f"{PAST_PREFIX}{value}"] = kv
        outputs[f"{PRESENT_PREFIX}{key}"] = TensorRef(n.id, "present_key")
        outputs[f"{PRESENT_PREFIX}{value}"] = TensorRef(n.id, "present_value")
        ports = extra.setdefault(n.id, {})
        ports["past_key"] = TensorRef(f"{PAST_PREFIX}{key}", "y")
        ports["past_value"] = TensorRef(f"{PAST_PREFIX}{value}", "y")
        if "key_padding_mask" not in n.bindings:
            ports["key_padding_mask"] = TensorRef(PADDING, "y")
    for i, n in enumerate(plan.cross):
        assert isinstance(n.model, MultiHeadAttention)
        projected = _projection(g, n).outputs
        for name, port in zip(plan.names("encoder", i), MultiHeadAttention.PROJECTED, strict=True):
            new_inputs[f"{PAST_PREFIX}{name}"] = projected[port]
            extra.setdefault(n.id, {})[port] = TensorRef(f"{PAST_PREFIX}{name}", "y")
    clash = sorted(set(new_inputs) & set(graph_inputs(g)))
    if clash:
        raise CacheError(f"the graph already has input(s) {', '.join(clash)}, which the cache signature adds")
    for name, t in new_inputs.items():
        out.add_node(name, node=Node(name, INPUT, None, {}, {}, {"y": t}, pos=g.graph.get("pos") or sites[0].pos))
    cross = {n.id for n in plan.cross}
    for node_id, ports in extra.items():  # cross-attention: the projected keys and values take the memory's place
        _rebind(out, g.nodes[node_id]["node"], ports, drop=("key", "value") if node_id in cross else ())
    for n in sites:  # the lengthened masks were checked against the old key length: check again
        if "key_padding_mask" in n.bindings:
            _rebind(out, out.nodes[n.id]["node"], {})
    inputs = [*g.graph["inputs"], *new_inputs]
    out.graph["inputs"] = inputs
    out.graph["order"] = [*inputs, *(k for k in g.graph["order"] if k not in set(g.graph["inputs"]))]
    out.graph["outputs"] = outputs
    if plan.cross:
        _prune(out, g)
    return out


def _projection(g: nx.MultiDiGraph, n: Node) -> Node:
    """Cross-attention node `n` reduced to its key/value projection (same id and weights)."""
    assert isinstance(n.model, MultiHeadAttention)
    key = n.bindings.get("key", n.bindings.get("value"))
    value = n.bindings.get("value", key)
    assert key is not None and value is not None
    bindings = {"key": key, "value": value}
    model = n.model.key_value_projection(str(key), str(value))
    types = {port: g.nodes[ref.node]["node"].outputs[ref.port] for port, ref in bindings.items()}
    try:
        outputs = model.infer(types)
    except (ShapeError, ValueError) as exc:  # pragma: no cover - the full node's shape rule passed
        raise CacheError(f"node '{n.id}': {exc}") from None
    return replace(n, model=model, bindings=bindings, inputs=types, outputs=outputs)


def with_cross_kv(g: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """The graph that computes the cross-attention keys and values of `g`'s cache signature once (see
    the module doc): what key and value need, then each cross-attention's key/value projection.

    Raises:
        CacheError: `g` has no cache signature, or no cross-attention over a fixed memory.
    """
    plan = _plan(g)
    if not plan.cross:
        raise CacheError("the graph has no cross-attention over inputs that stay fixed while decoding")
    keep = {r.node for n in plan.cross for p, r in n.bindings.items() if p in ("key", "value")}
    keep |= set().union(*(nx.ancestors(g, k) for k in keep))
    out = nx.MultiDiGraph(g.subgraph(keep | {n.id for n in plan.cross}))
    out.graph = dict(g.graph)
    out.graph["signature"] = cross_name(g.graph.get("signature"))
    outputs: dict[str, TensorRef] = {}
    for i, n in enumerate(plan.cross):
        node = _projection(g, n)
        out.nodes[n.id]["node"] = node
        out.remove_edges_from([(u, v, k) for u, v, k in out.in_edges(n.id, keys=True)])
        for port, ref in node.bindings.items():
            out.add_edge(ref.node, n.id, key=port, src_port=ref.port, type=node.inputs[port])
        for name, port in zip(plan.names("encoder", i), MultiHeadAttention.PROJECTED, strict=True):
            outputs[f"{PRESENT_PREFIX}{name}"] = TensorRef(n.id, port)
    out.graph["inputs"] = [k for k in g.graph["inputs"] if k in out]
    out.graph["order"] = [k for k in g.graph["order"] if k in out]
    out.graph["outputs"] = outputs
    _hold_ties(out, g)
    return out


def _prune(g: nx.MultiDiGraph, before: nx.MultiDiGraph) -> None:
    """Remove what the outputs of `g` no longer need but did need in `before` (the memory, once cross
    keys and values are inputs; the encoder that computed it, in a main graph)."""
    def needed(graph: nx.MultiDiGraph) -> set[str]:
        ends = {ref.node for ref in graph.graph["outputs"].values()}
        return ends.union(*(nx.ancestors(graph, n) for n in ends))

    dead = needed(before) - needed(g)
    g.remove_nodes_from(dead)
    g.graph["inputs"] = [k for k in g.graph["inputs"] if k not in dead]
    g.graph["order"] = [k for k in g.graph["order"] if k not in dead]
    _hold_ties(g, before)


def _hold_ties(g: nx.MultiDiGraph, before: nx.MultiDiGraph) -> None:
    """Weights tied to a node that `g` leaves out: as in a signature that leaves out a tie's owner, the
    first node tied to it holds the weight, under an alias of the owner's name (its state_dict key)."""
    holders = {target: holder for holder, target in (g.graph.get("aliases") or {}).items()}
    for node_id in g.graph["order"]:
        n: Node = g.nodes[node_id]["node"]
        gone = {name: tie for name, tie in n.ties.items() if tie[0] not in g}
        if not gone:
            continue
        weights, ties = dict(n.weights), dict(n.ties)
        for name, (owner, weight) in gone.items():
            target = f"{owner}.{weight}"
            if target in holders:
                holder, _, held = holders[target].rpartition(".")
                ties[name] = (holder, held)
                continue
            weights[name] = before.nodes[owner]["node"].weights[weight]
            del ties[name]
            holders[target] = f"{n.id}.{name}"
        g.nodes[node_id]["node"] = replace(n, weights=weights, ties=ties)
    g.graph["aliases"] = {holder: target for target, holder in holders.items()}


def _set_input(g: nx.MultiDiGraph, name: str, t: TensorType) -> None:
    node: Node = g.nodes[name]["node"]
    g.nodes[name]["node"] = replace(node, outputs={"y": t})
    for _, consumer, port in g.out_edges(name, keys=True):
        g.edges[name, consumer, port]["type"] = t


def _rebind(g: nx.MultiDiGraph, node: Node, ports: dict[str, TensorRef], drop: tuple[str, ...] = ()) -> None:
    """Bind extra input ports of `node` (unbind those in `drop`) and infer its types again (new outputs:
    the present cache)."""
    assert node.model is not None
    bindings = {**{p: r for p, r in node.bindings.items() if p not in drop}, **ports}
    types = {port: g.nodes[ref.node]["node"].outputs[ref.port] for port, ref in bindings.items()}
    given = node.model.in_
    in_: dict[str, str] = ({"x" if len(node.model.INPUTS) == 1 else node.model.INPUTS[0]: given}
                           if isinstance(given, str) else
                           dict(zip(node.model.INPUTS, given, strict=False)) if isinstance(given, list)
                           else dict(given or {}))
    in_ = {p: r for p, r in in_.items() if p not in drop}
    in_.update({port: str(ref) for port, ref in ports.items()})
    for port in drop:
        ref = node.bindings.get(port)
        if ref is not None:
            g.remove_edge(ref.node, node.id, key=port)
    model = node.model.model_copy(update={"in_": in_})
    try:
        outputs = model.infer(types)
    except ShapeError as exc:
        raise CacheError(f"node '{node.id}': {exc}") from None
    g.nodes[node.id]["node"] = replace(node, model=model, bindings=bindings, inputs=types, outputs=outputs)
    for port, ref in ports.items():
        g.add_edge(ref.node, node.id, key=port, src_port=ref.port, type=types[port])


def derived_graphs(graphs: dict[str | None, nx.MultiDiGraph]) -> dict[str | None, nx.MultiDiGraph]:
    """The cache signature of each graph that has one, and the graph computing its cross-attention keys and
    values where it has those (graphs without a cache are left out)."""
    out: dict[str | None, nx.MultiDiGraph] = {}
    for sig, g in graphs.items():
        name = cache_name(sig)
        if name in graphs:  # the spec declares a signature of that name itself
            continue
        try:
            out[name] = with_kv_cache(g)
        except CacheError:
            continue
        if cross_name(sig) not in graphs and _cross_sites(g, _plan(g).length):
            out[cross_name(sig)] = with_cross_kv(g)
    return out


def cache_error(spec_name: str, name: str, exc: CacheError, pos: Any) -> SpecError:
    """A located error for a derived signature that cannot be built."""
    return SpecError.single("no-cache", f"spec '{spec_name}' has no signature '{name}': {exc}", pos, None, ())
