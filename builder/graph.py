"""The checked graph: a `networkx.MultiDiGraph` whose nodes carry a frozen `Node` payload
(op, validated arguments, inferred input and output types, weight shapes, source position)
and whose edges are tensors (keyed by the consumer's input port)."""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import networkx as nx

from .errors import Diagnostic, SourcePos, SpecError, did_you_mean
from .initialisers import NEEDS_2D, Init, parse_init
from .limits import Limits
from .ops import Op
from .resolve import BlockCall, Frame, TensorRef, expand
from .spec import InputSpec, Spec
from .tensor import TensorType

__all__ = ["Node", "compile_graph", "graph_inputs", "graph_outputs", "nodes", "param_count"]

INPUT = "input"
"""The op name of graph-input nodes (placeholders); every other node's op is in `OPS`."""


@dataclass(frozen=True)
class Node:
    """One node of the checked graph.

    Attributes:
        id: full dotted id (``encoder.3.attn``); names the submodule, weights and ONNX nodes.
        op: the op name, or ``input`` for a graph input.
        model: the validated op arguments (None for inputs).
        bindings: input port to the tensor feeding it.
        inputs: input port to its type.
        outputs: output port to its type.
        weights: own weights (tied ones excluded), name to shape.
        ties: tied weight name to the tensor that owns it (``(node id, weight name)``).
        scope: the block calls around the node, outermost first.
        pos: where the node is written.
        inits: initialisers the spec asks for, by own weight name (others: PyTorch's defaults).
    """

    id: str
    op: str
    model: Op | None
    bindings: dict[str, TensorRef]
    inputs: dict[str, TensorType]
    outputs: dict[str, TensorType]
    weights: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ties: dict[str, tuple[str, str]] = field(default_factory=dict)
    scope: tuple[Frame, ...] = ()
    pos: SourcePos = field(default_factory=SourcePos)
    inits: dict[str, Init] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(map(math.prod, self.weights.values()))


def nodes(g: nx.MultiDiGraph) -> list[Node]:
    """The graph's nodes in a deterministic topological order (inputs first)."""
    return [g.nodes[n]["node"] for n in g.graph["order"]]


def graph_inputs(g: nx.MultiDiGraph) -> dict[str, TensorType]:
    return {name: g.nodes[name]["node"].outputs["y"] for name in g.graph["inputs"]}


def graph_outputs(g: nx.MultiDiGraph) -> dict[str, TensorType]:
    return {name: g.nodes[ref.node]["node"].outputs[ref.port] for name, ref in g.graph["outputs"].items()}


def param_count(g: nx.MultiDiGraph) -> int:
    return sum(n.params for n in nodes(g))


@contextlib.contextmanager
def without_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: loading and checking build many small acyclic objects, and
    collections triggered by them make large specs load superlinearly."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@without_gc()
def compile_graph(spec: Spec, signature: str | None = None, limits: Limits | None = None,
                  warnings: list[Diagnostic] | None = None) -> nx.MultiDiGraph:
    """Expand, wire and shape-check `spec` (or one of its signatures) into the checked graph.

    Raises:
        SpecError: with every independent error found; warnings (unused nodes) are appended
            to `warnings` when given.
    """
    limits = limits or spec._limits
    if signature is not None and signature not in spec.signatures:
        from . import kv_cache  # a derived signature (the key/value cache of a causal decoder, its cross keys)

        derived, base_sig = kv_cache.base_signature(signature, spec.signatures)
        if derived:
            try:
                return kv_cache.derive(signature, compile_graph(spec, base_sig, limits, warnings))
            except kv_cache.CacheError as exc:
                raise kv_cache.cache_error(spec.name, signature, exc, spec.source.pos(())) from None
        known = ", ".join(spec.signatures) or "(none)"
        raise SpecError.single("unknown-signature", f"spec '{spec.name}' has no signature '{signature}'",
                               spec.source.pos(("signatures",)), None,
                               (*did_you_mean(signature, spec.signatures), f"signatures: {known}"))
    calls: dict[str, BlockCall] = {}
    pending, outputs, diags = expand(spec, limits, signature, calls)
    inputs: dict[str, InputSpec] = spec.inputs if signature is None else spec.signatures[signature].inputs
    base = () if signature is None else ("signatures", signature)
    g = nx.MultiDiGraph(name=spec.name, doc=spec.doc, signature=signature, params=spec.resolved_params,
                        file=spec.source.file)
    for name, inp in inputs.items():
        t = TensorType.of(inp.shape, inp.dtype)
        g.add_node(name, node=Node(name, INPUT, None, {}, {}, {"y": t}, pos=spec.source.pos((*base, "inputs", name))))
    order = list(inputs)
    owners: dict[str, Node] = {}
    for p in pending:
        if not p.outputs:  # its shapes failed (reported), or an input's did
            continue
        node = Node(p.id, p.model.op, p.model, p.bindings, p.inputs, p.outputs, p.weights, {}, p.scope, p.pos)
        g.add_node(node.id, node=node)
        for port, ref in p.bindings.items():
            g.add_edge(ref.node, node.id, key=port, src_port=ref.port, type=p.inputs[port])
        order.append(node.id)
        owners[node.id] = node
    aliases: dict[str, str] = {}
    for node in list(owners.values()):
        _check_ties(node, owners, g, diags, aliases)
    _resolve_inits(spec, owners, g, diags)
    _check_memory(spec, list(owners.values()), limits, diags)
    g.graph["order"] = order
    g.graph["inputs"] = list(inputs)
    g.graph["outputs"] = {k: v for k, v in outputs.items() if v is not None}
    g.graph["aliases"] = aliases
    g.graph["calls"] = calls  # block calls by path: their blocks, input and output tensors
    g.graph["block_docs"] = {name: block.doc for name, block in spec.blocks.items()}
    g.graph["checkpoint_blocks"] = sorted(name for name, block in spec.blocks.items() if block.checkpoint)
    _dedupe_into(diags, warnings)
    errors = [d for d in diags if d.severity == "error"]
    if errors:
        raise SpecError(_dedupe(diags))
    return g


def _check_memory(spec: Spec, owners: list[Node], limits: Limits, diags: list[Diagnostic]) -> None:
    """Refuse weights (and fixed buffers such as a sinusoidal table) larger than the limit, before any is allocated."""
    sizes = [(n.params + sum(map(math.prod, n.model.buffers(n.inputs).values())), n)
             for n in owners if n.model is not None]
    total = sum(size for size, _ in sizes)
    if total * 4 > limits.max_weight_bytes:
        size, largest = max(sizes, key=lambda item: item[0])
        diags.append(Diagnostic("limit", f"the weights need {_size(total * 4)} in float32, more than the "
                                f"{_size(limits.max_weight_bytes)} allowed", spec.source.pos(()), None,
                                (f"the largest is node '{largest.id}' ({largest.op}) with {_count(size)} values",
                                 "raise it with --limit max_weight_bytes=N")))


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about 10^{len(str(n)) - 1}"


def _size(size: int) -> str:
    """A size in bytes for a message (``240.3 KiB``, ``3.73e+79 GiB``); a mistaken spec's may not fit a float."""
    if size.bit_length() > 1000:
        return f"about 10^{len(str(size)) - 1} bytes"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            value = size / scale
            return f"{value:,.1f} {unit}" if value < 1e6 else f"{value:.3g} {unit}"
    return f"{size} bytes"


def _check_ties(node: Node, owners: dict[str, Node], g: nx.MultiDiGraph, diags: list[Diagnostic],
                aliases: dict[str, str]) -> None:
    """Resolve `tie:`; a tie to a node this graph (a signature) leaves out keeps the weight here, aliased."""
    assert node.model is not None
    tied = node.model.tied()
    if not tied:
        return
    ties: dict[str, tuple[str, str]] = {}
    weights = dict(node.weights)
    prefix = node.scope[-1].path + "." if node.scope else ""
    for name, target in tied.items():
        owner_id, _, weight = target.rpartition(".")
        owner = owners.get(prefix + owner_id) or owners.get(owner_id)
        if owner is None and g.graph["signature"] is not None and name in weights:
            # The owner is outside this signature: the first node tied to it holds the weight here.
            holder = next((k for k, v in aliases.items() if v == target), None)
            if holder is None:
                aliases[f"{node.id}.{name}"] = target
                continue
            owner_id, _, weight = holder.rpartition(".")
            owner = owners[owner_id]
        if name not in weights:
            diags.append(Diagnostic("bad-tie", f"tie: the op has no weight '{name}' (weights: {', '.join(weights)})",
                                    node.pos, node.id))
        elif owner is None or weight not in owner.weights:
            have = f" (its weights: {', '.join(owner.weights)})" if owner else ""
            diags.append(Diagnostic("bad-tie", f"tie: '{target}' names no weight{have}", node.pos, node.id))
        elif owner.weights[weight] != weights[name]:
            diags.append(Diagnostic("bad-tie", f"tie: weight '{name}' is {list(weights[name])}, but '{target}' is "
                                    f"{list(owner.weights[weight])}", node.pos, node.id))
        else:
            ties[name] = (owner.id, weight)
            del weights[name]
    if ties:
        new = Node(node.id, node.op, node.model, node.bindings, node.inputs, node.outputs, weights, ties,
                   node.scope, node.pos)
        owners[node.id] = new
        g.nodes[node.id]["node"] = new


def _resolve_inits(spec: Spec, owners: dict[str, Node], g: nx.MultiDiGraph, diags: list[Diagnostic]) -> None:
    """Give each node its initialisers: its own `init:`, else the spec's `init:` for its op.

    A node's own init must name one of its own (untied) weights; a default applies to the nodes
    of its op that have that weight, and must fit at least one of them.
    """
    used: set[tuple[str, str]] = set()
    for node in list(owners.values()):
        assert node.model is not None
        inits: dict[str, Init] = {}
        for name, text in spec.init.get(node.op, {}).items():
            if name in node.ties:
                used.add((node.op, name))  # its owner is initialised
            elif name in node.weights:
                init = parse_init(text)
                problem = _misfit(init, name, node)
                if problem:
                    diags.append(Diagnostic("bad-init", problem, spec.source.pos(("init", node.op, name)), node.id))
                else:
                    inits[name] = init
                    used.add((node.op, name))
        for name, init in node.model.inits().items():
            if name in node.ties:
                owner, weight = node.ties[name]
                diags.append(Diagnostic("bad-init", f"init: weight '{name}' is tied to '{owner}.{weight}'; "
                                        "initialise it there", node.pos, node.id))
            elif name not in node.weights:
                own = ", ".join(node.weights) or "none"
                diags.append(Diagnostic("bad-init", f"init: the op has no weight '{name}' (weights: {own})", node.pos,
                                        node.id, did_you_mean(name, node.weights)))
            else:
                problem = _misfit(init, name, node)
                if problem:
                    diags.append(Diagnostic("bad-init", problem, node.pos, node.id))
                else:
                    inits[name] = init
        if inits:
            owners[node.id] = replace(node, inits=inits)
            g.nodes[node.id]["node"] = owners[node.id]
    ops = {n.op for n in owners.values()}
    for op, defaults in spec.init.items():
        for name in defaults:
            if (op, name) in used or op not in ops:
                continue
            have = sorted({w for n in owners.values() if n.op == op for w in [*n.weights, *n.ties]})
            diags.append(Diagnostic("bad-init", f"init: no {op} node has a weight '{name}' (weights: "
                                    f"{', '.join(have) or 'none'})", spec.source.pos(("init", op, name)), None,
                                    did_you_mean(name, have)))


def _misfit(init: Init, name: str, node: Node) -> str | None:
    """Why `init` cannot initialise weight `name` of `node`, or None when it can."""
    shape = node.weights[name]
    if init.fn in NEEDS_2D and len(shape) < 2:
        return f"init: {init.fn} reads fan-in and fan-out, so it needs a weight of rank 2 or more; '{name}' is {list(shape)}"
    return None


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[str, str, SourcePos, str]] = set()
    out = []
    for d in diags:
        key = (d.severity, d.code, d.pos, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _dedupe_into(diags: list[Diagnostic], warnings: list[Diagnostic] | None) -> None:
    if warnings is not None:
        warnings.extend(d for d in _dedupe(diags) if d.severity == "warning")
