"""`to_onnx`: the checked graph emitted directly as an ONNX model, without tracing (files: `writer`).

Names: graph inputs and outputs carry the spec's names; an op node's output ``y`` is the
value named by its id (``c1``), another port ``<id>.<port>`` (``enc.h``); initializers are
the PyTorch state_dict keys (``c1.weight``), so a weight in the file traces back to a line
of the spec; everything a lowering adds internally is named ``<id>/<hint>``.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import networkx as nx
import numpy as np
import onnx
import sympy
from onnx import NodeProto, helper

from nnspec.builder import INPUT, Node, Spec, TensorRef, TensorType, compile_graph, graph_inputs, graph_outputs, load_spec, nodes
from nnspec.builder.tensor import fmt_dim

from .dtypes import DTYPES
from .lowering import LOWERINGS, Emitter, Options
from .opsets import MIN_OPSET, OpsetError, check_forms, check_model_ops, check_opset, default_opset, lowest_opset
from .table import FallbackWarning, OnnxNode, encode_attrs, make_node
from .weights import StateDict, WeightUse, resolve_weights

__all__ = ["GraphSource", "Lowered", "assemble", "initializers", "light_model", "lower_graph", "minimum_opset", "op_types",
           "prepare", "to_onnx"]

GraphSource: TypeAlias = Spec | nx.MultiDiGraph | str | Path | Mapping[str, Any]
PRODUCER = "nnspec"


@dataclass
class Lowered:
    """The graph's ONNX structure before weights are attached.

    Attributes:
        graph: the checked nnspec graph.
        options: opset and lowering choices.
        values: each nnspec tensor to its ONNX value name.
        nodes: the ONNX nodes in topological order, as `OnnxNode` records (`light_model` makes the protos).
        consts: constant initializers the lowerings added (shapes, axes, masks).
        weights: the weights and buffers read, by initializer name, in first-use order.
        outputs: ONNX output name to the spec's output name (they differ only where an input
            has the same name).
        fallbacks: (node id, reason) for each node that kept the standard lowering although an
            option asked for another (`Options.fused_attention`).
    """

    graph: nx.MultiDiGraph
    options: Options
    values: dict[TensorRef, str]
    nodes: list[OnnxNode]
    consts: dict[str, np.ndarray]
    weights: dict[str, WeightUse]
    outputs: dict[str, str]
    fallbacks: list[tuple[str, str]] = field(default_factory=list)


def _graph(source: GraphSource, signature: str | None) -> nx.MultiDiGraph:
    if isinstance(source, nx.MultiDiGraph):
        have = source.graph.get("signature")
        if signature is not None and signature != have:
            raise ValueError(f"the graph was compiled for signature {have!r}, not {signature!r}; "
                             "pass the spec to choose a signature")
        return source
    spec = source if isinstance(source, Spec) else load_spec(source)  # type: ignore[arg-type]
    return compile_graph(spec, signature)


def _value_names(g: nx.MultiDiGraph, all_nodes: list[Node]) -> tuple[dict[TensorRef, str], list[tuple[str, str]], dict[str, str]]:
    """ONNX names for every tensor, (output, value) pairs that need an Identity node, and renamed outputs.

    An output takes over its tensor's name unless the tensor is a graph input, is already
    another output, or the name belongs to another tensor. ONNX values are named once, so an
    output named like an input (a decoder step's state ``h`` in, ``h`` out) becomes ``h_out``.
    """
    values: dict[TensorRef, str] = {}
    for node in all_nodes:
        for port in node.outputs:
            values[TensorRef(node.id, port)] = node.id if port == "y" else f"{node.id}.{port}"
    inputs = set(g.graph["inputs"])
    taken = set(values.values()) | set(g.graph["outputs"])
    claimed: set[TensorRef] = set()
    aliases: list[tuple[str, str]] = []
    renamed: dict[str, str] = {}
    for name, ref in g.graph["outputs"].items():
        onnx_name = name
        if name in inputs and ref != TensorRef(name, "y"):
            onnx_name, i = f"{name}_out", 1
            while onnx_name in taken:
                onnx_name, i = f"{name}_out{i}", i + 1
            taken.add(onnx_name)
            renamed[onnx_name] = name
        if values[ref] == onnx_name:
            claimed.add(ref)
        elif ref.node not in inputs and ref not in claimed and (onnx_name in renamed or onnx_name not in _others(
                values, ref)):
            values[ref] = onnx_name
            claimed.add(ref)
        else:
            aliases.append((onnx_name, values[ref]))
    return values, aliases, renamed


def _others(values: dict[TensorRef, str], ref: TensorRef) -> set[str]:
    return {v for r, v in values.items() if r != ref}


def lower_graph(g: nx.MultiDiGraph, options: Options) -> Lowered:
    """Run every node's lowering: the model's structure, without weight data."""
    all_nodes = nodes(g)
    values, aliases, renamed = _value_names(g, all_nodes)
    owners = {n.id: n for n in all_nodes if n.op != INPUT}
    e = Emitter(options, values, owners, dict(g.graph.get("aliases", {})), inputs=graph_inputs(g))
    for node in owners.values():
        e.lower(node, LOWERINGS[node.op])
    for name, value in aliases:
        e.nodes.append(make_node("Identity", f"{name}/Identity", [value], [name]))
    missing = [w.name for w in e.weights.values() if w.init is None]
    if missing:  # pragma: no cover - a lowering that never requests its own weight
        raise AssertionError(f"tied weights whose owner never lowered them: {missing}")
    inverse = {spec: onnx_name for onnx_name, spec in renamed.items()}
    outputs = {inverse.get(name, name): name for name in g.graph["outputs"]}
    kept, used = _prune(e.nodes, set(outputs))
    inputs = g.graph["inputs"]
    weights = {k: v for k, v in e.weights.items() if k in used}
    if options.fold_transposes:
        kept = _fold_weight_transposes(kept, weights)
    consts = {k: v for k, v in e.consts.items() if k in used}
    if options.opset < 15:
        kept = _shape_slices(kept, consts)
    if options.opset < 13:
        kept = _axes_as_attributes(kept, consts)
        reads = {i for n in kept for i in n.inputs}
        consts = {k: v for k, v in consts.items() if k in reads}
    return Lowered(g, options, {r: v for r, v in values.items() if v in used or r.node in inputs}, kept, consts,
                   weights, outputs, e.fallbacks)


_AXES_INPUTS = {"Unsqueeze": "axes", "Squeeze": "axes", "ReduceSum": "axes", "Split": "split"}
"""Op types whose second input was an attribute before opset 13."""


def _shape_slices(records: list[OnnxNode], consts: dict[str, np.ndarray]) -> list[OnnxNode]:
    """Below opset 15 Shape has no start/end: take the whole shape, then Slice it (`consts` gains the bounds)."""
    out = []
    for node in records:
        if node.op_type != "Shape" or not node.attrs:
            out.append(node)
            continue
        attrs = {a.name: a.i for a in NodeProto.FromString(node.attrs).attribute}
        bounds = [attrs.get("start", 0), attrs.get("end", 2**62)]
        names = [f"{node.name}/start", f"{node.name}/end", f"{node.name}/axis"]
        for name, value in zip(names, [*bounds, 0], strict=True):
            consts[name] = np.asarray([value], dtype=np.int64)
        whole = f"{node.name}/whole"
        out.append(node._replace(outputs=(whole,), attrs=b""))
        out.append(OnnxNode("Slice", f"{node.name}/Slice", (whole, *names), node.outputs))
    return out


def _axes_as_attributes(records: list[OnnxNode], consts: dict[str, np.ndarray]) -> list[OnnxNode]:
    """Below opset 13: a constant axes (or split) input becomes the attribute those opsets take, and
    Resize gets the empty roi and scales it then needs (`consts` gains them)."""
    out = []
    for node in records:
        if node.op_type == "Resize":  # roi and scales are required inputs before 13: empty, not left out
            empty = "/empty_float"
            consts.setdefault(empty, np.zeros(0, dtype=np.float32))
            node = node._replace(inputs=(node.inputs[0], *(i or empty for i in node.inputs[1:3]), *node.inputs[3:]))
        attr = _AXES_INPUTS.get(node.op_type)
        if attr is None or len(node.inputs) < 2 or not node.inputs[1]:
            out.append(node)
            continue
        value = consts.get(node.inputs[1])
        if value is None:
            node_id = node.name.partition("/")[0]
            raise OpsetError(f"node '{node_id}' emits {node.op_type} with computed {attr}, which needs opset >= 13")
        extra = encode_attrs({attr: [int(v) for v in np.asarray(value).reshape(-1)]})
        out.append(node._replace(inputs=(node.inputs[0], *node.inputs[2:]), attrs=node.attrs + extra))
    return out


_SWAP = encode_attrs({"perm": [1, 0]})


def _fold_weight_transposes(records: list[OnnxNode], weights: dict[str, WeightUse]) -> list[OnnxNode]:
    """Store each 2-D weight that only a ``Transpose(perm=[1, 0])`` reads already transposed.

    A linear layer's (out, in) weight then reaches its MatMul as an initializer, where
    onnxruntime's quantizer and optimizer recognise a weight (behind a Transpose node they
    do not). A weight also read as it is (an embedding tied to an LM head) keeps its layout.
    `weights` is updated in place (`WeightUse.perm`).
    """
    reads: dict[str, int] = {}
    for node in records:
        for name in node.inputs:
            reads[name] = reads.get(name, 0) + 1
    renamed: dict[str, str] = {}
    for node in records:
        w = node.inputs[0] if node.op_type == "Transpose" and node.attrs == _SWAP else None
        if w is not None and w in weights and reads[w] == 1 and len(weights[w].shape) == 2 and weights[w].perm is None:
            renamed[node.outputs[0]] = w
            weights[w] = weights[w]._replace(perm=(1, 0))
    if not renamed:
        return records
    out = []
    for node in records:
        if node.outputs[0] in renamed and node.op_type == "Transpose":
            continue
        if any(i in renamed for i in node.inputs):
            node = node._replace(inputs=tuple(renamed.get(i, i) for i in node.inputs))
        out.append(node)
    return out


OPTIONAL_OUTPUTS = frozenset({"RNN", "LSTM", "GRU"})
"""Op types whose outputs are all optional: an unused one is left out ("") so it is not computed."""


def _prune(nodes: list[OnnxNode], outputs: set[str]) -> tuple[list[OnnxNode], set[str]]:
    """Drop nodes nothing reads (a recurrent layer's unused sequence output, a dangling spec node).

    Returns:
        The kept nodes, in order, and every value name they read or the graph returns.
    """
    used = set(outputs)
    kept = []
    reads, isdisjoint = used.update, used.isdisjoint
    for node in reversed(nodes):  # consumers come after producers: every reader is seen first
        op_type, _, node_in, node_out, *_ = node
        if not isdisjoint(node_out):
            reads(node_in)
            if op_type in OPTIONAL_OUTPUTS:
                outs = [o if o in used else "" for o in node.outputs]
                while outs[-1] == "":
                    del outs[-1]
                node = node._replace(outputs=tuple(outs))
            kept.append(node)
    kept.reverse()
    return kept, used


def _dim(d: sympy.Expr) -> int | str:
    if d.is_Integer:
        return int(d)
    return d.name if isinstance(d, sympy.Symbol) else fmt_dim(d)


def _value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    """What helper.make_tensor_value_info gives, built directly (it is several times slower)."""
    info = onnx.ValueInfoProto(name=name)
    tensor = info.type.tensor_type
    tensor.elem_type = DTYPES[t.dtype]
    tensor.shape.SetInParent()  # a scalar has an empty shape, not none
    for d in t.shape:
        size = _dim(d)
        if isinstance(size, int):
            tensor.shape.dim.add(dim_value=size)
        else:
            tensor.shape.dim.add(dim_param=size)
    return info


@functools.cache  # importlib.metadata scans the installed distributions: ~0.4 ms a call
def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("nnspec")
    except metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


def _forms(lowered: Lowered) -> list[tuple[str, str, int, tuple[str, ...]]]:
    """(op type, node id, input count, attribute names) of each distinct way the model uses an ai.onnx op."""
    seen: dict[tuple[str, int, bytes], tuple[str, str, int, tuple[str, ...]]] = {}
    for node in lowered.nodes:
        if node.domain:
            continue
        key = (node.op_type, len(node.inputs), node.attrs)
        if key not in seen:
            names = tuple(a.name for a in NodeProto.FromString(node.attrs).attribute) if node.attrs else ()
            seen[key] = (node.op_type, node.name.partition("/")[0], len(node.inputs), names)
    return list(seen.values())


def op_types(lowered: Lowered) -> dict[str, str]:
    """Each ai.onnx op type the lowered model uses, with the id of the first node that emits it
    (onnxruntime's contrib ops, outside the ai.onnx opset, are not counted)."""
    out: dict[str, str] = {}
    for node in lowered.nodes:
        if not node.domain:
            out.setdefault(node.op_type, node.name.partition("/")[0])
    return out


def _opset_imports(lowered: Lowered) -> list[onnx.OperatorSetIdProto]:
    """The ai.onnx opset, and version 1 of each other domain the nodes use (onnxruntime's contrib ops)."""
    domains = sorted({node.domain for node in lowered.nodes if node.domain})
    return [helper.make_opsetid("", lowered.options.opset), *(helper.make_opsetid(d, 1) for d in domains)]


def light_model(lowered: Lowered) -> onnx.ModelProto:
    """The model without its initializers: structure, inputs, outputs and metadata."""
    g = lowered.graph
    in_types = {name: g.nodes[name]["node"].outputs["y"] for name in g.graph["inputs"]}
    out_types = graph_outputs(g)
    sig = g.graph.get("signature")
    opsets = _opset_imports(lowered)
    model = onnx.ModelProto(
        ir_version=helper.find_min_ir_version_for(opsets, ignore_unknown=True),
        producer_name=PRODUCER,
        producer_version=_version(),
        doc_string=g.graph.get("doc") or "",
        opset_import=opsets,
    )
    graph = model.graph  # filled in place: ModelProto(graph=...) would copy every node
    graph.name = g.graph["name"] if sig is None else f"{g.graph['name']}.{sig}"
    graph.doc_string = g.graph.get("doc") or ""
    graph.input.extend([_value_info(name, t) for name, t in in_types.items()])
    graph.output.extend([_value_info(onnx_name, out_types[name]) for onnx_name, name in lowered.outputs.items()])
    _add_nodes(graph, lowered.nodes)
    meta = {"nnspec.params": json.dumps(g.graph.get("params") or {}, sort_keys=True, default=str)}
    transposed = sorted(name for name, use in lowered.weights.items() if use.perm is not None)
    if transposed:  # these initializers hold the state_dict tensor transposed: (in, out) for MatMul
        meta["nnspec.transposed_weights"] = json.dumps(transposed)
    if sig is not None:
        meta["nnspec.signature"] = sig
    windows = [n.model.args()["max_len"] for n in nodes(g)
               if n.model is not None and n.op in ("position_embedding", "sinusoidal_position")]
    if windows:
        meta["nnspec.max_len"] = str(min(windows))  # the longest sequence the model takes
    renamed = {k: v for k, v in lowered.outputs.items() if k != v}
    if renamed:
        meta["nnspec.renamed_outputs"] = json.dumps(renamed, sort_keys=True)
    helper.set_model_props(model, meta)
    return model


def _add_nodes(graph: onnx.GraphProto, records: list[OnnxNode]) -> None:
    """Build the nodes in place (no copy), each field set once; attributes come pre-encoded."""
    add = graph.node.add
    for op_type, name, inputs, outputs, attrs, domain in records:
        node = add()
        node.input.extend(inputs)
        node.output.extend(outputs)
        node.name = name
        node.op_type = op_type
        if domain:
            node.domain = domain
        if attrs:
            node.MergeFromString(attrs)


def initializers(lowered: Lowered, arrays: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """Every initializer in file order: the weights in first-use order, then the constants."""
    return [(name, arrays[name]) for name in lowered.weights] + list(lowered.consts.items())


def assemble(lowered: Lowered, arrays: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The whole model: `light_model` plus the weights (`arrays`, by initializer name) and constants."""
    model = light_model(lowered)
    for name, arr in initializers(lowered, arrays):
        arr = little_endian(arr)
        t = model.graph.initializer.add(name=name, dims=arr.shape, data_type=tensor_type(arr))
        t.raw_data = arr.tobytes()
    return model


def little_endian(arr: np.ndarray) -> np.ndarray:
    """`arr` as a C-contiguous little-endian array, as ONNX raw_data stores it."""
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # (np.ascontiguousarray makes scalars 1-D)


def tensor_type(arr: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(arr.dtype)


def to_onnx(spec_or_graph: GraphSource, state_dict: StateDict | None = None, opset: int | None = None,
            signature: str | None = None, *, seed: int = 0, native_gelu: bool = False,
            native_attention: bool = False, fused_attention: bool = False, quantize: Literal["int8"] | None = None,
            dtype: Literal["float32", "float16"] = "float32") -> onnx.ModelProto:
    """Emit an ONNX model for a spec (or a checked graph) directly, without tracing.

    Args:
        spec_or_graph: a `Spec`, a graph from `compile_graph`, or what `load_spec` reads (a
            path, YAML/JSON text, a dict).
        state_dict: weights keyed like the PyTorch module's state_dict: a mapping of numpy
            arrays or torch tensors, or a safetensors file. Without it, weights are
            initialised as PyTorch initialises them, from `seed`.
        opset: the ai.onnx opset; default the lowest that has every op the model emits, but
            not below `opsets.FLOOR` (17).
        signature: compile this signature of the spec instead of its main graph.
        seed: seeds the initial weights when no state_dict is given.
        native_gelu: lower gelu to the opset-20 Gelu op instead of its formula.
        native_attention: lower attention to the opset-23 Attention op instead of MatMul/Softmax.
        fused_attention: lower multi_head_attention to onnxruntime's contrib op
            ``com.microsoft.MultiHeadAttention`` (one fused kernel; the ``com.microsoft`` opset is
            imported). A node the op cannot express (grouped-query attention, a key/value cache)
            keeps the standard lowering, with a `FallbackWarning` that says why.
        quantize: ``"int8"``: dynamic int8 quantisation of the MatMul weights (`deploy.quantize_int8`).
        dtype: ``"float16"``: half-precision weights and compute (`deploy.to_float16`).

    Returns:
        The model; the same inputs give the same bytes.

    Raises:
        SpecError: the spec does not compile.
        OpsetError: the opset cannot be emitted or onnxruntime cannot run it.
        WeightError: the state_dict misses a weight or has one of the wrong shape.
    """
    model = assemble(*prepare(spec_or_graph, state_dict, opset, signature, seed=seed, native_gelu=native_gelu,
                              native_attention=native_attention, fused_attention=fused_attention))
    if quantize is None and dtype == "float32":
        return model
    from .deploy import deploy

    return deploy(model, quantize, dtype)


def minimum_opset(spec_or_graph: GraphSource, signature: str | None = None, *, native_gelu: bool = False,
                  native_attention: bool = False, fused_attention: bool = False) -> int:
    """The lowest opset at which nnspec can emit the model and onnxruntime run it.

    Raises:
        OpsetError: no opset works (the error of the newest one tried says why).
    """
    g = _graph(spec_or_graph, signature)
    flags = {"native_gelu": native_gelu, "native_attention": native_attention}
    error: OpsetError | None = None
    for opset in range(MIN_OPSET, onnx.defs.onnx_opset_version() + 1):
        try:
            check_opset(opset, **flags)
            lowered = lower_graph(g, Options(opset, **flags, fused_attention=fused_attention))
            check_model_ops(opset, op_types(lowered))
            check_forms(opset, _forms(lowered))
        except OpsetError as exc:
            error = exc
            continue
        return opset
    assert error is not None
    raise error


def prepare(spec_or_graph: GraphSource, state_dict: StateDict | None = None, opset: int | None = None,
            signature: str | None = None, *, seed: int = 0, native_gelu: bool = False,
            native_attention: bool = False, fused_attention: bool = False) -> tuple[Lowered, Mapping[str, np.ndarray]]:
    """`to_onnx` up to the point of building the proto: the lowered graph and its weight arrays (initial
    weights are made as they are read: see `InitialWeights`)."""
    g = _graph(spec_or_graph, signature)
    flags = {"native_gelu": native_gelu, "native_attention": native_attention}
    if opset is None:  # the floor, or the first opset that has every op the model emits
        opset = default_opset(**flags)
        lowered = lower_graph(g, Options(opset, **flags, fused_attention=fused_attention))
        need = lowest_opset(op_types(lowered))
        if need > opset:
            opset = need
            lowered = lower_graph(g, Options(opset, **flags, fused_attention=fused_attention))
    else:
        check_opset(opset, **flags)
        lowered = lower_graph(g, Options(opset, **flags, fused_attention=fused_attention))
    check_model_ops(opset, op_types(lowered))
    check_forms(opset, _forms(lowered))
    _warn_fallbacks(lowered.fallbacks)
    owners: dict[str, Node] = {n.id: n for n in nodes(g) if n.op != INPUT}
    return lowered, resolve_weights(lowered.weights, state_dict, owners, seed)


def _warn_fallbacks(fallbacks: list[tuple[str, str]]) -> None:
    """One `FallbackWarning` per reason, naming the nodes it kept on the standard lowering."""
    by_reason: dict[str, list[str]] = {}
    for node_id, reason in fallbacks:
        by_reason.setdefault(reason, []).append(node_id)
    for reason, ids in by_reason.items():
        shown = ", ".join(f"'{i}'" for i in ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        noun = "node" if len(ids) == 1 else "nodes"
        warnings.warn(f"{noun} {shown}: {reason}; kept the standard lowering", FallbackWarning, stacklevel=3)


