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

The graph is named ``with_past`` when derived from the main graph and ``<signature>_with_past``
from a signature. Nothing is special-cased by spec name: a graph qualifies when nothing but
its causal self-attention combines positions of the decoded sequence (the query length of
those attentions): no other attention over it as keys, no convolution, pooling or recurrent
layer over it, no reduction along it.
"""

from __future__ import annotations

from dataclasses import replace
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
    "CACHE_SUFFIX", "PAST_LENGTH", "CacheError", "base_signature", "cache_error", "cache_name", "derived_graphs",
    "with_kv_cache",
]

CACHE_SUFFIX = "with_past"
"""The derived signature's name (main graph), or its suffix after ``<signature>_``."""
PAST_LENGTH = "past_sequence_length"
"""The symbolic dim of the cached length (0 at prefill)."""
POSITIONS = "position_ids"
PADDING = "padding_mask"


class CacheError(ValueError):
    """A graph has no key/value-cache signature; the message says why."""


def cache_name(signature: str | None) -> str:
    """The derived signature's name for a graph (None: the main graph)."""
    return CACHE_SUFFIX if signature is None else f"{signature}_{CACHE_SUFFIX}"


def base_signature(name: str, signatures: Any) -> tuple[bool, str | None]:
    """Whether `name` is a derived cache signature, and the signature it derives from (None: main).

    A signature the spec declares itself keeps its meaning, even if its name ends in ``with_past``.
    """
    if name in signatures:
        return False, None
    if name == CACHE_SUFFIX:
        return True, None
    base = name.removesuffix(f"_{CACHE_SUFFIX}")
    if base != name and base in signatures:
        return True, base
    return False, None


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


def with_kv_cache(g: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """The cache signature of a checked graph (see the module doc).

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
    for i, n in enumerate(sites):
        head = int(n.inputs["query"].shape[2]) // n.model.num_heads  # type: ignore[union-attr]
        kv = TensorType((batch, sympy.Integer(n.model.kv_heads), past, sympy.Integer(head)),  # type: ignore[union-attr]
                        n.inputs["query"].dtype)
        new_inputs[f"past_key_values.{i}.key"] = kv
        new_inputs[f"past_key_values.{i}.value"] = kv
        outputs[f"present.{i}.key"] = TensorRef(n.id, "present_key")
        outputs[f"present.{i}.value"] = TensorRef(n.id, "present_value")
    clash = sorted(set(new_inputs) & set(graph_inputs(g)))
    if clash:
        raise CacheError(f"the graph already has input(s) {', '.join(clash)}, which the cache signature adds")
    for name, t in new_inputs.items():
        out.add_node(name, node=Node(name, INPUT, None, {}, {}, {"y": t}, pos=g.graph.get("pos") or sites[0].pos))
    extra: dict[str, dict[str, TensorRef]] = {n.id: {"positions": TensorRef(POSITIONS, "y")} for n in positions}
    for i, n in enumerate(sites):
        ports = extra.setdefault(n.id, {})
        ports["past_key"] = TensorRef(f"past_key_values.{i}.key", "y")
        ports["past_value"] = TensorRef(f"past_key_values.{i}.value", "y")
        if "key_padding_mask" not in n.bindings:
            ports["key_padding_mask"] = TensorRef(PADDING, "y")
    for node_id, ports in extra.items():
        _rebind(out, g.nodes[node_id]["node"], ports)
    for n in sites:  # the lengthened masks were checked against the old key length: check again
        if "key_padding_mask" in n.bindings:
            _rebind(out, out.nodes[n.id]["node"], {})
    inputs = [*g.graph["inputs"], *new_inputs]
    out.graph["inputs"] = inputs
    out.graph["order"] = [*inputs, *(k for k in g.graph["order"] if k not in set(g.graph["inputs"]))]
    out.graph["outputs"] = outputs
    return out


def _set_input(g: nx.MultiDiGraph, name: str, t: TensorType) -> None:
    node: Node = g.nodes[name]["node"]
    g.nodes[name]["node"] = replace(node, outputs={"y": t})
    for _, consumer, port in g.out_edges(name, keys=True):
        g.edges[name, consumer, port]["type"] = t


def _rebind(g: nx.MultiDiGraph, node: Node, ports: dict[str, TensorRef]) -> None:
    """Bind extra input ports of `node` and infer its types again (new outputs: the present cache)."""
    assert node.model is not None
    bindings = {**node.bindings, **ports}
    types = {port: g.nodes[ref.node]["node"].outputs[ref.port] for port, ref in bindings.items()}
    given = node.model.in_
    in_: dict[str, str] = ({"x" if len(node.model.INPUTS) == 1 else node.model.INPUTS[0]: given}
                           if isinstance(given, str) else
                           dict(zip(node.model.INPUTS, given, strict=False)) if isinstance(given, list)
                           else dict(given or {}))
    in_.update({port: str(ref) for port, ref in ports.items()})
    model = node.model.model_copy(update={"in_": in_})
    try:
        outputs = model.infer(types)
    except ShapeError as exc:
        raise CacheError(f"node '{node.id}': {exc}") from None
    g.nodes[node.id]["node"] = replace(node, model=model, bindings=bindings, inputs=types, outputs=outputs)
    for port, ref in ports.items():
        g.add_edge(ref.node, node.id, key=port, src_port=ref.port, type=types[port])


def derived_graphs(graphs: dict[str | None, nx.MultiDiGraph]) -> dict[str | None, nx.MultiDiGraph]:
    """The cache signature of each graph that has one (graphs without one are left out)."""
    out: dict[str | None, nx.MultiDiGraph] = {}
    for sig, g in graphs.items():
        name = cache_name(sig)
        if name in graphs:  # the spec declares a signature of that name itself
            continue
        try:
            out[name] = with_kv_cache(g)
        except CacheError:
            continue
    return out


def cache_error(spec_name: str, name: str, exc: CacheError, pos: Any) -> SpecError:
    """A located error for a derived signature that cannot be built."""
    return SpecError.single("no-cache", f"spec '{spec_name}' has no signature '{name}': {exc}", pos, None, ())
