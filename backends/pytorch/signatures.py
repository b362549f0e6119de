"""Signatures through the blocks: the flat fx graph of a signature (``encode``, ``with_past``, ...)
is folded into block calls like ``forward``'s (`blocks.fold`), and each block call's part of it
becomes a method of the block module already at that path (`BlockModule.add_method`), so that the
signature calls ``self.h[0].with_past(...)`` and hooks, FSDP2 and checkpointing apply to it.

A part whose graph is ``forward``'s, or an earlier signature's method's, runs that one (the
Transformer's ``encode`` runs the encoder layers' ``forward``); a new body is a method named after
the signature. The copies of a repeat that the signature chains in a loop run a `blocks.Loop` of
the `blocks.Repeat`.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
from torch import fx, nn

from nnspec.builder import TensorRef

from .blocks import BlockModule, Folded, Loop, Repeat, arg_names, block_of, class_name, container, fold, install, repeat
from .subgraph import same_graph

__all__ = ["nest_signature"]


def nest_signature(graph: fx.Graph, g: nx.MultiDiGraph, values: Mapping[TensorRef, fx.Node], root: nn.Module,
                   name: str) -> fx.Graph:
    """Fold the flat fx graph of signature `name` (checked graph `g`, lowered over `root`'s submodules,
    where `blocks.nest` already made the block modules of ``forward``) into calls of block methods.

    Returns:
        `graph`, now the top level only: it calls each outermost block call's method for it.
    """
    folded = fold(graph, g, values, lean=True)
    runs: dict[str, str] = {}  # block call or repeat path -> the method the parent calls
    made: list[tuple[fx.Graph, BlockModule, str]] = []  # methods made here: copies share their code
    for path in sorted(dict.fromkeys([*folded.blocks, *folded.repeats]), key=lambda p: -p.count(".")):
        if path in folded.blocks:
            body = folded.blocks[path]
            _call_methods(body, f"{path}.", runs)
            runs[path] = _block_method(root, folded, path, body, name, g, made)
        elif path in folded.looped:
            runs[path] = _loop(root, folded, path, name, runs)
    _call_methods(graph, "", runs)
    return graph


def _block_method(root: nn.Module, folded: Folded, path: str, body: fx.Graph, name: str, g: nx.MultiDiGraph,
                  made: list[tuple[fx.Graph, BlockModule, str]]) -> str:
    """The method of the block module at `path` that runs `body`: one whose graph it is, else a new one
    (compiled once for copies with the same body: `made` holds the methods made so far)."""
    module = container(root, path)
    if not isinstance(module, BlockModule):  # a block call that only signatures make: `body` is its forward
        block = block_of(folded, path)
        new = BlockModule(module, body, class_name(block))
        new.meta["block"] = block
        type(new).__doc__ = g.graph.get("block_docs", {}).get(block) or f"Block '{block}'."
        install(root, path, new)
        return "forward"
    if same_graph(body, module.graph):
        return "forward"
    for method, graph in module.methods.items():
        if same_graph(body, graph):
            return method
    method = _free_name(module, name=name)
    like = next(((other, m) for graph, other, m in made if same_graph(body, graph)), None)
    module.add_method(method, body, None if like is None else like[0].method_code(like[1]))
    made.append((body, module, method))
    return method


def _loop(root: nn.Module, folded: Folded, path: str, name: str, runs: dict[str, str]) -> str:
    """The method of the repeat at `path` that chains its copies running their method for signature `name`."""
    copies = sorted((p for p in folded.blocks if p.rpartition(".")[0] == path and p.rpartition(".")[2].isdigit()),
                    key=lambda p: int(p.rpartition(".")[2]))
    multi = folded.repeats[path]
    module = container(root, path)
    if not isinstance(module, Repeat):  # a repeat that only signatures make: its forward is this loop's
        module = repeat([root.get_submodule(c) for c in copies], arg_names(folded.blocks[copies[0]]), multi)
        install(root, path, module)
    methods = {runs[c] for c in copies}
    if len(methods) > 1:  # copies whose bodies differ from one another's in some way: one name for all
        method = _free_name(*(root.get_submodule(c) for c in copies), name=name)
        for copy in copies:
            block = root.get_submodule(copy)
            assert isinstance(block, BlockModule)
            block.add_method(method, folded.blocks[copy])
            runs[copy] = method
        methods = {method}
    (method,) = methods
    args = arg_names(folded.blocks[copies[0]])
    if method == "forward" and args == module.arg_names and multi == module.multi_output:
        return "forward"
    for loop in module.loops:
        if (loop.arg_names, loop.multi_output, loop.runs) == (args, multi, method):
            return loop.name
    loop = Loop(_free_name(module, name=name), args, multi, method)
    module.add_loop(loop)
    return loop.name


def _free_name(*modules: nn.Module, name: str) -> str:
    """`name`, with ``_`` appended while one of `modules` has an attribute of that name (a child, a
    method of nn.Module such as ``eval``, or an earlier signature's method)."""
    while any(hasattr(m, name) for m in modules):
        name += "_"
    return name


def _call_methods(graph: fx.Graph, prefix: str, runs: Mapping[str, str]) -> None:
    """Make each call of a module in `graph` (targets relative to `prefix`) call its method in `runs`
    where that is not ``forward``: ``getattr(self.h, "0").with_past(...)``."""
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        method = runs.get(f"{prefix}{node.target}", "forward")
        if method == "forward":
            continue
        with graph.inserting_before(node):
            module = graph.get_attr(str(node.target))
            call = graph.call_method(method, (module, *node.args), dict(node.kwargs))
        call.meta.update(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
