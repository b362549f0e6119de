"""The lowering table (op name -> function) and the `Emitter` every lowering writes ONNX nodes through.

A lowering is a small function ``(e: Emitter, node: Node) -> None``: it reads the node's
arguments and input types, asks the emitter for the value names of its inputs, outputs and
weights, and emits ONNX nodes. Names derive from node ids: node ``enc.attn`` emits ONNX
nodes ``enc.attn/MatMul``, ``enc.attn/Softmax``, ..., reads initializers named like the
PyTorch ``state_dict`` keys (``enc.attn.in_proj_weight``) and writes internal values
``enc.attn/<hint>``; node ids never contain ``/``, so internal names cannot collide with them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np
from onnx import AttributeProto, NodeProto

from nnspec.backends.table import LoweringError as BackendLoweringError
from nnspec.backends.table import LoweringTable
from nnspec.builder import Node, Op, TensorRef, TensorType

from .dtypes import DTYPES, np_dtype
from .weights import Init, WeightUse

__all__ = ["DTYPES", "LOWERINGS", "MS_DOMAIN", "Emitter", "FallbackWarning", "Init", "Lowering", "LoweringError",
           "LoweringTable", "OnnxNode", "Options", "make_node", "model_of"]

Lowering = Callable[["Emitter", Node], None]
M = TypeVar("M", bound=Op)

MS_DOMAIN = "com.microsoft"
"""The operator set of onnxruntime's contrib ops (its fused kernels, ``MultiHeadAttention``)."""

LOWERINGS: LoweringTable[Lowering] = LoweringTable("onnx")
"""The ONNX backend's table; the ``ops_*`` modules register into it (see `nnspec.backends.onnx.lowering`)."""


def model_of(node: Node, cls: type[M]) -> M:
    """The node's validated arguments, typed as the op's model class."""
    if not isinstance(node.model, cls):  # pragma: no cover - a lowering registered under the wrong op
        raise TypeError(f"node '{node.id}': expected a {cls.__name__} op, got {type(node.model).__name__}")
    return node.model


class LoweringError(BackendLoweringError):
    """A checked spec that ONNX cannot express as written (the message names the node and the fix)."""


class FallbackWarning(UserWarning):
    """Nodes that an export option could not apply to: they keep the standard lowering (the message says why)."""


@dataclass(frozen=True)
class Options:
    """Choices of lowering that do not change what the model computes.

    Attributes:
        opset: the ai.onnx opset the model is stamped with.
        native_gelu: emit the opset-20 ``Gelu`` op instead of its Erf/Tanh formula.
        native_attention: emit the opset-23 ``Attention`` op instead of MatMul/Softmax.
        fused_attention: emit onnxruntime's contrib op ``com.microsoft.MultiHeadAttention`` for
            multi_head_attention (its fused CPU kernel), where the op can express the node.
        fold_transposes: store a weight that only a transpose reads (a linear layer's) already
            transposed, so that onnxruntime's tools see MatMul weights; False keeps every
            initializer in the state_dict's layout.
    """

    opset: int
    native_gelu: bool = False
    native_attention: bool = False
    fused_attention: bool = False
    fold_transposes: bool = True


@dataclass(slots=True)  # slots: the hot path reads several fields per emitted node
class Emitter:
    """Collects ONNX nodes, constants and weight uses while lowerings run, one graph node at a time.

    `memo` lets lowerings share a value that depends only on its key across nodes (the causal
    mask of every layer of a decoder, built once from the sequence length). `fallbacks` records
    (node id, reason) for each node that an option asked for (`Options.fused_attention`) could
    not take, and that kept the standard lowering.
    """

    options: Options
    values: dict[TensorRef, str]
    owners: dict[str, Node]
    aliases: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, TensorType] = field(default_factory=dict)  # the graph inputs: sizes read at run time
    nodes: list[OnnxNode] = field(default_factory=list)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, WeightUse] = field(default_factory=dict)
    memo: dict[Hashable, str] = field(default_factory=dict)
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    _const_names: dict[Hashable, str] = field(default_factory=dict)
    _taken: set[str] = field(default_factory=set)
    _node_names: set[str] = field(default_factory=set)
    # per base name: the next number to try, for value names (_taken) and node names (_node_names)
    _next_value: dict[str, int] = field(default_factory=dict)
    _next_node: dict[str, int] = field(default_factory=dict)
    current: Node | None = None
    _prefix: str = ""  # ``<current node id>/``, which every internal name and node name starts with

    @property
    def opset(self) -> int:
        return self.options.opset

    # -- names ---------------------------------------------------------------------------

    def _node(self) -> Node:
        assert self.current is not None, "lowerings run inside Emitter.lower"
        return self.current

    def fresh(self, hint: str) -> str:
        """A new internal value name ``<node id>/<hint>`` (numbered when taken)."""
        name = self._prefix + hint
        taken = self._taken
        if name in taken:
            name = _numbered(name, taken, self._next_value)
        taken.add(name)
        return name

    def input(self, port: str) -> str:
        """The value name of the tensor bound to `port` of the current node."""
        return self.values[self.current.bindings[port]]  # type: ignore[union-attr]  # (not _node(): hot)

    def has(self, port: str) -> bool:
        return port in self._node().bindings

    def output(self, port: str = "y") -> str:
        """The value name the current node's output `port` must be written to."""
        # a TensorRef hashes and compares as its plain tuple, which is several times cheaper to make
        return self.values[(self.current.id, port)]  # type: ignore[index,union-attr]

    def model(self, cls: type[M]) -> M:
        """The current node's validated arguments, typed as the op's model class."""
        return model_of(self._node(), cls)

    # -- nodes ---------------------------------------------------------------------------

    def op(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str] | int = 1, **attrs: Any) -> list[str]:
        """Emit one ONNX node; `outputs` are names, or a count of fresh internal names.

        An empty string in `inputs` marks an omitted optional input, as ONNX does.
        """
        if not isinstance(outputs, int):
            outs = list(outputs)
        elif outputs == 1:
            outs = [self.fresh(op_type)]
        else:
            outs = [self.fresh(f"{op_type}_out{i}") for i in range(outputs)]
        self._emit(op_type, inputs, tuple(outs), attrs)
        return outs

    def contrib(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> list[str]:
        """Emit one of onnxruntime's contrib ops (`MS_DOMAIN`): a fused kernel outside ai.onnx."""
        self._emit(op_type, inputs, tuple(outputs), attrs, MS_DOMAIN)
        return list(outputs)

    def op1(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        """Emit a one-output ONNX node and return its output name."""
        # _emit inlined: this is the hot path of every lowering, and most nodes have one output
        base = self._prefix + op_type  # the node's name, and its output's
        if output is None:
            taken = self._taken
            output = _numbered(base, taken, self._next_value) if base in taken else base
            taken.add(output)
        names = self._node_names
        name = _numbered(base, names, self._next_node) if base in names else base
        names.add(name)
        self.nodes.append(_new_node(OnnxNode, (op_type, name, tuple(inputs), (output,),
                                               encode_attrs(attrs) if attrs else b"", "")))
        return output

    def _emit(self, op_type: str, inputs: Sequence[str], outputs: tuple[str, ...], attrs: dict[str, Any],
              domain: str = "") -> None:
        # one record of tuples and strings, no proto (see OnnxNode); op1 has its own copy of this
        names = self._node_names
        name = self._prefix + op_type
        if name in names:
            name = _numbered(name, names, self._next_node)
        names.add(name)
        self.nodes.append(_new_node(OnnxNode, (op_type, name, tuple(inputs), outputs,
                                               encode_attrs(attrs) if attrs else b"", domain)))

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
        node: Node = self.current  # type: ignore[assignment]  # (not _node(): hot)
        tie = node.ties.get(name)
        owner_id, owner_weight = (node.id, name) if tie is None else tie
        holder = f"{owner_id}.{owner_weight}"
        key = self.aliases.get(holder, holder)
        use = self.weights.get(key)
        if use is None or (use.init is None and owner_id == node.id):
            owner = self.owners[owner_id]
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
        self._prefix = f"{node.id}/"
        try:
            fn(self, node)
        except Exception as exc:
            exc.add_note(f"while lowering node '{node.id}' (op {node.op}) to ONNX")
            raise
        finally:
            self.current = None
            self._prefix = ""




def _numbered(base: str, taken: set[str], nexts: dict[str, int]) -> str:
    """``<base>_<i>`` for the least i >= 1 not in `taken`. Names only ever join `taken`, so the
    search resumes where the last one for `base` stopped (`nexts`, kept per name set: a node
    emitting twenty MatMuls would otherwise try 1, 2, ... each time)."""
    i = nexts.get(base, 1)
    name = f"{base}_{i}"
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    nexts[base] = i + 1
    return name


def weight_dtype(node: Node) -> str:
    """Weights take the dtype of the node's first floating-point input (float32 for embeddings)."""
    for t in node.inputs.values():
        if t.dtype.startswith(("float", "bfloat")):
            return t.dtype
    return "float32"


class OnnxNode(NamedTuple):
    """One ONNX node as a lowering emits it: plain data, made a NodeProto once, when the model is
    built (`export.light_model`); a proto per emit, then a copy into the graph, costs several times more.
    Its inputs and outputs are tuples of strings, which the garbage collector stops tracking once
    it has seen them (lists it would scan at every collection).

    Attributes:
        op_type: the op type, in `domain`.
        name: the node name, ``<node id>/<op type>`` (numbered when taken).
        inputs: the input value names; "" marks an omitted optional input.
        outputs: the output value names.
        attrs: the attributes sorted by name, wire-encoded as NodeProto field 5 (`proto` appends
            them with one ``MergeFromString``).
        domain: the operator set: "" for ai.onnx, `MS_DOMAIN` for onnxruntime's contrib ops.
    """

    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: bytes = b""
    domain: str = ""

    def proto(self) -> NodeProto:
        """The NodeProto, standalone (`export.light_model` builds them in place, inside the graph)."""
        node = NodeProto(op_type=self.op_type, name=self.name, input=self.inputs, output=self.outputs)
        if self.domain:  # proto2: an explicit "" would be serialised
            node.domain = self.domain
        node.MergeFromString(self.attrs)
        return node


_new_node = tuple.__new__  # OnnxNode's own __new__ is a Python function: a frame per node

_ATTRS: dict[Hashable, bytes] = {}


def _encoded_attr(name: str, value: Any) -> bytes:
    """The attribute (name, value) wire-encoded as NodeProto field 5, built once: a graph repeats
    the same few many times. Ints and strings key by value, the rest by type and repr, so that 1
    and 1.0, or -0.0 and 0.0, differ."""
    key = (name, value) if type(value) is int or type(value) is str else (name, type(value), repr(value))
    out = _ATTRS.get(key)
    if out is None:
        out = _ATTRS[key] = NodeProto(attribute=[_attr(name, value)]).SerializeToString()
    return out


def encode_attrs(attrs: dict[str, Any]) -> bytes:
    """`attrs` sorted by name and wire-encoded as NodeProto fields; a value of None is left out."""
    if len(attrs) == 1:  # the common case
        ((name, value),) = attrs.items()
        return b"" if value is None else _encoded_attr(name, value)
    return b"".join([_encoded_attr(k, v) for k, v in sorted(attrs.items()) if v is not None])


def make_node(op_type: str, name: str, inputs: Sequence[str], outputs: Sequence[str],
              attrs: dict[str, Any] | None = None) -> OnnxNode:
    """An `OnnxNode`; attributes whose value is None are left out."""
    return OnnxNode(op_type, name, tuple(inputs), tuple(outputs), encode_attrs(attrs) if attrs else b"")


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
