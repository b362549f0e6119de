"""The lowering table (op name -> function) and the `Emitter` every lowering writes ONNX nodes through.

A lowering is a small function ``(e: Emitter, node: Node) -> None``: it reads the node's
arguments and input types, asks the emitter for the value names of its inputs, outputs and
weights, and emits ONNX nodes. Names derive from node ids: node ``enc.attn`` emits ONNX
nodes ``enc.attn/MatMul``, ``enc.attn/Softmax``, ..., reads initializers named like the
PyTorch ``state_dict`` keys (``enc.attn.in_proj_weight``) and writes internal values
``enc.attn/<hint>``; node ids never contain ``/``, so internal names cannot collide with them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from onnx import AttributeProto, NodeProto

from builder import OPS, Node, Op, TensorRef
from builder.errors import did_you_mean

from .dtypes import DTYPES, np_dtype
from .weights import Init, WeightUse

__all__ = ["DTYPES", "LOWERINGS", "Emitter", "Init", "Lowering", "LoweringTable", "Options", "make_node", "model_of"]

Lowering = Callable[["Emitter", Node], None]
M = TypeVar("M", bound=Op)

class LoweringTable:
    """Op name to lowering function, registered explicitly; unknown or duplicate names fail at import."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._table: dict[str, Lowering] = {}

    def register(self, *names: str) -> Callable[[Lowering], Lowering]:
        """Decorator: register a lowering for one or more op names of `builder.OPS`."""
        for name in names:
            if name not in OPS:
                hint = "".join(f" ({h})" for h in did_you_mean(name, OPS))
                raise ValueError(f"{self.backend}: cannot register a lowering for unknown op '{name}'{hint}")
            if name in self._table:
                raise ValueError(f"{self.backend}: op '{name}' has two lowerings "
                                 f"({self._table[name].__name__} and another)")

        def decorate(fn: Lowering) -> Lowering:
            for name in names:
                self._table[name] = fn
            return fn

        return decorate

    def __getitem__(self, name: str) -> Lowering:
        try:
            return self._table[name]
        except KeyError:
            hint = "".join(f" ({h})" for h in did_you_mean(name, self._table))
            raise KeyError(f"{self.backend} backend has no lowering for op '{name}'{hint}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._table))

    def __len__(self) -> int:
        return len(self._table)


LOWERINGS = LoweringTable("onnx")
"""The ONNX backend's table; the ``ops_*`` modules register into it (see `backends.onnx.lowering`)."""


def model_of(node: Node, cls: type[M]) -> M:
    """The node's validated arguments, typed as the op's model class."""
    if not isinstance(node.model, cls):  # pragma: no cover - a lowering registered under the wrong op
        raise TypeError(f"node '{node.id}': expected a {cls.__name__} op, got {type(node.model).__name__}")
    return node.model


@dataclass(frozen=True)
class Options:
    """Choices of lowering that do not change what the model computes.

    Attributes:
        opset: the ai.onnx opset the model is stamped with.
        native_gelu: emit the opset-20 ``Gelu`` op instead of its Erf/Tanh formula.
        native_attention: emit the opset-23 ``Attention`` op instead of MatMul/Softmax.
    """

    opset: int
    native_gelu: bool = False
    native_attention: bool = False


@dataclass
class Emitter:
    """Collects ONNX nodes, constants and weight uses while lowerings run, one graph node at a time.

    `memo` lets lowerings share a value that depends only on its key across nodes (the causal
    mask of every layer of a decoder, built once from the sequence length).
    """

    options: Options
    values: dict[TensorRef, str]
    owners: dict[str, Node]
    aliases: dict[str, str] = field(default_factory=dict)
    nodes: list[NodeProto] = field(default_factory=list)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, WeightUse] = field(default_factory=dict)
    memo: dict[Hashable, str] = field(default_factory=dict)
    _const_names: dict[Hashable, str] = field(default_factory=dict)
    _taken: set[str] = field(default_factory=set)
    _node_names: set[str] = field(default_factory=set)
    current: Node | None = None

    @property
    def opset(self) -> int:
        return self.options.opset

    # -- names ---------------------------------------------------------------------------

    def _node(self) -> Node:
        assert self.current is not None, "lowerings run inside Emitter.lower"
        return self.current

    def fresh(self, hint: str, _names: set[str] | None = None) -> str:
        """A new internal value name ``<node id>/<hint>`` (numbered when taken)."""
        taken = self._taken if _names is None else _names
        name = base = f"{self.current.id}/{hint}"  # type: ignore[union-attr]
        i = 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    def input(self, port: str) -> str:
        """The value name of the tensor bound to `port` of the current node."""
        return self.values[self._node().bindings[port]]

    def has(self, port: str) -> bool:
        return port in self._node().bindings

    def output(self, port: str = "y") -> str:
        """The value name the current node's output `port` must be written to."""
        return self.values[TensorRef(self._node().id, port)]

    def model(self, cls: type[M]) -> M:
        """The current node's validated arguments, typed as the op's model class."""
        return model_of(self._node(), cls)

    # -- nodes ---------------------------------------------------------------------------

    def op(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str] | int = 1, **attrs: Any) -> list[str]:
        """Emit one ONNX node; `outputs` are names, or a count of fresh internal names.

        An empty string in `inputs` marks an omitted optional input, as ONNX does.
        """
        outs = [self.fresh(f"{op_type}_out{i}" if outputs != 1 else op_type) for i in range(outputs)] \
            if isinstance(outputs, int) else list(outputs)
        self.nodes.append(make_node(op_type, self.fresh(op_type, self._node_names), inputs, outs, attrs))
        return outs

    def op1(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        """Emit a one-output ONNX node and return its output name."""
        return self.op(op_type, inputs, [output] if output is not None else 1, **attrs)[0]

    # -- constants and weights -----------------------------------------------------------

    def const(self, value: np.ndarray | np.generic | Sequence[int] | float, hint: str, dtype: str | None = None) -> str:
        """A constant initializer (shape vectors, axes, masks), shared by value across the graph."""
        if isinstance(value, float) and dtype is not None:  # the common scalar: skip numpy for the lookup
            key: Hashable = (dtype, value)
            name = self._const_names.get(key)
            if name is not None:
                return name
        arr = np.asarray(value, dtype=np_dtype(dtype) if dtype else None)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        name = self._const_names.get(key)
        if name is None:
            name = self.fresh(hint)
            self._const_names[key] = name
            self.consts[name] = arr
        if isinstance(value, float) and dtype is not None:
            self._const_names[(dtype, value)] = name
        return name

    def ints(self, values: Sequence[int], hint: str = "shape") -> str:
        """An int64 vector constant."""
        key = ("ints", *values)
        name = self._const_names.get(key)
        if name is None:
            name = self._const_names[key] = self.const(np.asarray(values, dtype=np.int64), hint)
        return name

    def weight(self, name: str, init: Init) -> str:
        """The initializer holding the current node's weight `name` (the owner's, for a tied weight).

        `init` says how PyTorch initialises it; only the owner's word counts for a tied weight.
        A signature that leaves out a tied weight's owner holds it on a stand-in node
        (``graph["aliases"]``); the initializer still takes the owner's name, the state_dict key.
        """
        node = self._node()
        owner_id, owner_weight = node.ties.get(name, (node.id, name))
        owner = self.owners[owner_id]
        holder = f"{owner_id}.{owner_weight}"
        key = self.aliases.get(holder, holder)
        use = self.weights.get(key)
        if use is None or (use.init is None and owner_id == node.id):
            self.weights[key] = WeightUse(key, owner_id, owner_weight, tuple(owner.weights[owner_weight]),
                                          weight_dtype(owner), init if owner_id == node.id else None,
                                          holder if holder != key else None)
        return key

    def buffer(self, name: str, shape: tuple[int, ...], init: Init) -> str:
        """A persistent buffer of the current node (batch norm's running statistics)."""
        node = self._node()
        key = f"{node.id}.{name}"
        if key not in self.weights:
            self.weights[key] = WeightUse(key, node.id, name, shape, weight_dtype(node), init)
        return key

    def lower(self, node: Node, fn: Lowering) -> None:
        """Run one lowering with `node` as the current node; errors gain the node's id."""
        self.current = node
        try:
            fn(self, node)
        except Exception as exc:
            exc.add_note(f"while lowering node '{node.id}' (op {node.op}) to ONNX")
            raise
        finally:
            self.current = None


def weight_dtype(node: Node) -> str:
    """Weights take the dtype of the node's first floating-point input (float32 for embeddings)."""
    for t in node.inputs.values():
        if t.dtype.startswith(("float", "bfloat")):
            return t.dtype
    return "float32"


_ATTRS: dict[Hashable, AttributeProto] = {}


def _cached_attr(name: str, value: Any) -> AttributeProto:
    """The attribute proto for (name, value), built once: a graph repeats the same few many times."""
    key = (name, type(value), tuple(value) if isinstance(value, list) else value)
    out = _ATTRS.get(key)
    if out is None:
        out = _ATTRS[key] = _attr(name, value)
    return out


def make_node(op_type: str, name: str, inputs: Sequence[str], outputs: Sequence[str],
              attrs: dict[str, Any] | None = None) -> NodeProto:
    """A NodeProto, built directly (onnx.helper.make_node is several times slower)."""
    node = NodeProto(op_type=op_type, name=name, input=inputs, output=outputs)
    if attrs:
        node.attribute.extend([_cached_attr(k, v) for k, v in sorted(attrs.items()) if v is not None])
    return node


def _attr(name: str, value: Any) -> AttributeProto:
    """An attribute proto, built directly (onnx.helper.make_attribute is several times slower)."""
    if isinstance(value, bool | int | np.integer):
        return AttributeProto(name=name, type=AttributeProto.INT, i=int(value))
    if isinstance(value, float):
        return AttributeProto(name=name, type=AttributeProto.FLOAT, f=value)
    if isinstance(value, str):
        return AttributeProto(name=name, type=AttributeProto.STRING, s=value.encode())
    if isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
        return AttributeProto(name=name, type=AttributeProto.INTS, ints=list(value))
    if isinstance(value, list | tuple) and all(isinstance(v, float) for v in value):
        return AttributeProto(name=name, type=AttributeProto.FLOATS, floats=list(value))
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return AttributeProto(name=name, type=AttributeProto.STRINGS, strings=[v.encode() for v in value])
    raise TypeError(f"attribute {name}: unsupported value {value!r}")
