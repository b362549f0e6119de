"""Block expansion: the spec's nodes (and its blocks' nodes, copy by copy) become a flat list
of validated op nodes with resolved input bindings, in an order where inputs come first.

Within one body (the main graph, a signature, or a block) nodes are processed in the
topological order of their references, so a block call is expanded once its inputs are
known and the nodes after it can refer to its outputs. A block call is atomic: a cycle
through one is a cycle even where the block's own wiring would break it.

Shapes are inferred node by node as the nodes are expanded, so that a block's expressions can
read the sizes of its inputs (``${x.channels}``). Conditionals are resolved here too: a node
whose ``when:`` is false, or a block call with ``repeat: 0``, does not exist, and refs to it
(or to its first port) stand for its first input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from pydantic import ValidationError

from .conditions import Conditionals, _Entry
from .errors import Diagnostic, SpecError, did_you_mean
from .expanded import BlockCall, Frame, Pending, TensorRef
from .expr import SIZES as _SIZES
from .expr import Expressions, TensorSizes
from .limits import Limits
from .ops import OPS, VARIADIC, Op
from .ops.base import PLUGIN_OF
from .params import has_expr, resolve_params, substitute_tree
from .recursion import recursion_errors
from .source import DataPath, Source
from .spec import BlockSpec, Spec, validation_diagnostics
from .tensor import ShapeError, TensorType

__all__ = ["BlockCall", "Frame", "Pending", "TensorRef", "expand"]  # the first four from .expanded

_HINTS = 20
"""Did-you-mean hints given per graph (see `_Expander.hint`)."""


@dataclass
class _Result:
    """A processed local node: an op node's id and ports, a block call's outputs, or an absent node."""

    node: str | None = None
    ports: tuple[str, ...] = ()
    outputs: dict[str, TensorRef] = field(default_factory=dict)
    absent: str | None = None  # why the node does not exist ("when: false", "repeat: 0")
    through: TensorRef | None = None  # what refs to an absent node stand for: its first input
    has_input: bool = True  # whether the absent node has an input to pass on


def _refs(value: Any) -> list[tuple[str, tuple[str | int, ...]]]:
    """The refs an `in:` value names, each with its place inside it (() for a lone ref)."""
    if isinstance(value, str):
        return [(value, ())]
    if isinstance(value, list):
        return [(v, (i,)) for i, v in enumerate(value) if isinstance(v, str)]
    if isinstance(value, dict):
        return [(v, (k,)) for k, v in value.items() if isinstance(v, str)]
    return []


def _texts(value: Any) -> Iterable[str]:
    """Every text inside `value` (mappings, lists)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def _with_ancestors(roots: list[str], edges: list[tuple[str, str]]) -> set[str]:
    """The `roots` and every node they depend on through `edges` (producer, consumer)."""
    producers: dict[str, list[str]] = {}
    for a, b in edges:
        producers.setdefault(b, []).append(a)
    found = set(roots)
    todo = list(found)
    while todo:
        for a in producers.get(todo.pop(), ()):
            if a not in found:
                found.add(a)
                todo.append(a)
    return found


MAX_SIZE_TERMS = 2_000
"""The most terms a symbolic size may hold (ceil-mode pooling concatenated with its input doubles
it at each level; 40 levels would take sympy longer than anyone waits)."""


def _grown(size: Any) -> bool:
    """Whether `size` holds more than `MAX_SIZE_TERMS` terms, counted up to that bound only."""
    if getattr(size, "is_Integer", False) or getattr(size, "is_Symbol", False):
        return False
    todo, seen = [size], 0
    while todo:
        seen += 1
        if seen > MAX_SIZE_TERMS:
            return True
        todo.extend(getattr(todo.pop(), "args", ()))
    return False


class _Expander(Conditionals):
    def __init__(self, spec: Spec, limits: Limits) -> None:
        self.spec = spec
        self.source: Source = spec.source
        self.limits = limits
        self.exprs = Expressions(limits.max_int_bits, limits.max_expr_chars)  # one count for the whole expansion
        self.params = spec.resolved_params
        self.nodes: list[Pending] = []
        self.diags: list[Diagnostic] = []
        self.block_sizes: dict[str, int] = {}
        self.copies = 0  # block bodies expanded, kept or not: what checking costs, bounded like the nodes
        self.reading: dict[str, bool] = {}
        self.types: dict[TensorRef, TensorType] = {}
        self.symbols: set[str] = set()  # the symbolic dims of the graph's inputs: all a size may use
        self.hints_left = _HINTS
        self.calls: dict[str, BlockCall] = {}  # by path (``h.3``); the backends give each its own module

    def hint(self, word: str, choices: Iterable[str]) -> tuple[str, ...]:
        """A did-you-mean hint for each of the first `_HINTS` misspelt names; past them the spec is broken
        wholesale, and comparing each of thousands of names with every other would take minutes."""
        self.hints_left -= 1
        return did_you_mean(word, choices) if self.hints_left >= 0 else ()

    def error(self, code: str, message: str, path: DataPath, node: str | None, hints: tuple[str, ...] = ()) -> None:
        self.diags.append(Diagnostic(code, message, self.source.pos(path), node, hints))

    # --- one body ----------------------------------------------------------------------

    def body(self, entries: dict[str, _Entry], outputs: Mapping[str, tuple[str, DataPath]],
             env: Mapping[str, TensorRef | None], params: Mapping[str, Any], prefix: str,
             frames: tuple[Frame, ...], stack: tuple[str, ...]) -> dict[str, TensorRef | None]:
        """Expand one body; returns its outputs (None where a failure upstream left one unknown)."""
        known = [*env, *entries]
        absent = self.absent_nodes(entries, params, prefix)
        edges: list[tuple[str, str]] = []  # (producer, consumer) within this body
        live: list[tuple[str, str]] = []  # the edges that remain once absent nodes pass on their first input
        dangling: list[tuple[str, str, DataPath]] = []
        for nid, entry in entries.items():
            gone = absent.get(nid)
            for ref, where in _refs(entry.raw.get("in")):
                name = ref.partition(".")[0]
                if name in entries:
                    edges.append((name, nid))
                    if gone is None or ref == gone.first:
                        live.append((name, nid))
                elif name not in env:
                    dangling.append((nid, ref, (*entry.in_path, *where)))
        roots = []
        for out, (ref, path) in outputs.items():
            name = ref.partition(".")[0]
            if name in entries:
                roots.append(name)
            elif name not in env:
                self.error("bad-output", f"output '{out}' names '{ref}', which is no node or input", path, None,
                           self.hint(name, known))
        written = _with_ancestors(roots, edges)  # the nodes the outputs need were every node present
        # Nodes that only an absent node uses are left out silently: the spec asks for them when it is present.
        needed = _with_ancestors(roots, live) if absent else written
        for nid, ref, path in dangling:
            if nid in written or entries[nid].warn_unused:  # a signature ignores main nodes it does not use
                self.error("dangling-ref", f"'{ref}' names no node or input", path, prefix + nid,
                           self.hint(ref.partition(".")[0], known))
        for nid, entry in entries.items():
            if nid not in written and entry.warn_unused:
                self.diags.append(Diagnostic(
                    "unused-node", "reaches no output, so it is left out", self.source.pos(entry.path),
                    prefix + nid, severity="warning"))
        index = {nid: i for i, nid in enumerate(entries)}
        # Definition order wherever the wiring allows it (a needed node's producers are needed too).
        order: list[str] | None
        if all(index[a] < index[b] for a, b in live if b in needed):
            order = [nid for nid in entries if nid in needed]  # already in order: the common case
        else:
            order = self.sort(entries, live, needed, index, prefix)
        if order is None:
            return dict.fromkeys(outputs)
        results: dict[str, _Result | None] = {}
        for nid in order:
            gone = absent.get(nid)
            if gone is None:
                results[nid] = self.node(nid, entries[nid], env, results, params, prefix, frames, stack)
            elif gone.reason is None:
                results[nid] = None  # its `when` or `repeat` failed: reported
            else:
                through = None if gone.first is None else self.lookup(gone.first, env, results, entries[nid].in_path,
                                                                       prefix + nid)
                results[nid] = _Result(absent=gone.reason, through=through, ports=self.first_port(entries[nid], params),
                                       has_input=gone.first is not None)
        return {out: self.lookup(ref, env, results, path, None) for out, (ref, path) in outputs.items()}

    def sort(self, entries: dict[str, _Entry], edges: list[tuple[str, str]], needed: set[str], index: dict[str, int],
             prefix: str) -> list[str] | None:
        """The needed nodes in an order where producers come first, nearest to definition order; None on a cycle."""
        local = nx.DiGraph()
        local.add_nodes_from(entries)
        local.add_edges_from(edges)
        local.remove_nodes_from([nid for nid in entries if nid not in needed])
        try:
            return list(nx.lexicographical_topological_sort(local, key=index.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(local)
            loop = " -> ".join([*(prefix + a for a, _ in cycle), prefix + cycle[0][0]])
            self.error("cycle", f"the graph has a cycle: {loop}", entries[cycle[0][0]].in_path, prefix + cycle[0][0])
            return None

    def lookup(self, ref: str, env: Mapping[str, TensorRef | None], results: Mapping[str, _Result | None],
               path: DataPath, node: str | None) -> TensorRef | None:
        name, _, port = ref.partition(".")
        if name in env:
            if port:
                self.error("unknown-port", f"'{name}' is an input, it has no port '{port}'", path, node)
                return None
            return env[name]
        result = results.get(name)
        if result is None:
            return None  # failed upstream (already reported) or dangling (reported above)
        if result.absent is not None:
            return self.through(name, port, result, path, node)
        if result.node is not None:
            if not port:
                return TensorRef(result.node, result.ports[0])
            if port not in result.ports:
                self.error("unknown-port", f"node '{name}' has no output port '{port}' (ports: {', '.join(result.ports)})",
                           path, node, did_you_mean(port, result.ports))
                return None
            return TensorRef(result.node, port)
        if not port:
            return next(iter(result.outputs.values()))
        if port not in result.outputs:
            self.error("unknown-port", f"block call '{name}' has no output '{port}' (outputs: {', '.join(result.outputs)})",
                       path, node, did_you_mean(port, result.outputs))
            return None
        return result.outputs[port]

    # --- one node ------------------------------------------------------------------------

    def node(self, nid: str, entry: _Entry, env: Mapping[str, TensorRef | None], results: Mapping[str, _Result | None],
             params: Mapping[str, Any], prefix: str, frames: tuple[Frame, ...], stack: tuple[str, ...]) -> _Result | None:
        full = prefix + nid
        op = self.op_name(entry, params, full)
        if op is None and "op" in entry.raw:
            return None  # a `${...}` that failed: reported
        if not isinstance(op, str):
            self.error("missing-key" if op is None else "bad-arg",
                       "missing required key 'op'" if op is None else f"op must be a name, got {op!r}",
                       entry.path if op is None else (*entry.path, "op"), full)
            return None
        if op in OPS:
            return self.op_node(full, OPS[op], entry, env, results, params, frames)
        if op in self.spec.blocks:
            return self.block_call(full, op, entry, env, results, params, frames, stack)
        written = entry.raw["op"]
        chosen = f" (from '{written}')" if written != op else ""
        self.error("unknown-op", f"unknown op '{op}'{chosen}", (*entry.path, "op"), full,
                   (*self.hint(op, [*OPS, *self.spec.blocks]), "`nnspec ops` lists the ops"))
        return None

    def inputs_of(self, full: str, ports: tuple[str, ...], optional: frozenset[str], minimum: int, entry: _Entry,
                  env: Mapping[str, TensorRef | None], results: Mapping[str, _Result | None]) -> dict[str, TensorRef] | None:
        """Bind the node's `in` to ports: one ref to the first, a list in order, a mapping by name."""
        value = entry.raw.get("in")
        if not ports:  # an op without inputs (constant, parameter)
            if value is not None and value != {} and value != []:
                self.error("bad-arg", "in: the op takes no inputs", entry.in_path, full)
                return None
            return {}
        if value is None:
            self.error("missing-key", "missing required key 'in'", entry.path, full)
            return None
        variadic = ports == (VARIADIC,)
        if isinstance(value, str):
            named = {"0" if variadic else ports[0]: value}
        elif isinstance(value, list):
            if not variadic and len(value) > len(ports):
                self.error("bad-arg", f"{len(value)} inputs given, the op takes at most {len(ports)} ({', '.join(ports)})",
                           entry.in_path, full)
                return None
            named = {(str(i) if variadic else ports[i]): v for i, v in enumerate(value)}
        elif isinstance(value, dict):
            named = dict(value)
        else:
            self.error("bad-arg", f"in: expected a ref, a list or a mapping, got {type(value).__name__}", entry.in_path, full)
            return None
        ok = True
        if variadic:
            if len(named) < minimum:
                self.error("bad-arg", f"needs at least {minimum} inputs, got {len(named)}", entry.in_path, full)
                ok = False
        else:
            for port in named:
                if port not in ports:
                    self.error("unknown-port", f"no input port '{port}' (ports: {', '.join(ports)})",
                               (*entry.in_path, port), full, did_you_mean(port, ports))
                    ok = False
            missing = [p for p in ports if p not in named and p not in optional]
            if missing:
                self.error("missing-input", f"input {', '.join(missing)} is not connected", entry.in_path, full)
                ok = False
        bound: dict[str, TensorRef] = {}
        for port, ref in named.items():
            if not isinstance(ref, str):
                self.error("bad-arg", f"in: expected a ref, got {ref!r}", entry.in_path, full)
                ok = False
                continue
            target = self.lookup(ref, env, results, entry.in_path, full)
            if target is None:
                ok = False
            else:
                bound[port] = target
        return bound if ok else None

    def op_node(self, full: str, cls: type[Op], entry: _Entry, env: Mapping[str, TensorRef | None],
                results: Mapping[str, _Result | None], params: Mapping[str, Any], frames: tuple[Frame, ...]) -> _Result | None:
        data = entry.raw  # nothing to substitute (the common case): validated as written
        if "when" in data:  # decided already (true, or the node would not be here)
            data = {k: v for k, v in data.items() if k != "when"}
        if has_expr(data):  # params in the arguments; `in` and `tie` are refs, left as written
            args = {k: v for k, v in data.items() if k not in ("in", "tie")}
            before = len(self.diags)
            data = substitute_tree(args, params, entry.path, self.source, self.exprs, full, self.diags)
            if len(self.diags) > before:
                return None
            data = {**data, **{k: entry.raw[k] for k in ("in", "tie") if k in entry.raw}}
        try:
            model = cls.model_validate(data)
        except ValidationError as exc:
            self.diags.extend(validation_diagnostics(exc, data, self.source, entry.path, full, cls))
            return None
        bindings = self.inputs_of(full, cls.INPUTS, cls.OPTIONAL, cls.MIN_INPUTS, entry, env, results)
        if bindings is None:
            return None
        pending = Pending(full, model, bindings, frames, self.source.pos(entry.path))
        self.infer(pending)
        self.nodes.append(pending)
        if len(self.nodes) > self.limits.max_nodes:
            raise SpecError([*self.diags, Diagnostic(
                "limit", f"more than {self.limits.max_nodes} nodes after expanding blocks", self.source.pos(entry.path),
                full, ("raise it with --limit max_nodes=N",))])
        return _Result(node=full, ports=model.output_ports())

    def infer(self, p: Pending) -> None:
        """Infer the node's output types (and weight shapes) from its inputs'; a failure is reported and
        leaves its outputs untyped, so that the nodes after it are skipped silently."""
        if any(ref not in self.types for ref in p.bindings.values()):
            return  # an input failed upstream; that failure is already reported
        ins = {port: self.types[ref] for port, ref in p.bindings.items()}
        plugin = PLUGIN_OF.get(p.model.op)
        try:
            outs = p.model.infer(ins)
            weights = p.model.weights(ins)
        except ShapeError as exc:
            src = p.bindings.get(exc.port) if exc.port else None
            where = f"input '{exc.port}' (from '{src}')" if src else "input"
            self.diags.append(Diagnostic("shape-mismatch", f"{where}: {exc}", p.pos, p.id))
            return
        except Exception as exc:
            if plugin is None:
                raise  # a bug in a built-in op's shape rule
            self.diags.append(Diagnostic("plugin-error", f"the shape rule of op '{p.model.op}' (plugin '{plugin}') "
                                         f"failed: {type(exc).__name__}: {exc}", p.pos, p.id))
            return
        if plugin is not None and not all(isinstance(t, TensorType) for t in outs.values()):
            self.diags.append(Diagnostic("plugin-error", f"the shape rule of op '{p.model.op}' (plugin '{plugin}') "
                                         "must return a TensorType for each output port", p.pos, p.id))
            return
        if tuple(outs) != p.model.output_ports():  # pragma: no cover - a bug in an op declaration
            raise AssertionError(f"op '{p.model.op}' inferred ports {tuple(outs)}, declares {p.model.output_ports()}")
        for port, t in outs.items():
            unknown = [] if all(d.is_Integer for d in t.shape) else sorted(t.symbols - self.symbols)
            if unknown:
                have = ", ".join(sorted(self.symbols)) or "none: every input size is fixed"
                self.diags.append(Diagnostic("shape-mismatch", f"output '{port}': size '{unknown[0]}' is no dim of the "
                                             f"graph's inputs, so nothing gives its value (their dims: {have})",
                                             p.pos, p.id, did_you_mean(unknown[0], self.symbols)))
                return
        for port, t in outs.items():
            if any(_grown(d) for d in t.shape):  # each level may double it: checking would never end
                self.diags.append(Diagnostic(
                    "limit", f"output '{port}': a size expression has grown past {MAX_SIZE_TERMS:,} terms, too large "
                    "to check", p.pos, p.id, ("give the input fixed sizes (or --set them) where the sizes compound",)))
                return
        for port, t in outs.items():
            self.types[TensorRef(p.id, port)] = t
        p.inputs, p.outputs, p.weights = ins, outs, weights

    def sizes(self, env: Mapping[str, TensorRef | None]) -> dict[str, TensorSizes] | None:
        """The tensors in scope whose sizes expressions may read (``x.channels``); None when one is unknown
        (a shape failed upstream, already reported)."""
        out: dict[str, TensorSizes] = {}
        for name, ref in env.items():
            t = self.types.get(ref) if ref is not None else None
            if t is None:
                return None
            out[name] = TensorSizes(name, tuple(int(d) if d.is_Integer else d for d in t.shape))
        return out

    def block_size(self, name: str, stack: tuple[str, ...] = ()) -> int:
        """At least how many op nodes one call of block `name` expands to: a ``repeat`` written as a
        number multiplies, one written as an expression counts once. Recursion is reported elsewhere."""
        if name in stack or len(stack) > self.limits.max_block_depth:
            return 0
        if name not in self.block_sizes:
            size = 0
            for raw in self.spec.blocks[name].nodes.values():
                op, repeat = raw.get("op"), raw.get("repeat")
                if isinstance(op, str) and op in self.spec.blocks:
                    copies = repeat if isinstance(repeat, int) and not isinstance(repeat, bool) and repeat > 1 else 1
                    size += copies * self.block_size(op, (*stack, name))
                else:
                    size += 1
            self.block_sizes[name] = size
        return self.block_sizes[name]

    def check_size(self, full: str, name: str, entry: _Entry, repeat: int | None) -> None:
        """Refuse a block call that would make more than `max_nodes` nodes before expanding any of it
        (``repeat: 1000000000``, or blocks that each call the next one twice, 30 deep)."""
        size = len(self.nodes) + (repeat or 1) * self.block_size(name)
        if size > self.limits.max_nodes:
            copies = f" repeated {repeat} times" if repeat is not None else ""
            raise SpecError([*self.diags, Diagnostic(
                "limit", f"block '{name}'{copies} expands to at least {size:,} nodes, more than {self.limits.max_nodes:,}",
                self.source.pos((*entry.path, "repeat" if repeat is not None else "op")), full,
                ("raise it with --limit max_nodes=N",))])

    def block_call(self, full: str, name: str, entry: _Entry, env: Mapping[str, TensorRef | None],
                   results: Mapping[str, _Result | None], params: Mapping[str, Any], frames: tuple[Frame, ...],
                   stack: tuple[str, ...]) -> _Result | None:
        block: BlockSpec = self.spec.blocks[name]
        if name in stack:
            chain = " -> ".join([*stack[stack.index(name):], name])
            self.error("recursion", f"block '{name}' calls itself: {chain}", (*entry.path, "op"), full)
            return None
        if len(stack) >= self.limits.max_block_depth:
            self.error("limit", f"blocks nest deeper than {self.limits.max_block_depth}", (*entry.path, "op"), full)
            return None
        before = len(self.diags)
        call = {k: v for k, v in entry.raw.items() if k not in ("op", "in", "doc", "when")}
        call = substitute_tree(call, params, entry.path, self.source, self.exprs, full, self.diags)
        repeat = call.pop("repeat", None)
        if repeat is not None and (isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0):
            self.error("bad-arg", f"repeat: expected an integer >= 0, got {repeat!r}", (*entry.path, "repeat"), full)
        else:
            self.check_size(full, name, entry, repeat)
        bound = self.inputs_of(full, tuple(block.inputs), frozenset(), 1, entry, env, results)
        sizes = self.sizes(bound) if bound is not None else None
        if sizes is None and self.reads_sizes(name):
            return None  # its inputs' sizes are unknown: their failure is reported already
        block_params = self.block_params(full, name, entry, call, sizes)
        if bound is None or block_params is None or len(self.diags) > before:
            return None
        count = 1 if repeat is None else int(repeat)
        body = {nid: _Entry(raw, ("blocks", name, "nodes", nid), ("blocks", name, "nodes", nid, "in"))
                for nid, raw in block.nodes.items()}
        outs = {k: (v, ("blocks", name, "outputs", k)) for k, v in block.outputs.items()}
        scope = frames if repeat is None else (*frames, Frame(full, name, repeat=count))
        current: dict[str, TensorRef | None] = dict(bound)
        produced: dict[str, TensorRef | None] = {}
        for i in range(count):
            self.copies += 1
            if self.copies > self.limits.max_nodes:  # copies of unused nodes cost work but make no node
                raise SpecError([*self.diags, Diagnostic(
                    "limit", f"blocks expand into more than {self.limits.max_nodes:,} copies (used or not)",
                    self.source.pos((*entry.path, "op")), full,
                    ("raise it with --limit max_nodes=N",))])
            path = full if repeat is None else f"{full}.{i}"
            inner = (*scope, Frame(path, name, index=None if repeat is None else i))
            if i > 0 and self.reads_sizes(name):  # this copy's input is the last one's output: sizes may differ
                sizes = self.sizes(current)
                block_params = self.block_params(full, name, entry, call, sizes) if sizes is not None else None
                if block_params is None:
                    return None
            produced = self.body(body, outs, current, block_params, path + ".", inner, (*stack, name))
            if any(v is None for v in produced.values()):
                return None
            self.calls[path] = BlockCall(name, {k: v for k, v in current.items() if v is not None},
                                         {k: v for k, v in produced.items() if v is not None},
                                         {k: block_params[k] for k in block.params})
            current = {**current, block.inputs[0]: next(iter(produced.values()))}
        return _Result(outputs={k: v for k, v in produced.items() if v is not None})

    def block_params(self, full: str, name: str, entry: _Entry, call: dict[str, Any],
                     sizes: dict[str, TensorSizes] | None) -> dict[str, Any] | None:
        """The params in scope inside one call of a block: its own (the call's values over its defaults),
        the sizes of its inputs, and the spec's params; None when one fails (reported)."""
        block = self.spec.blocks[name]
        outer = {**self.params, **sizes} if sizes else self.params
        try:
            block_params, diags = resolve_params(block.params, call, outer, self.source, ("blocks", name, "params"),
                                                 self.exprs, full, self.source.pos(entry.path))
        except SpecError as exc:  # the expressions' limit: the problems found so far come first
            raise SpecError([*self.diags, *exc.errors]) from None
        self.diags.extend(diags)
        missing = [key for key in block.params if block_params.get(key) is None]
        for key in missing:
            self.error("missing-param", f"block '{name}' needs param '{key}'", entry.path, full)
        return None if diags or missing else block_params

    def reads_sizes(self, name: str) -> bool:
        """Whether an expression in block `name` reads the sizes of one of its inputs (``${x.channels}``)."""
        found = self.reading.get(name)
        if found is None:
            block = self.spec.blocks[name]
            pattern = re.compile(rf"\b(?:{'|'.join(map(re.escape, block.inputs))})\s*\.\s*(?:{'|'.join(_SIZES)})\b")
            found = any(pattern.search(text) for text in _texts([block.params, block.nodes]) if "${" in text)
            self.reading[name] = found
        return found


def expand(spec: Spec, limits: Limits, signature: str | None = None, calls: dict[str, BlockCall] | None = None,
           ) -> tuple[list[Pending], dict[str, TensorRef | None], list[Diagnostic]]:
    """Expand the main graph (or a signature) of `spec` into validated op nodes and its outputs; `calls`,
    when given, receives every block call by path."""
    ex = _Expander(spec, limits)
    ex.calls = calls if calls is not None else {}
    if spec.imports and not spec.source.imports_resolved:
        ex.error("bad-import", "imports: a spec given as a dict has no file to import from; load it from a file, or "
                 "as text (imports are then found from the current directory)", ("imports",), None)
    entries = {nid: _Entry(raw, ("nodes", nid), ("nodes", nid, "in")) for nid, raw in spec.nodes.items()}
    inputs: Mapping[str, Any] = spec.inputs
    outputs: dict[str, tuple[str, DataPath]] = {k: (v, ("outputs", k)) for k, v in spec.outputs.items()}
    if signature is not None:
        sig = spec.signatures[signature]
        base: DataPath = ("signatures", signature)
        for entry in entries.values():
            entry.warn_unused = False  # nodes of the main graph that this signature does not need
        for nid, raw in sig.nodes.items():
            path = (*base, "nodes", nid)
            if "op" not in raw and nid in entries:
                main = entries[nid]
                entries[nid] = _Entry({**main.raw, **raw}, main.path, (*path, "in"))
            else:
                entries[nid] = _Entry(raw, path, (*path, "in"))
        inputs = sig.inputs
        outputs = {k: (v, (*base, "outputs", str(k))) for k, v in sig.outputs.items()}
    for name in inputs:
        if name in entries:
            ex.error("duplicate-id", f"'{name}' is both an input and a node", entries[name].path, name)
            del entries[name]
    for bname, block in spec.blocks.items():
        for name in block.inputs:
            if name in block.nodes:
                ex.error("duplicate-id", f"'{name}' is both an input and a node of block '{bname}'",
                         ("blocks", bname, "nodes", name), name)
    env = {name: TensorRef(name, "y") for name in inputs}
    for name, inp in inputs.items():
        ex.types[env[name]] = TensorType.of(inp.shape, inp.dtype)
        ex.symbols |= ex.types[env[name]].symbols
    params = {**(ex.sizes(env) or {}), **ex.params}  # the graph's inputs' sizes may be read too; params win
    result = ex.body(entries, outputs, env, params, "", (), ())
    ex.diags.extend(recursion_errors(spec, ex.diags))  # calls in nodes that were never expanded
    return ex.nodes, result, ex.diags
