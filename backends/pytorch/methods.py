"""The method writer of generated source: one fx graph (a signature's, or one block call's part of
it) written as the body of a method, with variables named after the spec's nodes, values read once
written inline, a loop for each repeat and the inferred shape as a comment wherever it changes.

Lines come out logical (one statement each, its shape comment at its end); `layout.render`
breaks the long ones when the file is put together.
"""

from __future__ import annotations

import builtins
import itertools
import keyword
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import networkx as nx
import torch
import torch.nn.functional as F
from torch import fx

from nnspec.builder.tensor import fmt_dim

from .blocks import Folded
from .emitter import RESERVED_NAMES, Emitter
from .layout import WIDTH, docstring, logical, wrap
from .subgraph import Occurrence

__all__ = ["TAKEN", "ClassWriter", "Entry", "MethodWriter", "copy_free", "module_ref"]

_BINARY = {operator.add: "+", operator.mul: "*", operator.and_: "&", operator.or_: "|", operator.pow: "**",
           operator.sub: "-", operator.truediv: "/", operator.floordiv: "//", operator.matmul: "@"}
TAKEN = frozenset({*RESERVED_NAMES, *keyword.kwlist, *dir(builtins), "layer", "F", "sinusoid_table"})
"""Names a generated local variable never takes."""


class ClassWriter(Protocol):
    """What a method writer asks of the writer of the classes around it."""

    blocks: list[str]

    def method(self, path: str, graph: str) -> str:
        """The method of the module at `path` that runs its part of signature `graph`."""

    def packed_count(self, entry: Entry) -> int:
        """How many last arguments the top-level method for `entry` takes as ``*args``."""


@dataclass(frozen=True)
class Entry:
    """One method to write: its name, its lowered graph, and that graph folded into block calls."""

    name: str
    em: Emitter
    folded: Folded

    @property
    def size(self) -> int:
        return len(self.em.fx.nodes)



def module_ref(path: str) -> str:
    """``encoder.0.attn`` -> ``self.encoder[0].attn`` (a repeat's copies are a ModuleList)."""
    expr = "self"
    for part in path.split("."):
        expr = f"{expr}.{part}" if part.isidentifier() else f"{expr}[{part}]" if part.isdigit() else \
            f'getattr({expr}, "{part}")'
    return expr


@dataclass(frozen=True)
class _Zip:
    """The copies of a repeat that the parent calls one by one because each also takes values of
    its own (method arguments) or returns some (method results), written as one loop.

    Attributes:
        target: the repeat's path, relative to the method's module.
        copies: the copies' calls, in order; each reads the last one's first result.
        own: the argument positions where each copy reads a value of its own.
        results: per copy, its results read by the method (by index; 0 is the chained one).
        kept: the indexes of the results that the method returns, copy after copy.
        arity: how many results a copy returns (1: one tensor, not a tuple).
        chained: each copy reads the last one's first result; else the copies all read the same
            values and the method returns all they return (the key/value projection of each layer
            of a decoder from one memory: ``for layer in self.decoder: present += layer.cross_kv(memory)``).
    """

    target: str
    copies: tuple[fx.Node, ...]
    own: tuple[int, ...]
    results: tuple[dict[int, fx.Node], ...]
    kept: tuple[int, ...]
    arity: int
    chained: bool = True


class MethodWriter:
    """Writes one method from an fx graph: named values, inlined single reads, loops for repeats."""

    def __init__(self, graph: fx.Graph, entry: Entry, path: str, writer: ClassWriter,
                 calls: Sequence[tuple[Entry, Occurrence]] = ()) -> None:
        self.graph = graph
        self.entry = entry
        self.g = entry.em.source
        self.prefix = f"{path}." if path else ""
        self.writer = writer
        self.calls = calls
        self.text: dict[fx.Node, str] = {}
        self.taken: set[str] = set(TAKEN)
        self.inlined: set[fx.Node] = set()
        self.placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        self.output = next(n for n in graph.nodes if n.op == "output")
        results = self.output.args[0]
        self.results: list[Any] = list(results) if isinstance(results, tuple) else [results]
        self.skip: set[fx.Node] = {n for _, occurrence in calls for n in occurrence.inside}
        self.zips = self._zips()
        self.varargs = self._varargs()
        self.packed = ""  # the name of the ``*args`` that hold `varargs` (named in `lines`)
        self.key: tuple[str, tuple[str, ...]] = ("", ())  # the method's code, whatever its name (after `lines`)

    # --- planning ------------------------------------------------------------------------

    def _zips(self) -> list[_Zip]:
        """The repeats written as a loop over copies zipped with their own values (see `_Zip`).

        The values the copies read must be the method's last arguments, copy after copy (they
        become ``*args``); the results they return, one run of the method's results.
        """
        runs: dict[str, list[fx.Node]] = {}
        for node in self.graph.nodes:
            repeat, _, index = str(node.target).rpartition(".")
            full = f"{self.prefix}{repeat}"
            if node.op == "call_module" and index.isdigit() and node not in self.skip \
                    and full in self.entry.folded.repeats and full not in self.entry.folded.looped:
                runs.setdefault(repeat, []).append(node)
        zips = [z for repeat, copies in runs.items() if (z := self._zip(repeat, copies)) is not None]
        own = [z.copies[i].args[j] for z in zips for i in range(len(z.copies)) for j in z.own]
        last = self.placeholders[len(self.placeholders) - len(own):]
        if own and (len(set(own)) != len(own) or set(own) != set(last)
                    or not all(_stride([last.index(c.args[j]) for c in z.copies]) for z in zips for j in z.own)):
            zips = [z for z in zips if not z.own]
        return zips

    def _varargs(self) -> list[fx.Node]:
        """The method's last arguments that it takes as ``*args``: those its zipped copies read, and
        those it passes on to a signature that takes them so."""
        packed = {z.copies[i].args[j] for z in self.zips for i in range(len(z.copies)) for j in z.own}
        for other, occurrence in self.calls:
            count = self.writer.packed_count(other)
            passed = list(occurrence.args[len(occurrence.args) - count:]) if count else []
            if passed == self.placeholders[len(self.placeholders) - count:]:
                packed.update(passed)
        run = [n for n in self.placeholders if n in packed]
        return run if run == self.placeholders[len(self.placeholders) - len(run):] else []

    def _zip(self, repeat: str, copies: list[fx.Node]) -> _Zip | None:
        full = f"{self.prefix}{repeat}"
        count = sum(1 for p in self.writer.blocks if p.rpartition(".")[0] == full and p.rpartition(".")[2].isdigit())
        if [str(c.target) for c in copies] != [f"{repeat}.{i}" for i in range(count)] or any(c.kwargs for c in copies):
            return None
        width = len(copies[0].args)
        if width == 0 or any(len(c.args) != width for c in copies):
            return None
        if count > 1 and all(c.args == copies[0].args for c in copies):
            return self._fan(repeat, copies)
        own = []
        for j in range(1, width):
            values = [c.args[j] for c in copies]
            if all(v is values[0] or (not isinstance(v, fx.Node) and v == values[0]) for v in values):
                continue
            if not all(isinstance(v, fx.Node) and v.op == "placeholder" for v in values):
                return None
            own.append(j)
        outputs = [self._arity(f"{full}.{i}") for i in range(count)]
        arity = outputs[0]
        if any(a != arity for a in outputs):
            return None
        results: list[dict[int, fx.Node]] = []
        for i, copy in enumerate(copies):
            got = {0: copy} if arity == 1 else {}
            for user in copy.users if arity > 1 else ():
                if user.target is not operator.getitem or not isinstance(user.args[1], int):
                    return None
                got[user.args[1]] = user
            link = got.get(0)
            if i + 1 < count and (link is None or set(link.users) != {copies[i + 1]} or copies[i + 1].args[0] is not link):
                return None
            results.append(got)
        kept = tuple(sorted({k for got in results for k in got if k != 0}))
        run = [got.get(k) for got in results for k in kept]
        if not own and not kept:
            return None  # nothing of their own: fold loops such copies, unless they are irregular
        if any(r is None or set(r.users) != {self.output} for r in run) or not _is_run(self.results, run):
            return None
        return _Zip(repeat, tuple(copies), tuple(own), tuple(results), kept, arity)

    def _fan(self, repeat: str, copies: list[fx.Node]) -> _Zip | None:
        """Copies that all read the same values, each returning all its results to the method's
        results, one copy after the other: a loop that collects them (see `_Zip.chained`)."""
        arity = self._arity(f"{self.prefix}{repeat}.0")
        results: list[dict[int, fx.Node]] = []
        for copy in copies:
            if self._arity(f"{self.prefix}{copy.target}") != arity:
                return None
            got = {0: copy} if arity == 1 else {}
            for user in copy.users if arity > 1 else ():
                if user.target is not operator.getitem or not isinstance(user.args[1], int):
                    return None
                got[user.args[1]] = user
            if sorted(got) != list(range(arity)):
                return None
            results.append(got)
        run = [got[k] for got in results for k in range(arity)]
        if any(set(r.users) != {self.output} for r in run) or not _is_run(self.results, run):
            return None
        return _Zip(repeat, tuple(copies), (), tuple(results), tuple(range(arity)), arity, chained=False)

    def _arity(self, path: str) -> int:
        graph = self.entry.folded.blocks.get(path)
        if graph is None:
            return -1
        results = next(n for n in graph.nodes if n.op == "output").args[0]
        return len(results) if isinstance(results, tuple) else 1

    # --- names ---------------------------------------------------------------------------

    def name(self, node: fx.Node) -> str:
        """A variable name for `node`: its spec node's id (relative to the block), else its owner's
        id and what it is (``attn_split``); made unique."""
        ref = node.meta.get("nnspec")
        if node.op == "call_module" and f"{self.prefix}{node.target}" in self.entry.folded.blocks:
            return self.name_as(str(node.target).replace(".", "_"))  # a block call: named by its path
        if ref is not None and node.op != "placeholder":
            local = ref[0][len(self.prefix):] if ref[0].startswith(self.prefix) else ref[0]
            base = local if ref[1] == "y" else f"{local}_{ref[1]}"
        else:
            full = str(node.meta.get("nnspec_owner", ""))
            owner = full[len(self.prefix):] if full.startswith(self.prefix) else full
            kind = node.name.rstrip("0123456789").rstrip("_")
            flat = full.replace(".", "_") + "_"
            kind = kind[len(flat):] if full and kind.startswith(flat) else kind  # named by its lowering (attn_q)
            mine = self.prefix.replace(".", "_")
            kind = kind[len(mine):] if mine and kind.startswith(mine) else kind  # named after a value of this call
            base = f"{owner}_{kind}" if owner else kind
        return self.name_as(base.replace(".", "_"))

    def name_as(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def inline(self, node: fx.Node, expr: str) -> bool:
        """Whether `node` is written where it is read: a weight read, or a short temporary read once."""
        if node.op == "get_attr":
            return True
        if node.op not in ("call_function", "call_method") or len(node.users) != 1 or "nnspec" in node.meta:
            return False
        full = str(node.meta.get("nnspec_owner", ""))
        named = bool(full) and node.name.startswith(full.replace(".", "_") + "_")  # its lowering named it
        return len(expr) <= (30 if named else 60)

    # --- the method ----------------------------------------------------------------------

    def lines(self) -> list[str]:
        name = self.entry.name
        count = len(self.results)
        ret = "torch.Tensor" if count == 1 else f"tuple[{', '.join(['torch.Tensor'] * count)}]" if count <= 2 else \
            "tuple[torch.Tensor, ...]"
        args = []
        for n in self.placeholders:
            if n in self.varargs:
                continue
            arg = copy_free(str(n.target)) if self.prefix else str(n.target)
            arg = self.name_as(arg) if arg != n.target else arg
            self.taken.add(arg)
            self.text[n] = arg
            args.append(f"{arg}: torch.Tensor")
        if self.varargs:
            self.packed = self.name_as(_common_stem([str(n.target) for n in self.varargs]) or "per_copy")
            for k, n in enumerate(self.varargs):
                self.text[n] = f"{self.packed}[{k}]"
            args.append(f"*{self.packed}: torch.Tensor")
        header = f"    def {name}(self, {', '.join(args)}) -> {ret}:"
        body: list[str] = []
        if not self.prefix:  # a block's forward needs no docstring: its class has the block's doc
            body.append(f'        """{docstring(self._doc(), "        ")}"""')
        zips = {z.copies[0]: z for z in self.zips}
        zipped = {n for z in self.zips for n in (*z.copies, *(r for got in z.results for r in got.values()))}
        calls = {occurrence.last: (other, occurrence) for other, occurrence in self.calls}
        for node in self.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                body.extend(self._return())
            elif node in calls:
                body.extend(self._call_signature(*calls[node]))
            elif node in zips:
                body.extend(self._zip_loop(zips[node]))
            elif node in self.skip or node in zipped:
                continue
            elif node.op == "call_module" and f"{self.prefix}{node.target}" in self.entry.folded.looped:
                body.extend(self._loop(node))
            else:
                expr = self.expr(node)
                if self.inline(node, expr):
                    self.text[node] = f"({expr})" if _needs_parens(node) else expr
                    self.inlined.add(node)
                else:
                    body.extend(self._assign(node))
        self.key = (header.replace(f"def {name}(", "def (", 1), tuple(body))
        return [header, *body]

    def _doc(self) -> str:
        sig = self.g.graph.get("signature")
        returns = ", ".join(_abridged(list(self.g.graph["outputs"])))
        if sig is not None and self.entry.name != "forward":
            return f"Signature {sig!r}: returns {returns}."
        return f"Returns {returns}."

    def _assign(self, node: fx.Node) -> list[str]:
        """``var = expr  # shape`` for `node`; operands written inline get names of their own first
        while the line is too long."""
        lines: list[str] = []
        var = self.name(node)
        expr = self.expr(node)
        while any(len(line) > WIDTH for line in wrap(f"        {var} = {expr}")):
            operands = [a for a in node.all_input_nodes if a in self.inlined and a.op != "get_attr"]
            if not operands:
                break
            longest = max(operands, key=lambda a: len(self.text[a]))
            self.inlined.discard(longest)
            lines.extend(self._assign(longest))
            expr = self.expr(node)
        self.text[node] = var
        lines.extend(logical(f"        {var} = {expr}", _shape_comment(node, self.g)))
        return lines

    def _return(self) -> list[str]:
        for other, occurrence in self.calls:  # the method is another signature, with more before it
            if list(occurrence.results) == self.results:
                return [f"        return {self._signature_call(other, occurrence)}"]
        parts: list[str] = []
        runs = {z.results[0][z.kept[0]]: z for z in self.zips if z.kept}
        skip = 0
        for value in self.results:
            if skip:
                skip -= 1
            elif value in runs:
                z = runs[value]
                parts.append(f"*{self.text[value]}")
                skip = len(z.copies) * len(z.kept) - 1
            else:
                parts.append(self.arg(value))
        if len(parts) == 1 and parts[0].startswith("*"):  # only the collected results
            return [f"        return tuple({parts[0][1:]})"]
        text = ", ".join(parts)
        return [f"        return ({text})" if len(text) > 100 else f"        return {text}"]

    def _signature_call(self, other: Entry, occurrence: Occurrence) -> str:
        """``self.encode(src, src_pad)``: the call of another signature, on this method's values."""
        args = [self.arg(a) for a in occurrence.args]
        if self.varargs and list(occurrence.args[len(occurrence.args) - len(self.varargs):]) == self.varargs:
            args[len(args) - len(self.varargs):] = [f"*{self.packed}"]
        return f"self.{other.name}({', '.join(args)})"

    def _call_signature(self, other: Entry, occurrence: Occurrence) -> list[str]:
        if list(occurrence.results) == self.results:
            return []  # the return statement makes the call
        names = [self.name(r) for r in occurrence.results]
        for value, name in zip(occurrence.results, names):
            self.text[value] = name
        first = occurrence.args[0] if occurrence.args else None
        comment = _shape_comment(occurrence.results[0], self.g, first) if len(names) == 1 else ""
        return logical(f"        {', '.join(names)} = {self._signature_call(other, occurrence)}", comment)

    def _call(self, target: str) -> str:
        """How to call the submodule at relative `target`: the block call's method for this graph."""
        method = self.writer.method(f"{self.prefix}{target}", self.entry.name)
        return module_ref(target) if method == "forward" else f"{module_ref(target)}.{method}"

    def _loop(self, node: fx.Node) -> list[str]:
        """A repeat run as a loop: each copy on the last one's first output and the same other inputs."""
        local = str(node.target)
        var = self.name_as(local.replace(".", "_"))
        self.text[node] = var
        target = module_ref(local)
        method = self.writer.method(f"{self.prefix}{local}.0", self.entry.name)
        call = "layer" if method == "forward" else f"layer.{method}"
        args = [self.arg(a) for a in node.args]
        rest = "".join(f", {a}" for a in args[1:])
        comment = _shape_comment(node, self.g)
        if self.entry.folded.repeats[f"{self.prefix}{local}"]:
            head = f"{target}[0]" if method == "forward" else f"{target}[0].{method}"
            return [f"        {var} = {head}({', '.join(args)})",
                    f"        for layer in {target}[1:]:",
                    *logical(f"            {var} = {call}({var}[0]{rest})", comment)]
        return [f"        {var} = {args[0]}",
                f"        for layer in {target}:",
                *logical(f"            {var} = {call}({var}{rest})", comment)]

    def _zip_loop(self, z: _Zip) -> list[str]:
        """``for layer, past_key, past_value in zip(self.h, pasts[::2], pasts[1::2]):`` (see `_Zip`)."""
        if not z.chained:
            return self._fan_loop(z)
        full = f"{self.prefix}{z.target}"
        var = self.name_as(z.target.replace(".", "_"))
        lines = [f"        {var} = {self.arg(z.copies[0].args[0])}"]
        block = self.entry.folded.blocks[f"{full}.0"]
        params = [str(n.target) for n in block.nodes if n.op == "placeholder"]
        own = {j: self.name_as(_short(copy_free(params[j]), self.packed)) for j in z.own}
        sources = [module_ref(z.target)]
        for j in z.own:  # the copies' values for one argument: every step-th of the packed ones
            at = [self.varargs.index(cast(fx.Node, c.args[j])) for c in z.copies]
            sources.append(_slice(self.packed, at[0], at[-1] + 1, _stride(at) or 1, len(self.varargs)))
        method = self.writer.method(f"{full}.0", self.entry.name)
        call = "layer" if method == "forward" else f"layer.{method}"
        args = [var if j == 0 else own[j] if j in own else self.arg(a) for j, a in enumerate(z.copies[0].args)]
        call = f"{call}({', '.join(args)})"
        copy = f"{full}.0."
        kept = {}
        for k in z.kept:
            ref = z.results[0][k].meta.get("nnspec", ("", ""))
            local = ref[0][len(copy):] if ref[0].startswith(copy) else copy_free(z.results[0][k].name)
            kept[k] = self.name_as(f"{local}_{ref[1]}" if ref[1] != "y" else local)
        collected = ""
        if kept:
            outs = list(self.g.graph["outputs"])  # the method's results are the graph's outputs at the top level
            returned = [outs[self.results.index(z.results[0][k])] for k in z.kept] if not self.prefix else []
            collected = self.name_as(_common_stem(returned) or _common_stem(list(kept.values())) or f"{var}_results")
            lines.append(f"        {collected}: list[torch.Tensor] = []")
        head = ", ".join(["layer", *own.values()]) if own else "layer"
        loop = f"zip({', '.join(sources)})" if own else sources[0]
        lines.append(f"        for {head} in {loop}:")
        last = z.results[-1].get(0)
        comment = _shape_comment(last, self.g) if last is not None else ""
        if z.arity == 1:
            lines.extend(logical(f"            {var} = {call}", comment))
        elif kept:
            names = [var if k == 0 else kept.get(k, "_") for k in range(z.arity)]
            lines.extend(logical(f"            {', '.join(names)} = {call}", comment))
            items = ", ".join(kept.values())
            lines.append(f"            {collected}.append({items})" if len(kept) == 1 else
                         f"            {collected} += [{items}]")
        else:
            lines.extend(logical(f"            {var} = {call}[0]", comment))
        if last is not None:
            self.text[last] = var
        for k in z.kept:
            self.text[z.results[0][k]] = collected  # the run's first result stands for the list
        return lines

    def _fan_loop(self, z: _Zip) -> list[str]:
        """``for layer in self.decoder: present += layer.cross_kv(memory)`` (see `_Zip.chained`)."""
        method = self.writer.method(f"{self.prefix}{z.target}.0", self.entry.name)
        call = "layer" if method == "forward" else f"layer.{method}"
        args = ", ".join(self.arg(a) for a in z.copies[0].args)
        outs = list(self.g.graph["outputs"])
        returned = [outs[self.results.index(r)] for got in z.results for r in got.values()] if not self.prefix else []
        collected = self.name_as(_common_stem(returned) or f"{z.target.replace('.', '_')}_results")
        add = f"{collected}.append({call}({args}))" if z.arity == 1 else f"{collected} += {call}({args})"
        for got in z.results:
            for value in got.values():
                self.text[value] = collected  # the run's first result stands for the list
        return [f"        {collected}: list[torch.Tensor] = []", f"        for layer in {module_ref(z.target)}:",
                f"            {add}"]

    # --- expressions ---------------------------------------------------------------------

    def arg(self, value: Any, top: bool = False) -> str:
        if isinstance(value, fx.Node):
            return self.text[value]
        if isinstance(value, tuple):
            inner = ", ".join(self.arg(v) for v in value)
            if top:
                return inner
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        if isinstance(value, list):
            return f"[{', '.join(self.arg(v) for v in value)}]"
        if isinstance(value, slice):
            return f"slice({self.arg(value.start)}, {self.arg(value.stop)}, {self.arg(value.step)})"
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            return 'float("-inf")' if value < 0 else 'float("inf")'
        if isinstance(value, torch.dtype):
            return str(value)
        return repr(value)

    def expr(self, node: fx.Node) -> str:
        args = [self.arg(a) for a in node.args]
        kwargs = [f"{k}={self.arg(v)}" for k, v in node.kwargs.items()]
        if node.op == "call_module":
            return f"{self._call(str(node.target))}({', '.join(args + kwargs)})"
        if node.op == "get_attr":
            return module_ref(str(node.target))
        if node.op == "call_method":
            return f"{args[0]}.{node.target}({', '.join(args[1:] + kwargs)})"
        fn = node.target
        if fn in _BINARY:
            return f"{args[0]} {_BINARY[fn]} {args[1]}"  # type: ignore[index]
        if fn is operator.getitem:
            return f"{args[0]}[{self.index(node.args[1])}]"
        if fn is getattr:
            return f"{args[0]}.{node.args[1]}"
        return f"{_function_name(fn)}({', '.join(args + kwargs)})"

    def index(self, value: Any) -> str:
        if isinstance(value, tuple):
            return ", ".join(self.index(v) for v in value)
        if isinstance(value, slice):
            parts = ["" if p is None else self.arg(p) for p in (value.start, value.stop)]
            text = ":".join(parts)
            return text if value.step in (None, 1) else f"{text}:{self.arg(value.step)}"
        return self.arg(value)


def _abridged(names: list[str]) -> list[str]:
    """Output names with each run of numbered ones (``present.0.key``, ..., ``present.11.value``)
    cut to its first number's names, "...", and its last name."""
    out: list[str] = []
    i = 0
    while i < len(names):
        numbers = [w for w in names[i].split(".") if w.isdigit()]
        j = i
        while j < len(names) and any(w.isdigit() for w in names[j].split(".")):
            j += 1
        first = [n for n in names[i:j] if [w for w in n.split(".") if w.isdigit()] == numbers]
        if numbers and j - i > len(first) + 1:
            out.extend([*first, "...", names[j - 1]])
            i = j
        else:
            out.append(names[i])
            i += 1
    return out


def _is_run(values: Sequence[Any], run: Sequence[fx.Node | None]) -> bool:
    """Whether `run` appears in `values` once, as consecutive items."""
    starts = [i for i, v in enumerate(values) if v is run[0]] if run else [0]
    return len(starts) == 1 and all(a is b for a, b in zip(values[starts[0]:starts[0] + len(run)], run, strict=True)) \
        and len(values) >= starts[0] + len(run)


def _short(name: str, packed: str) -> str:
    """A copy's own argument named without the words of the packed arguments' name
    (``past_key_values_key`` from ``*past_key_values``: ``key``)."""
    short = name.removeprefix(f"{packed}_")
    return short if short.isidentifier() and short not in TAKEN else name


def _stride(at: Sequence[int]) -> int | None:
    """The step between positions `at` when it is one positive number (one position: 1), else None."""
    steps = {b - a for a, b in itertools.pairwise(at)} or {1}
    return steps.pop() if len(steps) == 1 and min(steps) > 0 else None


def _slice(name: str, start: int, stop: int, step: int, total: int) -> str:
    """``name[start:stop:step]`` with the defaults left out (``pasts[1::2]``); `stop` is one past
    the last position taken."""
    if stop + step - 1 >= total:
        stop = total
    if (start, stop, step) == (0, total, 1):
        return name
    text = f"{start or ''}:{'' if stop == total else stop}"
    return f"{name}[{text}{f':{step}' if step != 1 else ''}]"


def _common_stem(names: Sequence[str]) -> str:
    """The words that names of per-copy values share before their copy number
    (``present.0.key``, ``present.3.value`` -> ``present``); "" when there are none."""
    stems = []
    for name in names:
        words = name.replace(".", "_").split("_")
        stems.append(list(itertools.takewhile(lambda w: not w.isdigit(), words)))
    common = []
    for column in zip(*stems):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    stem = "_".join(w for w in common if w)
    return stem if stem.isidentifier() and stem not in TAKEN else ""



def copy_free(name: str) -> str:
    """A block argument's name without copy numbers (``past_key_values_3_key`` -> ``past_key_values_key``),
    so that the copies of a repeat share one class."""
    return "_".join(part for part in name.split("_") if not part.isdigit()) or name


def _needs_parens(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _BINARY


def _shape_comment(node: fx.Node, g: nx.MultiDiGraph, first: fx.Node | None = None) -> str:
    """``  # (batch, 6, 28, 28)`` when this value's inferred shape differs from its first input's
    (or from `first`'s)."""
    mine = _spec_type(node, g)
    if mine is None:
        return ""
    for arg in node.all_input_nodes if first is None else [first]:
        other = _spec_type(arg, g)
        if other is not None:
            if other.shape == mine.shape:
                return ""
            break
    return f"  # ({', '.join(fmt_dim(d) for d in mine.shape)})"


def _spec_type(node: fx.Node, g: nx.MultiDiGraph) -> Any:
    ref = node.meta.get("nnspec")
    if ref is None:
        return None
    return g.nodes[ref[0]]["node"].outputs[ref[1]]


def _function_name(fn: Any) -> str:
    name = getattr(fn, "__name__", "")
    if getattr(torch, name, None) is fn:
        return f"torch.{name}"
    if getattr(F, name, None) is fn:
        return f"torch.nn.functional.{name}"
    if getattr(torch.nn.utils.rnn, name, None) is fn:  # packed sequences (recurrent `lengths`)
        return f"torch.nn.utils.rnn.{name}"
    raise ValueError(f"generated code cannot name the function {fn!r}")  # pragma: no cover - a lowering bug
