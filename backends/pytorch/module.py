"""`to_torch`: a spec (or a checked graph) becomes a `torch.fx.GraphModule`.

The module's submodules are named by node ids (``encoder.3.attn``), so its ``state_dict``
keys are the weights the checked graph declares (``c1.weight``, ``encoder.3.attn.in_proj_weight``);
a tied weight is one Parameter, stored under its owner's name only. ``forward`` takes the
spec's inputs (by position or by name) and returns its one output, or a tuple of its
outputs in declared order.

Each block call is a module of its own (`blocks.BlockModule`, named after its block, with its own
``forward``) and each repeat an ``nn.ModuleList`` that loops over its copies, so FSDP2,
activation checkpointing (``checkpoint=True``), hooks and ``torch.compile`` work per block.

Signatures share the weights of the main graph: the module built for the main graph
exposes each as a method (``model.decode_step(token, h, c)``, also ``model.signature(name)``),
generated from its own fx graph over the same submodules, folded into calls of the blocks like
``forward`` (``self.h[0].with_past(...)``: `signatures.nest_signature`), so that hooks, FSDP2 and
checkpointing apply per block there too. ``to_torch(spec, signature=name)`` builds that entry point
alone, with the subset of the state_dict it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import networkx as nx
import torch
from torch import fx, nn

from nnspec.builder import Spec, check_spec, compile_graph, graph_inputs, load_spec, nodes
from nnspec.builder.errors import did_you_mean
from nnspec.builder.kv_cache import derived_graphs
from nnspec.builder.ops.layers import Embedding, PositionEmbedding, SinusoidalPosition
from nnspec.builder.tensor import fmt_dim

from .blocks import nest, set_checkpoint
from .emitter import Emitter, LoweringError, ModuleTree
from .graphstate import GraphState, graph_from_state, graph_state
from .lowering import TABLE
from .signatures import nest_signature

__all__ = ["SpecModule", "SpecSource", "lower", "register_fsdp_methods", "spec_info", "to_torch"]

SpecSource = Spec | str | Path | Mapping[str, Any]


def to_torch(source: SpecSource | nx.MultiDiGraph, signature: str | None = None, *,
             overrides: Mapping[str, Any] | None = None, device: torch.device | str | None = None,
             checkpoint: bool | Iterable[str] | None = None) -> SpecModule:
    """Build a spec as a PyTorch module.

    Args:
        source: a spec (path, text, dict or `Spec`) or a checked graph from `compile_graph`.
        signature: build this signature of the spec alone instead of the main graph.
        overrides: param values replacing the spec's (``{"d_model": 256}``).
        device: where to create the weights (``"meta"`` allocates none).
        checkpoint: recompute the activations of every outermost block call in backward instead of
            keeping them (True), of the calls of the named blocks (``["block"]``), of none (False),
            or of the calls of the blocks the spec marks ``checkpoint: true`` (None); see
            `BlockModule.checkpoint_activations`, which can also be set per call afterwards.

    Returns:
        A `SpecModule` (a `torch.fx.GraphModule`), initialised as the spec's `init:` says, else
        as PyTorch initialises each layer.
        Built from the main graph of a spec, it also has one method per signature.

    Raises:
        builder.SpecError: the spec is invalid.
        LoweringError: a node cannot be lowered (the message names it).
    """
    graphs = _graphs(source, signature, overrides)
    tree = ModuleTree(build=True, device=device)
    lowered = lower(graphs, tree)
    _check_weights(tree)
    (_, first), *rest = lowered.items()
    nest(first.fx, first.source, first.values, tree.root)  # blocks become modules with their own forward
    for name, em in rest:  # and each signature's part of a block one of its methods
        assert name is not None
        nest_signature(em.fx, em.source, em.values, tree.root, name)
    if checkpoint is None:
        checkpoint = first.source.graph.get("checkpoint_blocks", [])
    elif not isinstance(checkpoint, bool):
        checkpoint = _known_blocks(first.source, checkpoint)
    set_checkpoint(tree.root, checkpoint)
    model = SpecModule(tree.root, first.fx, first.source.graph["name"])
    model.meta["nnspec"] = _info(first)  # before _attach, which reads it
    sigs = {}
    for name, em in rest:
        assert name is not None
        sig = fx.GraphModule(tree.root, em.fx, f"{spec_info(model)['name']}_{name}")
        sig.meta["nnspec"] = _info(em)
        sigs[name] = sig
    model._attach(sigs)
    return model


def _graphs(source: SpecSource | nx.MultiDiGraph, signature: str | None,
            overrides: Mapping[str, Any] | None, derived: bool = True) -> dict[str | None, nx.MultiDiGraph]:
    """The checked graphs to build, the entry point (`forward`) first; with `derived`, also the
    key/value-cache signatures derived from them."""
    if isinstance(source, nx.MultiDiGraph):
        if signature is not None or overrides:
            raise ValueError("signature and overrides apply to a spec, not to an already checked graph")
        return {source.graph.get("signature"): source}
    spec = load_spec(source, overrides)
    if signature is not None:
        return {signature: compile_graph(spec, signature)}
    graphs, _ = check_spec(spec)  # the main graph and every signature, shared weights checked
    if not derived:
        return graphs
    return {**graphs, **derived_graphs(graphs)}  # and the key/value-cache signature of each causal decoder


def _known_blocks(g: nx.MultiDiGraph, names: Iterable[str]) -> list[str]:
    """`names`, each the name of a block that the graph calls (else ValueError with a did-you-mean)."""
    names = [names] if isinstance(names, str) else list(names)
    called = {call.block for call in g.graph.get("calls", {}).values()}
    for name in names:
        if name not in called:
            hints = "".join(f"; {h}" for h in did_you_mean(name, called))
            raise ValueError(f"checkpoint: spec '{g.graph['name']}' calls no block '{name}'{hints} "
                             f"(blocks: {', '.join(sorted(called)) or 'none'})")
    return names


def lower(graphs: Mapping[str | None, nx.MultiDiGraph], tree: ModuleTree) -> dict[str | None, Emitter]:
    """Lower checked graphs, in order, to fx graphs (``emitter.fx``) over the submodules of one `tree`."""
    out = {}
    for name, g in graphs.items():
        em = Emitter(g, tree, TABLE)
        em.run()
        out[name] = em
    return out


def _info(em: Emitter) -> dict[str, Any]:
    """What a caller of the built module needs to know about its graph (kept in ``meta["nnspec"]``)."""
    g = em.source
    types = graph_inputs(g)
    windows = [n.model.max_len for n in nodes(g) if isinstance(n.model, PositionEmbedding | SinusoidalPosition)]
    ranges: dict[str, int] = {}  # integer inputs that index an embedding: ids below its size
    for n in nodes(g):
        ref = n.bindings.get("x")
        if isinstance(n.model, Embedding) and ref is not None and ref.node in types:
            ranges[ref.node] = min(ranges.get(ref.node, n.model.num_embeddings), n.model.num_embeddings)
    return {
        "name": g.graph["name"],
        "signature": g.graph.get("signature"),
        "inputs": tuple(g.graph["inputs"]),
        "input_types": {k: (tuple(fmt_dim(d) for d in t.shape), t.dtype) for k, t in types.items()},
        "outputs": tuple(g.graph["outputs"]),
        "aliases": em.unresolved_aliases(),
        "max_len": min(windows) if windows else None,
        "id_ranges": ranges,
    }


def spec_info(module: nn.Module) -> dict[str, Any]:
    """What `to_torch` recorded about a module's graph (``meta["nnspec"]``): name, signature,
    inputs and their types, outputs, aliases, max_len, id_ranges.

    Raises:
        TypeError: the module was not built by `to_torch`.
    """
    meta = getattr(module, "meta", None)
    if not isinstance(meta, dict) or "nnspec" not in meta:
        raise TypeError(f"{type(module).__name__} was not built by to_torch (it has no meta['nnspec'])")
    return cast(dict[str, Any], meta["nnspec"])


def _fill_aliases(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """load_state_dict pre-hook of a signature built alone: a weight that stands in for a tied weight
    of the main graph (``tgt_embed.weight`` for ``src_embed.weight``) loads from its owner's key."""
    for holder, owner in spec_info(module)["aliases"].items():
        if prefix + holder not in state_dict and prefix + owner in state_dict:
            state_dict[prefix + holder] = state_dict[prefix + owner]


def _check_weights(tree: ModuleTree) -> None:
    """The built parameters must be exactly the weights the checked graph declares."""
    built = {k: tuple(v.shape) for k, v in tree.root.named_parameters()}
    declared = tree.weight_shapes()
    if built != declared:  # pragma: no cover - a bug in a lowering
        diff = sorted(set(built.items()) ^ set(declared.items()))
        raise LoweringError(f"built parameters differ from the declared weights: {diff}")


class SpecModule(fx.GraphModule):
    """A spec built as a `torch.fx.GraphModule`; its signatures are methods over the same weights.

    Attributes:
        meta: ``meta["nnspec"]`` holds the spec name, signature, input and output names.
    """

    # torch.jit.script compiles properties unless told not to
    __jit_unused_properties__ = [*getattr(fx.GraphModule, "__jit_unused_properties__", []),  # noqa: RUF012
                                 "signatures", "input_names", "output_names"]

    def __init__(self, root: nn.Module, graph: fx.Graph, class_name: str = "GraphModule") -> None:
        super().__init__(root, graph, class_name)
        # GraphModule copies only what the graph refers to; keep the whole tree, in its order,
        # so that every signature's submodules live here and state_dict reads like the spec.
        children = dict(root.named_children())
        self._modules.clear()
        self._modules.update(children)
        self.__dict__.setdefault("_nnspec_signatures", {})

    # --- signatures ------------------------------------------------------------------

    def _attach(self, signatures: Mapping[str, fx.GraphModule]) -> None:
        """Make `signatures` run over this module's submodules and install them as methods."""
        for sig in signatures.values():
            sig.__dict__["_modules"] = self._modules
        self.__dict__["_nnspec_signatures"] = dict(signatures)
        cls = type(self)  # GraphModule gives each instance its own class
        for name in signatures:
            if not hasattr(self, name):
                setattr(cls, name, _signature_method(name))
        hooks = self._load_state_dict_pre_hooks.values()
        if spec_info(self)["aliases"] and not any(getattr(h, "hook", h) is _fill_aliases for h in hooks):
            self.register_load_state_dict_pre_hook(_fill_aliases)  # lost by copies that rebuild the module

    @property
    def signatures(self) -> tuple[str, ...]:
        """The names of the signatures this module can run besides `forward`."""
        return tuple(self.__dict__["_nnspec_signatures"])

    def signature(self, name: str) -> fx.GraphModule:
        """The module that runs signature `name` over this module's weights (train/eval follow this one)."""
        sigs: dict[str, fx.GraphModule] = self.__dict__["_nnspec_signatures"]
        if name not in sigs:
            hints = "".join(f"; {h}" for h in did_you_mean(name, sigs))
            raise KeyError(f"module '{spec_info(self)['name']}' has no signature '{name}'{hints} "
                           f"(signatures: {', '.join(sigs) or 'none'})")
        sig = sigs[name]
        sig.training = self.training
        return sig

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec_info(self)["inputs"])

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec_info(self)["outputs"])

    # --- copy and pickle -------------------------------------------------------------

    def _deepcopy_init(self) -> Callable[..., None]:
        def init(res: SpecModule, fake: nn.Module, graph: fx.Graph) -> None:
            SpecModule.__init__(res, fake, graph, type(self).__name__)
            res.meta = fake.__dict__.get("meta", {})  # GraphModule sets it again, after this
            res._attach(fake.__dict__.get("_nnspec_signatures", {}))

        return init

    def __copy__(self) -> SpecModule:
        res = SpecModule(self, self.graph, type(self).__name__)
        res.meta = dict(getattr(self, "meta", {}))
        res._attach(self.__dict__["_nnspec_signatures"])
        return res

    def __reduce__(self) -> tuple[Any, ...]:
        # GraphModule pickles its generated code and re-traces it when loaded, which would freeze
        # attribute reads such as `self.training` (attention dropout) into constants. The fx
        # graphs travel node by node instead, with the submodules and the signatures beside them.
        root = nn.Module()
        root._modules.update(self._modules)
        root._parameters.update(self._parameters)
        root._buffers.update(self._buffers)
        root._non_persistent_buffers_set.update(self._non_persistent_buffers_set)
        sigs = {name: (graph_state(sig.graph), type(sig).__name__, sig.meta)
                for name, sig in self.__dict__["_nnspec_signatures"].items()}
        return (_restore, (root, graph_state(self.graph), type(self).__name__, dict(self.meta), sigs, self.training))


def register_fsdp_methods(model: SpecModule) -> list[str]:
    """Tell FSDP2 that the signature methods of a sharded `model` are forward methods, so that the
    root's parameters (embeddings, final norm, LM head) are gathered when one runs.

    Call it after ``fully_shard(model)``; a module not sharded is left alone. The blocks need
    nothing: their methods (``model.h[0].with_past``) run through ``__call__``, so the hooks that
    ``fully_shard`` put on each block apply to them as to ``forward``.

    Returns:
        The method names registered (those of `model.signatures` that are attributes of it).
    """
    from torch.distributed.fsdp import register_fsdp_forward_method

    names = [name for name in model.signatures if getattr(getattr(type(model), name, None), "signature", None) == name]
    for name in names:
        register_fsdp_forward_method(model, name)
    return names


def _signature_method(name: str) -> Callable[..., Any]:
    def method(self: SpecModule, *args: Any, **kwargs: Any) -> Any:
        return self.signature(name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Run signature '{name}' over this module's weights."
    method.signature = name  # type: ignore[attr-defined]  # for register_fsdp_methods
    return method


def _restore(root: nn.Module, graph: GraphState, class_name: str, meta: dict[str, Any],
             signatures: dict[str, tuple[GraphState, str, dict[str, Any]]], training: bool) -> SpecModule:
    """Unpickle a `SpecModule` (see `SpecModule.__reduce__`)."""
    res = SpecModule(root, graph_from_state(graph), class_name)
    res.meta = meta
    sigs = {}
    for name, (sig_graph, sig_class, sig_meta) in signatures.items():
        sigs[name] = fx.GraphModule(root, graph_from_state(sig_graph), sig_class)
        sigs[name].meta = sig_meta
    res._attach(sigs)
    return res.train(training)
