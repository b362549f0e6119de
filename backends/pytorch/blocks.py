"""Blocks as modules: the flat fx graph of a spec is folded, block call by block call, into one
`BlockModule` per call (a GraphModule named after its block, with its own ``forward``), and each
repeat into a `Repeat` (an ``nn.ModuleList`` whose ``forward`` chains its copies in a loop).

The module tree keeps its paths, so the state_dict keys do not change (``h.3.attn.in_proj_weight``);
only the plain containers at block paths become modules that run their block. FSDP2's
``fully_shard``, activation checkpointing, forward hooks and ``torch.compile`` then apply per block.
A signature's part of a block is a method of the block (`BlockModule.add_method`, made by
`signatures.nest_signature`) that runs through ``__call__`` as ``forward`` does.

A call's forward takes the block's inputs in declared order, then any other value it reads from
outside (a tied weight, a graph input); it returns its outputs in declared order (one tensor, or a
tuple). Copies of a repeat whose calls agree (each copy reads the last one's first output and the
same other values) run as one call of the `Repeat`; where they differ, the parent calls each copy.
"""

from __future__ import annotations

import functools
import itertools
import linecache
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import networkx as nx
import torch
import torch.utils.checkpoint
from torch import fx, nn
from torch.fx.graph_module import _forward_from_src

from nnspec.builder import TensorRef
from nnspec.builder.resolve import BlockCall, Frame

from .emitter import RESERVED_NAMES
from .graphstate import GraphState, graph_from_state, graph_state

__all__ = ["BlockModule", "Folded", "Loop", "Repeat", "arg_names", "block_of", "class_name", "container", "fold", "install",
           "nest", "repeat", "set_checkpoint"]

SCOPE = "nnspec_scope"
"""fx node meta key: the block frames around the spec node whose lowering made the fx node."""


def class_name(name: str) -> str:
    """``encoder_layer`` -> ``EncoderLayer`` (a spec or block name as a Python class name)."""
    out = "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)
    return out if out.isidentifier() else f"Model{out}"


# --- the modules -------------------------------------------------------------------------

class BlockModule(fx.GraphModule):
    """One call of a spec block: the block's layers as children, its body as ``forward``, and one
    method per other body that the spec's signatures run (``with_past``, ``padded``; see `add_method`).

    A method runs through ``nn.Module.__call__`` like ``forward``: the block's hooks (FSDP2's
    gathering of the block's parameters among them) and its activation checkpointing apply to
    every method; a hook tells them apart by its arguments, or by `running`.

    Attributes:
        checkpoint_activations: recompute this block's activations in backward instead of keeping
            them (``torch.utils.checkpoint``, non-reentrant; dropout draws the same masks).
        meta: ``meta["block"]`` is the block's name in the spec.
    """

    # torch.jit.script compiles properties unless told not to
    __jit_unused_properties__ = [*getattr(fx.GraphModule, "__jit_unused_properties__", []),  # noqa: RUF012
                                 "checkpoint_activations", "methods", "running"]

    def __init__(self, root: nn.Module, graph: fx.Graph, class_name: str = "Block") -> None:
        super().__init__(root, graph, class_name)
        # GraphModule copies only what the graph refers to (into fresh containers); keep every
        # child of the block's container, in its order, so signatures and state_dict see the same modules
        self._modules.clear()
        self._modules.update(root._modules)
        self.__dict__.setdefault("_nnspec_methods", {})  # name -> graph
        self.__dict__.setdefault("_nnspec_code", {})  # name -> its compiled code

    def recompile(self) -> Any:
        code = super().recompile()
        cls = type(self)
        cls._nnspec_generated = cls.forward  # type: ignore[attr-defined]
        if self.checkpoint_activations:
            cls.forward = _checkpointed(cls.forward)  # type: ignore[method-assign]
        return code

    @property
    def checkpoint_activations(self) -> bool:
        return bool(self.__dict__.get("_nnspec_checkpoint", False))

    @checkpoint_activations.setter
    def checkpoint_activations(self, on: bool) -> None:
        self.__dict__["_nnspec_checkpoint"] = bool(on)
        cls = type(self)  # GraphModule gives each instance its own class
        generated = cls.__dict__.get("_nnspec_generated", cls.forward)
        cls.forward = _checkpointed(generated) if on else generated  # type: ignore[method-assign]

    # --- the methods of signatures ------------------------------------------------------

    @property
    def methods(self) -> dict[str, fx.Graph]:
        """The block's methods besides ``forward``, by name: the graph each runs."""
        return dict(self.__dict__["_nnspec_methods"])

    @property
    def running(self) -> str | None:
        """The method other than ``forward`` being run (``"with_past"``), else None: for a hook that
        tells them apart."""
        return self.__dict__.get("_nnspec_running")

    def add_method(self, name: str, graph: fx.Graph, generated: Callable[..., Any] | None = None) -> None:
        """Give this block a method `name` that runs `graph` (over the block's children, targets
        relative to it, like ``forward``'s) through ``__call__``, so hooks and checkpointing apply.

        Args:
            generated: the code of `graph`, compiled already for a graph equal to it (`method_code`).
        """
        if name in self.__dict__["_nnspec_methods"] or hasattr(self, name):
            raise ValueError(f"block module {type(self).__name__} already has an attribute '{name}'")
        if generated is None:
            code = graph.python_code(root_module="self")
            generated = _forward_from_src(code.src, code.globals)
            generated.__name__ = generated.__qualname__ = name
        self.__dict__["_nnspec_methods"][name] = graph
        self.__dict__["_nnspec_code"][name] = generated
        setattr(type(self), name, _block_method(name, generated))  # GraphModule gives each instance its own class

    def method_code(self, name: str) -> Callable[..., Any]:
        """The compiled code of method `name` (it takes the block as ``self``)."""
        return cast(Callable[..., Any], self.__dict__["_nnspec_code"][name])

    def run_method(self, name: str, *args: Any) -> Any:
        """Run method `name` on `args` as ``forward`` would run (hooks, checkpointing)."""
        generated = self.method_code(name)
        body = _checkpointed(generated) if self.checkpoint_activations else generated
        state = self.__dict__
        own = state.pop("forward", None)  # an instance-level forward someone installed: kept aside
        state["forward"], state["_nnspec_running"] = body.__get__(self), name
        try:
            return self(*args)
        finally:
            del state["forward"], state["_nnspec_running"]
            if own is not None:
                state["forward"] = own

    # --- copy and pickle -------------------------------------------------------------

    def _deepcopy_init(self) -> Callable[..., None]:
        def init(res: BlockModule, fake: nn.Module, graph: fx.Graph) -> None:
            BlockModule.__init__(res, fake, graph, type(self).__name__)
            res.checkpoint_activations = self.checkpoint_activations
            for name, method in fake.__dict__.get("_nnspec_methods", {}).items():
                res.add_method(name, method, fake.__dict__.get("_nnspec_code", {}).get(name))

        return init

    def __reduce__(self) -> tuple[Any, ...]:
        # GraphModule pickles its code and re-traces it when loaded, freezing `self.training` reads
        # (attention dropout) into constants; the graphs travel node by node instead
        root = nn.Module()
        root._modules.update(self._modules)
        methods = {name: graph_state(graph) for name, graph in self.__dict__["_nnspec_methods"].items()}
        return (_restore_block, (root, graph_state(self.graph), type(self).__name__, dict(self.meta), self.training,
                                 self.checkpoint_activations, methods))


def _block_method(name: str, generated: Callable[..., Any]) -> Callable[..., Any]:
    """The method `name` of a block class: runs the generated code through the module's ``__call__``."""
    def method(self: BlockModule, *args: Any) -> Any:
        return self.run_method(name, *args)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Run this block's part of signature '{name}' (through ``__call__``: hooks and checkpointing apply)."
    method.__wrapped__ = generated  # type: ignore[attr-defined]  # inspect.signature shows the arguments
    return method


def _checkpointed(generated: Callable[..., Any]) -> Callable[..., Any]:
    """The generated forward, run under activation checkpointing while gradients are recorded."""
    @functools.wraps(generated)
    def forward(self: BlockModule, *args: Any) -> Any:
        if torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(generated, self, *args, use_reentrant=False)
        return generated(self, *args)

    return forward


def _restore_block(root: nn.Module, graph: GraphState, name: str, meta: dict[str, Any], training: bool,
                   checkpoint: bool, methods: Mapping[str, GraphState] | None = None) -> BlockModule:
    module = BlockModule(root, graph_from_state(graph), name)
    module.meta.update(meta)
    module.checkpoint_activations = checkpoint
    for method, state in (methods or {}).items():
        module.add_method(method, graph_from_state(state))
    return module.train(training)


class Repeat(nn.ModuleList):
    """The copies of a repeated block call (``h.0``, ``h.1``, ...): ``forward`` runs them in order,
    each on the last one's first output and the same other inputs, and returns the last one's outputs.

    ``forward`` names its arguments after the block's inputs (see `repeat`); a signature whose
    copies run a method of theirs chains them the same way in a method of its own (`Loop`).
    """

    __jit_ignored_attributes__ = ["loops"]  # noqa: RUF012  # TorchScript compiles forward only

    arg_names: tuple[str, ...] = ("x",)
    multi_output: bool = False
    loops: tuple[Loop, ...] = ()

    def add_loop(self, loop: Loop) -> None:
        """Give this repeat the method `loop` (its class changes; nothing else does)."""
        self.__class__ = _repeat_class(self.arg_names, self.multi_output, (*self.loops, loop))

    def __reduce__(self) -> tuple[Any, ...]:
        return (repeat, (list(self), self.arg_names, self.multi_output, self.training, self.loops))


@dataclass(frozen=True)
class Loop:
    """A method of a `Repeat` that chains its copies like ``forward``, each running its method `runs`.

    Attributes:
        name: the repeat's method.
        arg_names: its arguments (the first is chained from copy to copy).
        multi_output: whether each copy returns a tuple (the next one reads its first item).
        runs: the copies' method (``forward``: the copies are called).
    """

    name: str
    arg_names: tuple[str, ...]
    multi_output: bool
    runs: str


def repeat(copies: Iterable[nn.Module], arg_names: tuple[str, ...], multi_output: bool,
           training: bool = True, loops: tuple[Loop, ...] = ()) -> Repeat:
    """A `Repeat` of `copies` whose forward takes `arg_names` (the first is chained from copy to copy)."""
    module = _repeat_class(tuple(arg_names), multi_output, loops)(copies)
    return module.train(training)


@functools.cache
def _repeat_class(arg_names: tuple[str, ...], multi_output: bool, loops: tuple[Loop, ...] = ()) -> type[Repeat]:
    """A `Repeat` subclass whose forward has these arguments (TorchScript needs them written out)."""
    methods = {"forward": _loop_method(Loop("forward", arg_names, multi_output, "forward"))}
    methods.update((loop.name, _loop_method(loop)) for loop in loops)
    return type("Repeat", (Repeat,), {**methods, "arg_names": arg_names, "multi_output": multi_output,
                                      "loops": loops, "__module__": __name__})


def _loop_method(loop: Loop) -> Callable[..., Any]:
    """The source of `loop` compiled: a for loop over the copies."""
    head, *rest = loop.arg_names
    args = ", ".join(loop.arg_names)
    tail = "".join(f", {a}" for a in rest)
    call = "layer" if loop.runs == "forward" else f"layer.{loop.runs}"
    if loop.multi_output:  # each copy returns a tuple; the next one reads its first item
        first = "self[0]" if loop.runs == "forward" else f"self[0].{loop.runs}"
        body = f"    out = {first}({args})\n    for layer in self[1:]:\n        out = {call}(out[0]{tail})\n    return out\n"
    else:
        body = f"    for layer in self:\n        {head} = {call}({args})\n    return {head}\n"
    src = f"def {loop.name}(self, {args}):\n{body}"
    filename = f"<nnspec Repeat.{loop.name} {args}{' tuples' if loop.multi_output else ''} {loop.runs}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)  # for inspect and TorchScript
    namespace: dict[str, Any] = {}
    exec(compile(src, filename, "exec"), namespace)  # the names are identifiers from the spec
    method: Callable[..., Any] = namespace[loop.name]
    method.__qualname__ = f"Repeat.{loop.name}"
    return method


def set_checkpoint(root: nn.Module, blocks: bool | Iterable[str]) -> None:
    """Checkpoint the activations of the outermost block calls (`blocks`: all of them, or those of
    the named block definitions)."""
    names = None if isinstance(blocks, bool) else set(blocks)
    _mark(root, names, bool(blocks))


def _mark(module: nn.Module, names: set[str] | None, on: bool) -> None:
    for child in module.children():
        if isinstance(child, BlockModule) and on and (names is None or child.meta.get("block") in names):
            child.checkpoint_activations = True  # its inner blocks are recomputed with it
        else:
            _mark(child, names, on)


# --- folding the flat graph ------------------------------------------------------------

@dataclass
class _Region:
    """A block call (or a repeat) and the fx nodes of the flat graph that belong to it directly."""

    frame: Frame
    depth: int
    parent: str  # the path of the region around it ("" = the top level)
    members: list[fx.Node]


class _Folder:
    """Folds one flat fx graph into calls of block modules, innermost calls first."""

    def __init__(self, graph: fx.Graph, g: nx.MultiDiGraph, values: Mapping[TensorRef, fx.Node],
                 lean: bool = False) -> None:
        self.graph = graph
        self.lean = lean
        self.calls: dict[str, BlockCall] = g.graph.get("calls", {})
        self.values = values
        self.order: dict[fx.Node, tuple[int, int]] = {n: (i, 0) for i, n in enumerate(graph.nodes)}
        self.regions: dict[str, _Region] = {}
        self.moved: dict[fx.Node, fx.Node] = {}  # a folded value -> what the parent reads instead
        self.blocks: dict[str, fx.Graph] = {}  # block call path -> its graph
        self.arity: dict[str, int] = {}  # block call path -> how many results its forward returns
        self.repeats: dict[str, bool] = {}  # repeat path -> whether its copies return tuples
        self.looped: set[str] = set()  # the repeats called as one loop

    def run(self) -> None:
        for node in self.graph.nodes:
            self._place(node)
        for path in sorted(self.regions, key=lambda p: -self.regions[p].depth):  # stable: copies in order
            region = self.regions[path]
            if region.frame.repeat is not None:
                self._fold_repeat(path, region)
            else:
                self._fold_call(path, region)

    def _place(self, node: fx.Node) -> None:
        frames: tuple[Frame, ...] = node.meta.get(SCOPE, ())
        if node.op == "get_attr" and node.target != "training":  # a weight is read where its owner lives
            target = str(node.target)
            frames = tuple(f for f in frames if target.startswith(f.path + "."))
        for depth, frame in enumerate(frames):
            if frame.path not in self.regions:
                self.regions[frame.path] = _Region(frame, depth, frames[depth - 1].path if depth else "", [])
        if frames:
            self.regions[frames[-1].path].members.append(node)

    def _value(self, value: fx.Node | None) -> fx.Node | None:
        """What the graph now holds for a lowered value (its block's call or a getitem of it)."""
        while value is not None and value in self.moved:
            value = self.moved[value]
        return None if value is None or getattr(value, "_erased", False) else value

    def _adopt(self, parent: str, nodes: list[fx.Node], after: fx.Node) -> None:
        """Record new fx nodes (placed just after `after`, in this order) as members of `parent`."""
        base, sub = self.order[after]
        for k, node in enumerate(nodes, start=1):
            self.order[node] = (base, sub + k)
        if parent:
            members = self.regions[parent].members
            members.extend(nodes)
            members.sort(key=self.order.__getitem__)

    def _fold_call(self, path: str, region: _Region) -> None:
        """Move one block call's nodes into its own graph; the parent calls its module instead."""
        members = sorted(region.members, key=self.order.__getitem__)
        inside = set(members)
        call = self.calls.get(path)
        inputs = self._inputs(members, inside, call)
        outputs = self._outputs(members, inside, call)
        if self.lean:  # only what the call reads and makes (a signature may not use every input or output)
            read = {v for node in members for v in node.all_input_nodes} | set(outputs)
            inputs = [(name, value) for name, value in inputs if value in read]
            outputs = [value for value in outputs if value is not None]
        sub = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        taken: set[str] = set()
        for name, value in inputs:
            target = f"{name}_" if name in RESERVED_NAMES else name
            while target in taken:
                target += "_"
            taken.add(target)
            ph = sub.placeholder(target, type_expr=torch.Tensor)
            ph.meta.update({k: v for k, v in value.meta.items() if k == "nnspec"})
            env.setdefault(value, ph)
        prefix = path + "."
        for node in members:
            new = sub.node_copy(node, env.__getitem__)
            if node.op in ("call_module", "get_attr") and str(node.target).startswith(prefix):
                new.target = str(node.target)[len(prefix):]
            env[node] = new
        results = [None if value is None else env[value] for value in outputs]
        sub.output(results[0] if len(results) == 1 else tuple(results))
        self.blocks[path] = sub
        self.arity[path] = len(results)
        self._replace(path, region, members, [v for _, v in inputs], outputs)

    def _inputs(self, members: list[fx.Node], inside: set[fx.Node],
                call: BlockCall | None) -> list[tuple[str, fx.Node]]:
        """The call's arguments: its block's inputs in order, then every other outside value it reads."""
        declared = []
        for name, ref in ({} if call is None else call.inputs).items():
            value = self._value(self.values.get(ref))
            if value is not None:
                declared.append((name, value))
        seen = {value for _, value in declared}
        extra: list[tuple[str, fx.Node]] = []
        for node in members:
            for value in node.all_input_nodes:
                if value not in inside and value not in seen:
                    seen.add(value)
                    extra.append((value.name, value))
        return declared + extra

    def _outputs(self, members: list[fx.Node], inside: set[fx.Node], call: BlockCall | None) -> list[fx.Node | None]:
        """The call's results: its block's outputs in order (None where nothing computes one), then
        every other value read outside."""
        declared = [self._value(self.values.get(ref)) for ref in ({} if call is None else call.outputs).values()]
        extra = [n for n in members if n not in declared and any(u not in inside for u in n.users)]
        return declared + extra

    def _replace(self, path: str, region: _Region, members: list[fx.Node], args: list[fx.Node],
                 outputs: list[fx.Node | None]) -> None:
        """Put a call of the module at `path` just after its last member, and remove the members."""
        inside = set(members)
        last = members[-1]
        with self.graph.inserting_after(last):
            call = self.graph.call_module(path, tuple(args))
        first = next((v for v in outputs if v is not None), None)
        if first is not None and "nnspec" in first.meta:
            call.meta["nnspec"] = first.meta["nnspec"]
        made = [call]
        for i, value in enumerate(outputs):
            if value is None:
                continue
            if len(outputs) == 1:
                result = call
            else:
                with self.graph.inserting_after(made[-1]):
                    result = self.graph.call_function(operator.getitem, (call, i))
                result.meta.update({k: v for k, v in value.meta.items() if k == "nnspec"})
                made.append(result)
            if value not in inside:  # a pass-through output: the outside already holds it
                continue
            value.replace_all_uses_with(result, lambda user: user not in inside)
            self.moved[value] = result
        for node in made[1:]:
            if not node.users:
                self.graph.erase_node(node)
        made = [n for n in made if n is call or n.users]
        for node in reversed(members):
            self.graph.erase_node(node)
        self._adopt(region.parent, made, last)

    def _fold_repeat(self, path: str, region: _Region) -> None:
        """Call the copies of a repeat as one loop where they chain uniformly; else leave each call."""
        members = sorted(region.members, key=self.order.__getitem__)
        copies = [n for n in members if n.op == "call_module"]
        multi = self.arity.get(str(copies[0].target), 1) > 1 if copies else False
        self.repeats[path] = multi
        if len(copies) != region.frame.repeat or not self._chains(copies, members, multi):
            self._adopt_as_is(region.parent, members)
            return
        last = copies[-1]
        self.looped.add(path)
        with self.graph.inserting_after(last):
            call = self.graph.call_module(path, copies[0].args)
        call.meta.update({k: v for k, v in last.meta.items() if k == "nnspec"})
        last.replace_all_uses_with(call)
        self.moved[last] = call
        results = [u for u in call.users if u in set(members)]  # the last copy's getitems, now the loop's
        for node in reversed(members):
            if node not in results:
                self.graph.erase_node(node)
        self._adopt(region.parent, [call, *results], last)

    def _adopt_as_is(self, parent: str, members: list[fx.Node]) -> None:
        if parent:
            self.regions[parent].members.extend(members)
            self.regions[parent].members.sort(key=self.order.__getitem__)

    @staticmethod
    def _chains(copies: list[fx.Node], members: list[fx.Node], multi: bool) -> bool:
        """Whether each copy reads the last one's first output and the same other values, and only
        the last copy's results are read outside the repeat."""
        links: set[fx.Node] = set()
        for before, after in itertools.pairwise(copies):
            head = after.args[0] if after.args else None
            if not isinstance(head, fx.Node) or after.args[1:] != copies[0].args[1:]:
                return False
            if multi:
                if head.target is not operator.getitem or head.args != (before, 0) or set(head.users) != {after}:
                    return False
                links.add(head)
            elif head is not before:
                return False
            if set(before.users) != ({head} if multi else {after}):
                return False
        allowed = set(copies) | links | set(copies[-1].users)
        return all(m in allowed for m in members)


@dataclass(frozen=True)
class Folded:
    """A flat fx graph folded into block calls (see `fold`).

    Attributes:
        blocks: each block call's path and its graph (targets relative to the call's module).
        repeats: each repeat's path, and whether its copies return tuples.
        looped: the repeats whose copies the parent runs as one loop (the others: copy by copy).
        calls: the block calls of the checked graph, by path.
    """

    blocks: dict[str, fx.Graph]
    repeats: dict[str, bool]
    looped: set[str]
    calls: dict[str, BlockCall]


def fold(graph: fx.Graph, g: nx.MultiDiGraph, values: Mapping[TensorRef, fx.Node], lean: bool = False) -> Folded:
    """Fold the flat fx graph of checked graph `g` into block calls, innermost first: `graph` is
    rewritten to call a module at each outermost block call's path (a repeat's path where its
    copies run as a loop), and each call's own graph is returned.

    A call takes the block's inputs in declared order and returns its outputs in declared order;
    `lean` leaves out the inputs it does not read and the outputs it does not compute (a derived
    signature's part of a block), as generated code does."""
    folder = _Folder(graph, g, values, lean)
    folder.run()
    return Folded(folder.blocks, folder.repeats, folder.looped, folder.calls)


def nest(graph: fx.Graph, g: nx.MultiDiGraph, values: Mapping[TensorRef, fx.Node], root: nn.Module) -> fx.Graph:
    """Fold the flat fx graph of checked graph `g` (lowered over `root`'s submodules) into block calls.

    Every block call of `g` becomes a `BlockModule` at its path in `root` and every repeat a
    `Repeat`, holding the modules that were there; `graph` is rewritten to call them.

    Returns:
        `graph`, now the top level only.
    """
    folded = fold(graph, g, values)
    docs: dict[str, str | None] = g.graph.get("block_docs", {})
    for path in sorted(dict.fromkeys([*folded.blocks, *folded.repeats]), key=lambda p: -p.count(".")):
        if path in folded.blocks:
            block = block_of(folded, path)
            made = BlockModule(container(root, path), folded.blocks[path], class_name(block))
            made.meta["block"] = block
            type(made).__doc__ = docs.get(block) or f"Block '{block}'."
            install(root, path, made)
        else:
            copies = [m for m in container(root, path)._modules.values() if m is not None]
            forward = copies[0].graph if isinstance(copies[0], BlockModule) else fx.Graph()
            install(root, path, repeat(copies, arg_names(forward), folded.repeats[path]))
    return graph  # well formed by construction; the tests lint every block's graph


def block_of(folded: Folded, path: str) -> str:
    """The name of the block that the call at `path` runs."""
    call = folded.calls.get(path)
    return call.block if call is not None else path.rpartition(".")[2]


def arg_names(graph: fx.Graph) -> tuple[str, ...]:
    """A block call's arguments (the placeholders of its `graph`), as names a `Repeat`'s loop can take
    (not ``self``, ``layer`` or ``out``)."""
    names: list[str] = []
    for node in graph.nodes:
        if node.op == "placeholder":
            name = str(node.target)
            while name in ("self", "layer", "out", *names):
                name += "_"
            names.append(name)
    return tuple(names) or ("x",)


def container(root: nn.Module, path: str) -> nn.Module:
    """The module now at `path` (a plain container made while lowering), or a new empty one."""
    module = root
    for part in path.split("."):
        child = module._modules.get(part)
        if child is None:
            return nn.Module()
        module = child
    return module


def install(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put `module` at `path` in place of what was there (same position among its siblings)."""
    *prefix, leaf = path.split(".")
    parent = root
    for part in prefix:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    if leaf in parent._modules:
        parent._modules[leaf] = module
    else:
        parent.add_module(leaf, module)
