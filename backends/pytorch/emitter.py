"""Building blocks of lowering: submodule constructors, the module tree named by node ids, and
the `Emitter` that turns one checked graph into a `torch.fx.Graph`.

A lowering function (see `lowering.py`) receives the emitter and one `builder.Node`; it asks
the emitter for the node's input values, creates at most one submodule (named by the node
id) and emits fx nodes. The emitter records every submodule's constructor as a `Ctor`, so
the same lowering also drives the standalone source writer (`codegen.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import networkx as nx
import sympy
import torch
from torch import fx, nn

from nnspec.backends.table import LoweringError as BackendLoweringError
from nnspec.builder import INPUT, Node, TensorRef, TensorType, nodes

from .table import LoweringTable

__all__ = ["SINUSOID_SOURCE", "Ctor", "Emitter", "InitCall", "LoweringError", "ModuleTree", "TensorInit", "init_calls",
           "sinusoid_table", "skips_default_init"]

RESERVED_NAMES = frozenset({"self", "torch", "inf", "nan", "NoneType", "device", "fx_pytree", "pytree"})
"""Names the generated code uses (`self`, globals): no forward argument or local variable may take them."""


class LoweringError(BackendLoweringError):
    """A node that the PyTorch backend cannot lower; the message names the node."""


def sinusoid_table(max_len: int, d: int) -> torch.Tensor:
    """The fixed position encoding of Vaswani et al.: PE[t, 2i] = sin(t w_i), PE[t, 2i+1] = cos(t w_i).

    w_i = 10000^(-2i/d). Computed exactly as `TensorInit.source` writes it for generated code.

    Returns:
        A float32 tensor of shape (max_len, d).
    """
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * _log_step(d))  # (d/2,)
    angles = position * freq  # (max_len, d/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # interleaved: (max_len, d)


def _log_step(d: int) -> float:
    return -math.log(10000.0) / d


SINUSOID_SOURCE = f'''def sinusoid_table(max_len: int, d: int) -> torch.Tensor:
    """The fixed position encoding of Vaswani et al.: PE[t, 2i] = sin(t w_i), PE[t, 2i+1] = cos(t w_i)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * ({-math.log(10000.0)!r} / d))  # (d/2,)
    angles = position * freq  # (max_len, d/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # interleaved: (max_len, d)
'''
"""Generated code's copy of `sinusoid_table` (torch only; the same floats)."""


@dataclass(frozen=True)
class TensorInit:
    """A parameter or buffer of a container submodule, with its initialisation.

    Attributes:
        name: the attribute name (a state_dict key suffix).
        shape: concrete shape.
        kind: ``uniform`` (in [-bound, bound]), ``normal`` (std = bound), ``zeros``, ``ones``,
            or ``sinusoid`` (the fixed position table, shape (max_len, d)).
        bound: the uniform bound or normal std.
        buffer: a non-persistent buffer instead of a parameter.
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    bound: float = 0.0
    buffer: bool = False

    def build(self) -> torch.Tensor:
        if self.kind == "sinusoid":
            return sinusoid_table(*self.shape)
        t = torch.empty(self.shape)
        with torch.no_grad():
            if self.kind == "uniform":
                t.uniform_(-self.bound, self.bound)
            elif self.kind == "normal":
                t.normal_(0.0, self.bound)
            elif self.kind == "zeros":
                t.zero_()
            elif self.kind == "ones":
                t.fill_(1.0)
            else:  # pragma: no cover - a bug in a lowering
                raise AssertionError(f"unknown init kind '{self.kind}'")
        return t

    def source(self) -> str:
        """A torch-only expression that builds the same tensor (``sinusoid``: a call of the function
        that `SINUSOID_SOURCE` defines)."""
        shape = ", ".join(map(str, self.shape))
        if self.kind == "sinusoid":
            return f"sinusoid_table({shape})"
        if self.kind == "uniform":
            return f"torch.empty({shape}).uniform_({-self.bound!r}, {self.bound!r})"
        if self.kind == "normal":
            return f"torch.empty({shape}).normal_(0.0, {self.bound!r})"
        return f"torch.{self.kind}({shape})"


@dataclass(frozen=True)
class Ctor:
    """How to construct one submodule: a torch.nn class and its arguments, or a plain
    container (``cls == ""``) holding the node's own tensors.

    The same record builds the module here and is written out by `codegen` as source.
    """

    cls: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    tensors: tuple[TensorInit, ...] = ()

    @classmethod
    def of(cls, name: str, *args: Any, **kwargs: Any) -> Ctor:
        return cls(name, args, tuple(kwargs.items()))

    def build(self) -> nn.Module:
        if self.cls:
            module: nn.Module = getattr(nn, self.cls)(*self.args, **dict(self.kwargs))
            return module
        module = nn.Module()
        for t in self.tensors:
            path, _, leaf = t.name.rpartition(".")  # ``out_proj.weight``: in a plain child ``out_proj``
            owner = module
            for part in path.split(".") if path else ():
                if part not in owner._modules:
                    owner.add_module(part, nn.Module())
                owner = owner.get_submodule(part)
            if t.buffer:
                owner.register_buffer(leaf, t.build(), persistent=False)
            else:
                owner.register_parameter(leaf, nn.Parameter(t.build()))
        return module

    def source(self, skip_init: bool = False) -> str:
        """The constructor call as source (containers: ``torch.nn.Module()``; see `tensor_lines`);
        with `skip_init`, through ``torch.nn.utils.skip_init`` (no default initialisation)."""
        if not self.cls:
            return "torch.nn.Module()"
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        if skip_init:
            return f"torch.nn.utils.skip_init(torch.nn.{self.cls}, {', '.join(parts)})"
        return f"torch.nn.{self.cls}({', '.join(parts)})"


class InitCall(NamedTuple):
    """One torch.nn.init call on a node's weight, or on one row of it."""

    weight: str
    row: int | None
    fn: str
    kwargs: dict[str, Any]


def init_calls(node: Node) -> list[InitCall]:
    """The torch.nn.init calls that the spec's `init:` asks for on a node's weights, in order;
    rows the op keeps zero (an embedding's padding row) are zeroed again afterwards."""
    assert node.model is not None
    zero_rows = node.model.zero_rows()
    calls = []
    for name, init in node.inits.items():
        calls.append(InitCall(name, None, f"{init.fn}_", init.kwargs))
        if name in zero_rows:
            calls.append(InitCall(name, zero_rows[name], "zeros_", {}))
    return calls


def _meta_if_spec_initialises_all(ctor: Ctor, node: Node) -> nn.Module | None:
    """The node's submodule built on the meta device, when the spec initialises every one of its
    tensors (so that PyTorch's default initialisation would be drawn only to be thrown away)."""
    if not node.inits or not ctor.cls:
        return None
    with torch.device("meta"):
        module = ctor.build()
    names = {name for name, _ in module.named_parameters()}
    if names and names <= set(node.inits) and not any(True for _ in module.buffers()):
        return module
    return None


def skips_default_init(ctor: Ctor, node: Node) -> bool:
    """Whether the node's submodule is built without PyTorch's default initialisation (its
    `init:` covers every tensor): `to_torch` and the emitted source (``skip_init``) agree."""
    return _meta_if_spec_initialises_all(ctor, node) is not None


def _construct(ctor: Ctor, node: Node) -> nn.Module:
    """Build a node's submodule, initialised as the spec says (see `skips_default_init`; for
    GPT-2 small that saves a third of the build)."""
    target = torch.get_default_device()
    module = _meta_if_spec_initialises_all(ctor, node) if target.type != "meta" else None
    if module is not None:
        module.to_empty(device=target)
    else:
        module = ctor.build()
    _initialise(module, node)
    return module


def _initialise(module: nn.Module, node: Node) -> None:
    for call in init_calls(node):
        tensor = module.get_parameter(call.weight)
        if tensor.is_meta:  # no storage to fill
            continue
        getattr(nn.init, call.fn)(tensor if call.row is None else tensor[call.row], **call.kwargs)


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Install `module` at dotted `path`, creating plain containers for missing prefixes."""
    *prefix, leaf = path.split(".")
    parent = root
    for part in prefix:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(leaf, module)


class ModuleTree:
    """The submodules of one spec, named by node id and shared by all its signatures.

    Args:
        build: construct the modules (False: only record constructors, for `codegen`).
        device: where to construct them (``"meta"`` builds no storage).
    """

    def __init__(self, build: bool = True, device: torch.device | str | None = None) -> None:
        self.root = nn.Module()
        self.ctors: dict[str, Ctor] = {}
        self.owners: dict[str, Node] = {}
        self._containers: set[str] = set()  # proper prefixes of submodule paths
        self.build = build
        self.device = device

    def add(self, node: Node, ctor: Ctor) -> str:
        """The submodule of `node` (its id is the path): created once, reused by later signatures."""
        path = node.id
        known = self.ctors.get(path)
        if known is not None:
            if known != ctor:
                raise LoweringError(f"node '{path}' is {ctor.source()} here but {known.source()} in another "
                                    "signature; a layer shared by signatures must be the same layer")
            return path
        prefixes = [path.rsplit(".", i)[0] for i in range(1, path.count(".") + 1)]
        clash = next((p for p in prefixes if p in self.ctors), None)
        if path in self._containers or clash is not None:
            other = clash or next(p for p in self.ctors if p.startswith(path + "."))
            raise LoweringError(f"node '{path}' and node '{other}' cannot both be submodules "
                                "(one id is a prefix of the other)")
        self._containers.update(prefixes)
        self.ctors[path] = ctor
        self.owners[path] = node
        if self.build:
            with torch.device(self.device) if self.device is not None else contextlib.nullcontext():
                _set_submodule(self.root, path, _construct(ctor, node))
        return path

    def locate(self, weight: str) -> tuple[str, str] | None:
        """The (node id, weight name) of a tree node that owns `weight` (``encoder.0.attn.out_proj.weight``)."""
        path, _, name = weight.rpartition(".")
        while path:
            owner = self.owners.get(path)
            if owner is not None:
                return (path, name) if name in owner.weights else None
            path, _, head = path.rpartition(".")  # weight names such as out_proj.weight hold a dot
            name = f"{head}.{name}"
        return None

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The state_dict-style parameter names and shapes the graph nodes declare."""
        return {f"{path}.{name}": shape for path, node in self.owners.items() for name, shape in node.weights.items()}


Outputs = dict[str, fx.Node]
LowerFn = Callable[["Emitter", Node], Outputs]
"""A lowering function: the emitter and a checked node to the node's outputs by port."""


class Emitter:
    """Lowers one checked graph into a `torch.fx.Graph` over the submodules of a `ModuleTree`.

    Lowering functions use `x`, `has`, `module`, `call_module`, `fn`, `method`, `size` and
    `weight`; each call refers to the node being lowered.
    """

    def __init__(self, graph: nx.MultiDiGraph, tree: ModuleTree, table: LoweringTable[LowerFn]) -> None:
        self.source = graph
        self.tree = tree
        self.table = table
        self.fx = fx.Graph()
        self.values: dict[TensorRef, fx.Node] = {}
        self._node: Node | None = None
        self._memo: dict[tuple[fx.Node, object, str], fx.Node] = {}  # size(axis) and device reads, once per value
        # and block call (a block reads its own, so that it can be a module)

    # --- the whole graph -------------------------------------------------------------

    def run(self) -> fx.Graph:
        """Emit placeholders, every node, and the output (one tensor, or a tuple in declared order)."""
        for name in self.source.graph["inputs"]:
            if name in RESERVED_NAMES:
                raise LoweringError(f"input '{name}' cannot be a forward() argument of a PyTorch module "
                                    f"(generated code uses that name); rename the input")
            arg = name.replace(".", "_")  # a derived cache input (past_key_values.0.key) as an argument name
            ph = self.fx.placeholder(arg, type_expr=torch.Tensor)
            if ph.target != arg:  # pragma: no cover - the argument keeps its name; fx renames the variable
                raise LoweringError(f"input '{name}' would be renamed to '{ph.target}' in forward()")
            ph.meta["nnspec"] = (name, "y")
            self.values[TensorRef(name, "y")] = ph
        for node in nodes(self.source):
            if node.op != INPUT:
                self._lower(node)
        outs = [self.values[ref] for ref in self.source.graph["outputs"].values()]
        self.fx.output(outs[0] if len(outs) == 1 else tuple(outs))
        self._drop_unused()
        return self.fx  # well formed by construction; the tests run fx's lint on every seed spec

    def _drop_unused(self) -> None:
        """Remove values nobody reads (the unused ports of multi-output ops); torch calls here are pure."""
        for value in reversed(list(self.fx.nodes)):
            if value.op in ("call_function", "call_method") and not value.users:
                self.fx.erase_node(value)

    def _lower(self, node: Node) -> None:
        node = self._resolve_aliases(node)
        self._node = node
        before = self.fx._root.prev  # the last fx node so far: what follows is this node's
        try:
            outs = self.table[node.op](self, node)
        except LoweringError:
            raise
        except KeyError as exc:
            raise LoweringError(f"node '{node.id}': {exc.args[0]}") from exc
        except Exception as exc:
            raise LoweringError(f"node '{node.id}' (op {node.op}): {type(exc).__name__}: {exc}") from exc
        if set(outs) != set(node.outputs):  # pragma: no cover - a bug in a lowering
            raise AssertionError(f"lowering of '{node.op}' returned ports {sorted(outs)}, expected {sorted(node.outputs)}")
        for port, value in outs.items():
            if "nnspec" not in value.meta:  # created here: name it after the node (fx makes it unique)
                # fx's namespace keeps builtins free but not `self` or `torch`, which its code uses
                self.named(value, (node.id if port == "y" else f"{node.id}_{port}").replace(".", "_"))
                value.meta["nnspec"] = (node.id, port)
            self.values[TensorRef(node.id, port)] = value
        made = self.fx._root.prev
        while made is not before:  # the block calls around the node, for `blocks.nest`
            made.meta["nnspec_scope"] = node.scope
            made.meta["nnspec_owner"] = node.id  # names its temporaries in generated code
            made = made.prev
        self._node = None

    def _resolve_aliases(self, node: Node) -> Node:
        """Tie a signature's stand-in weights back to their owner when the tree already has it.

        A signature that leaves out the owner of a tied weight keeps the weight on the first node
        tied to it (``graph["aliases"]``: ``holder.weight -> owner.weight``). Built together with
        the main graph, the owner exists, and the stand-in becomes a tie to it again.
        """
        aliases: dict[str, str] = self.source.graph.get("aliases", {})
        if not aliases:
            return node
        weights, ties = dict(node.weights), dict(node.ties)
        for name in list(weights):
            owner = self.tree.locate(aliases.get(f"{node.id}.{name}", ""))
            if owner is not None:
                ties[name] = owner
                del weights[name]
        for name, (holder, weight) in list(ties.items()):
            owner = self.tree.locate(aliases.get(f"{holder}.{weight}", ""))
            if owner is not None:
                ties[name] = owner
        if weights == node.weights and ties == node.ties:
            return node
        return dataclasses.replace(node, weights=weights, ties=ties)

    def unresolved_aliases(self) -> dict[str, str]:
        """The graph's aliases whose owner is not in the tree (the holder keeps its own weight)."""
        aliases: dict[str, str] = self.source.graph.get("aliases", {})
        return {k: v for k, v in aliases.items() if self.tree.locate(v) is None}

    def _scope(self) -> str:
        """The path of the innermost block call around the current node ("" at the top level)."""
        return self._node.scope[-1].path if self._node is not None and self._node.scope else ""

    @property
    def node(self) -> Node:
        assert self._node is not None, "only inside a lowering"
        return self._node

    # --- helpers for lowering functions ----------------------------------------------

    def x(self, port: str = "x") -> fx.Node:
        """The value bound to input `port` of the current node."""
        return self.values[self.node.bindings[port]]

    def has(self, port: str) -> bool:
        return port in self.node.bindings

    def type(self, port: str = "x") -> TensorType:
        return self.node.inputs[port]

    def ports(self) -> list[str]:
        """The variadic input ports (0, 1, ...) in numeric order."""
        return sorted(self.node.bindings, key=int)

    def module(self, ctor: Ctor) -> str:
        """Create (or reuse) the current node's submodule; returns its path (the node id)."""
        if self.node.ties:
            tied = ", ".join(self.node.ties)
            raise LoweringError(f"node '{self.node.id}': the PyTorch backend cannot tie weight(s) {tied} of op "
                                f"'{self.node.op}'")
        return self.tree.add(self.node, ctor)

    def call_module(self, ctor: Ctor, *args: Any, **kwargs: Any) -> fx.Node:
        path = self.module(ctor)
        # named "<id>_call" until it is renamed to the node id (when it is the node's output)
        return self.fx.create_node("call_module", path, args, kwargs, name=path.replace(".", "_") + "_call")

    def fn(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> fx.Node:
        return self.fx.call_function(target, args, kwargs)

    def method(self, name: str, *args: Any, **kwargs: Any) -> fx.Node:
        return self.fx.call_method(name, args, kwargs)

    def item(self, value: fx.Node, index: int | slice) -> fx.Node:
        return self.fx.call_function(operator.getitem, (value, index))

    def size(self, value: fx.Node, t: TensorType, axis: int) -> int | fx.Node:
        """Dim `axis` of `value`: a literal when the checked graph knows it, else ``value.size(axis)``."""
        d = t.shape[axis]
        if isinstance(d, sympy.Integer):
            return int(d)
        key = (value, axis, self._scope())
        if key not in self._memo:  # named after the symbol (`seq = x.size(1)`) where it is one
            self._memo[key] = self.named(self.method("size", value, axis), str(d) if d.is_Symbol else "size")
        return self._memo[key]

    def device(self, value: fx.Node) -> fx.Node:
        """``value.device``, for tensors created in forward (positions, masks)."""
        key = (value, "device", self._scope())
        if key not in self._memo:
            self._memo[key] = self.named(self.fn(getattr, value, "device"), f"{value.name}_device")
        return self._memo[key]

    def named(self, value: fx.Node, hint: str) -> fx.Node:
        """Give an intermediate value a readable name (made unique, and kept off reserved names)."""
        value._rename(f"{hint}_" if hint in RESERVED_NAMES else hint)
        return value

    def weight(self, name: str, own: Ctor | None = None) -> fx.Node:
        """A ``get_attr`` of the current node's weight `name`: its tied owner's, or its own.

        `own` is the container of the node's untied tensors, created on first use.
        """
        tie = self.node.ties.get(name)
        if tie is not None:
            return self.fx.get_attr(f"{tie[0]}.{tie[1]}")
        if own is None:  # pragma: no cover - a bug in a lowering
            raise AssertionError(f"weight '{name}' is neither tied nor in a container")
        path = self.tree.add(self.node, own)
        return self.fx.get_attr(f"{path}.{name}")
