"""`to_onnx`: the checked graph emitted directly as an ONNX model (no tracing), and `save_onnx`.

Names: graph inputs and outputs carry the spec's names; an op node's output ``y`` is the
value named by its id (``c1``), another port ``<id>.<port>`` (``enc.h``); initializers are
the PyTorch state_dict keys (``c1.weight``), so a weight in the file traces back to a line
of the spec; everything a lowering adds internally is named ``<id>/<hint>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import onnx
import sympy
from onnx import NodeProto, helper, numpy_helper

from builder import INPUT, Node, Spec, TensorRef, TensorType, compile_graph, graph_outputs, load_spec, nodes
from builder.tensor import fmt_dim

from .dtypes import DTYPES
from .lowering import LOWERINGS, Emitter, Options
from .opsets import check_opset, default_opset
from .weights import StateDict, WeightUse, resolve_weights

__all__ = ["GraphSource", "Lowered", "lower_graph", "save_onnx", "to_onnx"]

GraphSource = Spec | nx.MultiDiGraph | str | Path | Mapping[str, Any]
PRODUCER = "nnspec"
PROTOBUF_LIMIT = 2**31 - 2**20
"""A serialised protobuf cannot exceed 2 GiB; above this, `save_onnx` writes weights as external data."""


@dataclass
class Lowered:
    """The graph's ONNX structure before weights are attached.

    Attributes:
        graph: the checked nnspec graph.
        options: opset and lowering choices.
        values: each nnspec tensor to its ONNX value name.
        nodes: the ONNX nodes in topological order.
        consts: constant initializers the lowerings added (shapes, axes, masks).
        weights: the weights and buffers read, by initializer name, in first-use order.
        outputs: ONNX output name to the spec's output name (they differ only where an input
            has the same name).
    """

    graph: nx.MultiDiGraph
    options: Options
    values: dict[TensorRef, str]
    nodes: list[NodeProto]
    consts: dict[str, np.ndarray]
    weights: dict[str, WeightUse]
    outputs: dict[str, str]


def _graph(source: GraphSource, signature: str | None) -> nx.MultiDiGraph:
    if isinstance(source, nx.MultiDiGraph):
        have = source.graph.get("signature")
        if signature is not None and signature != have:
            raise ValueError(f"the graph was compiled for signature {have!r}, not {signature!r}; "
                             "pass the spec to choose a signature")
        return source
    spec = source if isinstance(source, Spec) else load_spec(source)  # type: ignore[arg-type]
    return compile_graph(spec, signature)


def _value_names(g: nx.MultiDiGraph) -> tuple[dict[TensorRef, str], list[tuple[str, str]], dict[str, str]]:
    """ONNX names for every tensor, (output, value) pairs that need an Identity node, and renamed outputs.

    An output takes over its tensor's name unless the tensor is a graph input, is already
    another output, or the name belongs to another tensor. ONNX values are named once, so an
    output named like an input (a decoder step's state ``h`` in, ``h`` out) becomes ``h_out``.
    """
    values: dict[TensorRef, str] = {}
    for node in nodes(g):
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
    values, aliases, renamed = _value_names(g)
    owners = {n.id: n for n in nodes(g) if n.op != INPUT}
    e = Emitter(options, values, owners, dict(g.graph.get("aliases", {})))
    for node in owners.values():
        e.lower(node, LOWERINGS[node.op])
    for name, value in aliases:
        e.nodes.append(NodeProto(op_type="Identity", name=f"{name}/Identity", input=[value], output=[name]))
    missing = [w.name for w in e.weights.values() if w.init is None]
    if missing:  # pragma: no cover - a lowering that never requests its own weight
        raise AssertionError(f"tied weights whose owner never lowered them: {missing}")
    inverse = {spec: onnx_name for onnx_name, spec in renamed.items()}
    outputs = {inverse.get(name, name): name for name in g.graph["outputs"]}
    return Lowered(g, options, values, e.nodes, e.consts, e.weights, outputs)


def _dim(d: sympy.Expr) -> int | str:
    if d.is_Integer:
        return int(d)
    return d.name if isinstance(d, sympy.Symbol) else fmt_dim(d)


def _value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, DTYPES[t.dtype], [_dim(d) for d in t.shape])


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


def assemble(lowered: Lowered, arrays: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The model: lowered structure, weights (`arrays`, by initializer name) and metadata."""
    g = lowered.graph
    initializers = [numpy_helper.from_array(arrays[name], name) for name in lowered.weights]
    initializers += [numpy_helper.from_array(arr, name) for name, arr in lowered.consts.items()]
    in_types = {name: g.nodes[name]["node"].outputs["y"] for name in g.graph["inputs"]}
    out_types = graph_outputs(g)
    graph = onnx.GraphProto(
        name=g.graph["name"] if g.graph.get("signature") is None else f"{g.graph['name']}.{g.graph['signature']}",
        doc_string=g.graph.get("doc") or "",
        node=lowered.nodes,
        input=[_value_info(name, t) for name, t in in_types.items()],
        output=[_value_info(onnx_name, out_types[name]) for onnx_name, name in lowered.outputs.items()],
        initializer=initializers,
    )
    opset = helper.make_opsetid("", lowered.options.opset)
    model = onnx.ModelProto(
        ir_version=helper.find_min_ir_version_for([opset]),
        producer_name=PRODUCER,
        producer_version=_version(),
        doc_string=g.graph.get("doc") or "",
        graph=graph,
        opset_import=[opset],
    )
    meta = {"nnspec.params": json.dumps(g.graph.get("params") or {}, sort_keys=True, default=str)}
    if g.graph.get("signature") is not None:
        meta["nnspec.signature"] = g.graph["signature"]
    renamed = {k: v for k, v in lowered.outputs.items() if k != v}
    if renamed:
        meta["nnspec.renamed_outputs"] = json.dumps(renamed, sort_keys=True)
    helper.set_model_props(model, meta)
    return model


def to_onnx(spec_or_graph: GraphSource, state_dict: StateDict | None = None, opset: int | None = None,
            signature: str | None = None, *, seed: int = 0, native_gelu: bool = False,
            native_attention: bool = False) -> onnx.ModelProto:
    """Emit an ONNX model for a spec (or a checked graph) directly, without tracing.

    Args:
        spec_or_graph: a `Spec`, a graph from `compile_graph`, or what `load_spec` reads (a
            path, YAML/JSON text, a dict).
        state_dict: weights keyed like the PyTorch module's state_dict: a mapping of numpy
            arrays or torch tensors, or a safetensors file. Without it, weights are
            initialised as PyTorch initialises them, from `seed`.
        opset: the ai.onnx opset; default the highest that onnxruntime runs on CPU for
            every op nnspec emits.
        signature: compile this signature of the spec instead of its main graph.
        seed: seeds the initial weights when no state_dict is given.
        native_gelu: lower gelu to the opset-20 Gelu op instead of its formula.
        native_attention: lower attention to the opset-23 Attention op instead of MatMul/Softmax.

    Returns:
        The model; the same inputs give the same bytes.

    Raises:
        SpecError: the spec does not compile.
        OpsetError: the opset cannot be emitted or onnxruntime cannot run it.
        WeightError: the state_dict misses a weight or has one of the wrong shape.
    """
    g = _graph(spec_or_graph, signature)
    flags = {"native_gelu": native_gelu, "native_attention": native_attention}
    if opset is None:
        opset = default_opset(**flags)
    else:
        check_opset(opset, **flags)
    lowered = lower_graph(g, Options(opset, **flags))
    owners: dict[str, Node] = {n.id: n for n in nodes(g) if n.op != INPUT}
    arrays = resolve_weights(lowered.weights, state_dict, owners, seed)
    return assemble(lowered, arrays)


def save_onnx(model: onnx.ModelProto, path: str | Path, external_data: bool | None = None) -> list[Path]:
    """Write `model` to `path`; weights go to ``<path>.data`` when the model is over 2 GB (or when asked).

    The model itself is not modified.

    Returns:
        The files written.
    """
    path = Path(path)
    if external_data is None:
        external_data = model.ByteSize() > PROTOBUF_LIMIT
    if not external_data:
        path.write_bytes(model.SerializeToString())
        return [path]
    data_path = path.with_name(path.name + ".data")
    light = _external(model, data_path)
    path.write_bytes(light.SerializeToString())
    return [path, data_path]


def _external(model: onnx.ModelProto, data_path: Path, threshold: int = 1024) -> onnx.ModelProto:
    """A copy of `model` whose large initializers point into `data_path`, which this writes."""
    light = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            if field.label == field.LABEL_REPEATED:
                getattr(light, field.name).extend(value)
            elif field.message_type is not None:
                getattr(light, field.name).CopyFrom(value)
            else:
                setattr(light, field.name, value)
    for field, value in model.graph.ListFields():
        if field.name == "initializer":
            continue
        if field.label == field.LABEL_REPEATED:
            getattr(light.graph, field.name).extend(value)
        else:
            setattr(light.graph, field.name, value)
    offset = 0
    with open(data_path, "wb") as f:
        for t in model.graph.initializer:
            if t.ByteSize() < threshold:
                light.graph.initializer.append(t)
                continue
            pad = -offset % 4096  # page-aligned, so onnxruntime can map tensors directly
            f.write(b"\0" * pad)
            offset += pad
            raw = t.raw_data
            f.write(raw)
            ext = light.graph.initializer.add(name=t.name, dims=t.dims, data_type=t.data_type,
                                              data_location=onnx.TensorProto.EXTERNAL)
            for k, v in (("location", data_path.name), ("offset", str(offset)), ("length", str(len(raw)))):
                ext.external_data.add(key=k, value=v)
            offset += len(raw)
    return light
