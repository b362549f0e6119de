"""Which ai.onnx opset the exporter stamps on a model.

The default is the lowest opset that covers the op types the model emits, but never below
`FLOOR` (17, which every onnxruntime release since 1.13, of October 2022, runs: all of the
last two years' releases, and the engines that trail onnxruntime). A model that needs a newer
op (the opset-20 ``Gelu`` of ``native_gelu``, say) gets the first opset that has it. An
explicit opset may go down to `MIN_OPSET` (11): layer norm is then decomposed (below 17), and
axes become attributes (below 13); an op that does not exist at the asked opset is an error
naming the node, the op and the opset it needs. The top is the newest opset at which the
installed onnxruntime has a CPU kernel for every op of the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import onnx

from .lowering import EMITTED_OPS, OPTIONAL_OPS

__all__ = ["FLOOR", "MIN_OPSET", "OpsetError", "check_forms", "check_model_ops", "check_opset", "default_opset", "first_version",
           "lowest_opset", "max_opset", "needed_ops"]

MIN_OPSET = 11
"""The lowest opset nnspec emits (Clip, Pad and Slice take their bounds as inputs from 11)."""

FLOOR = 17
"""The default opset is never lower: LayerNormalization is native from 17, and every onnxruntime
release since 1.13 (October 2022) runs it."""

MIN_FOR_OP = {"Gelu": 20, "Attention": 23, "LayerNormalization": 17}
"""Minimums of the optional native ops (checked before lowering, for a clear early error)."""

DEFAULT_FOR_NATIVE = {"Gelu": 20, "Attention": 25}
"""The default opset with a native op: onnxruntime's CPU kernels of Attention-23 and -24 refuse
the broadcast (batch, 1, Lq, Lk) masks nnspec passes; from 25 on they take them."""


class OpsetError(ValueError):
    """An opset nnspec cannot emit for this model, or onnxruntime cannot run."""


@cache
def _cpu_kernels() -> dict[str, tuple[tuple[int, int], ...]]:
    """ai.onnx op type to the version ranges onnxruntime's CPU provider has kernels for."""
    from onnxruntime.capi import _pybind_state

    ranges: dict[str, set[tuple[int, int]]] = {}
    for k in _pybind_state.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider" and k.domain in ("", "ai.onnx"):
            ranges.setdefault(k.op_name, set()).add(tuple(k.version_range))  # type: ignore[arg-type]
    return {op: tuple(sorted(r)) for op, r in ranges.items()}


@cache
def first_version(op_type: str) -> int:
    """The first ai.onnx opset that has `op_type`."""
    versions = [s.since_version for s in onnx.defs.get_all_schemas_with_history()
                if s.name == op_type and s.domain in ("", "ai.onnx")]
    if not versions:
        raise OpsetError(f"{op_type} is not an ai.onnx op")
    return min(versions)


def _missing_kernel(op_type: str, opset: int) -> str | None:
    """``Op-<version>`` when onnxruntime has no CPU kernel for the op's version at `opset`, else None."""
    try:
        since = onnx.defs.get_schema(op_type, opset, "").since_version
    except onnx.defs.SchemaError:
        return f"{op_type} (not in ai.onnx opset {opset})"
    if any(lo <= since <= hi for lo, hi in _cpu_kernels().get(op_type, ())):
        return None
    return f"{op_type}-{since}"


@cache
def _ort_loads(opset: int) -> bool:
    """Whether onnxruntime accepts a model stamped with `opset` at all."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime's errors share no public base class
        return False
    return True


def needed_ops(native_gelu: bool = False, native_attention: bool = False) -> frozenset[str]:
    """The op types a model may contain with these options."""
    ops = set(EMITTED_OPS)
    if native_gelu:
        ops |= OPTIONAL_OPS["native_gelu"]
    if native_attention:
        ops |= OPTIONAL_OPS["native_attention"]
    return frozenset(ops)


def _blockers(opset: int, ops: Iterable[str]) -> list[str]:
    return [m for op in sorted(ops) if (m := _missing_kernel(op, opset)) is not None]


@cache
def max_opset(ops: frozenset[str] = EMITTED_OPS) -> int:
    """The highest opset at which onnxruntime runs every op type in `ops` on CPU."""
    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET - 1, -1):
        if not _blockers(opset, ops) and _ort_loads(opset):
            return opset
    raise OpsetError(f"the installed onnxruntime runs none of opsets {MIN_OPSET}..{onnx.defs.onnx_opset_version()} "
                     f"for {', '.join(sorted(ops))}")


def lowest_opset(ops: Iterable[str]) -> int:
    """The lowest opset that has every op type in `ops` (as nnspec emits them: never below `MIN_OPSET`)."""
    return max([MIN_OPSET, *(first_version(op) for op in ops)])


def default_opset(native_gelu: bool = False, native_attention: bool = False) -> int:
    """The opset `to_onnx` starts from when none is given: `FLOOR`, or what the native ops need.

    A model whose lowering emits a newer op is stamped with the first opset that has it.
    """
    flags = {"Gelu": native_gelu, "Attention": native_attention}
    return max([FLOOR, *(DEFAULT_FOR_NATIVE[op] for op, on in flags.items() if on)])


def check_opset(opset: int, native_gelu: bool = False, native_attention: bool = False) -> None:
    """Refuse, before lowering, an opset that is no integer, out of nnspec's range, or below a native op's need."""
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise OpsetError(f"opset must be an integer, got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise OpsetError(f"opset {opset} is newer than the installed onnx package knows ({newest})")
    if opset < MIN_OPSET:
        raise OpsetError(f"opset {opset} is not supported: nnspec emits opsets {MIN_OPSET} and newer")
    for op, on in (("Gelu", native_gelu), ("Attention", native_attention)):
        if on and opset < MIN_FOR_OP[op]:
            flag = "native_gelu" if op == "Gelu" else "native_attention"
            raise OpsetError(f"opset {opset} is not supported with {flag}: nnspec then emits {op}, which needs "
                             f"opset >= {MIN_FOR_OP[op]}")


def check_forms(opset: int, nodes: Iterable[tuple[str, str, int, tuple[str, ...]]]) -> None:
    """Refuse a node whose inputs or attributes its op's schema at `opset` does not take.

    Args:
        opset: the model's opset.
        nodes: (op type, node id, number of inputs, attribute names), one per distinct form.
    """
    for op_type, node_id, n_inputs, attrs in nodes:
        try:
            schema = onnx.defs.get_schema(op_type, opset, "")
        except onnx.defs.SchemaError:
            continue  # check_model_ops names it
        unknown = [a for a in attrs if a not in schema.attributes]
        too_many = n_inputs > len(schema.inputs) and not any(
            i.option == onnx.defs.OpSchema.FormalParameterOption.Variadic for i in schema.inputs)
        if unknown or too_many:
            what = f"attribute '{unknown[0]}'" if unknown else f"{n_inputs} inputs"
            need = _first_with(op_type, opset, unknown[0] if unknown else None, n_inputs)
            raise OpsetError(f"opset {opset} is not supported for this model: node '{node_id}' emits {op_type} with "
                             f"{what}, which needs opset >= {need}")


def _first_with(op_type: str, opset: int, attr: str | None, n_inputs: int) -> int:
    """The first opset above `opset` whose schema of `op_type` takes `attr` (or `n_inputs` inputs)."""
    for version in range(opset + 1, onnx.defs.onnx_opset_version() + 1):
        schema = onnx.defs.get_schema(op_type, version, "")
        if (attr is not None and attr in schema.attributes) or (attr is None and len(schema.inputs) >= n_inputs):
            return version
    return onnx.defs.onnx_opset_version()


def check_model_ops(opset: int, ops: dict[str, str]) -> None:
    """Refuse `opset` when one of the model's ops (op type -> the node that emits it) is not in it,
    or onnxruntime cannot run the model at it; the error names the op, the node and the range."""
    top = max_opset(frozenset(ops))
    low = lowest_opset(ops)
    if opset < low:
        op = max(ops, key=lambda o: (first_version(o), o))
        raise OpsetError(f"opset {opset} is not supported for this model: node '{ops[op]}' emits {op}, which needs "
                         f"opset >= {first_version(op)} (supported: {low}..{top})")
    blockers = _blockers(opset, ops)
    if opset > top or blockers:
        why = f"no CPU kernel for {', '.join(blockers)}" if blockers else "it does not load models of that opset"
        raise OpsetError(f"opset {opset} is not supported: the installed onnxruntime cannot run it ({why}); "
                         f"supported: {low}..{top}")
