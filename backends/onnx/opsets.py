"""Which ai.onnx opsets the exporter may stamp on a model.

The default is the highest opset at which the installed onnxruntime has a CPU kernel for the
version of every op type nnspec emits (read from onnxruntime's kernel registry, so a newer
onnxruntime raises the default by itself). Lower opsets down to `MIN_OPSET` work too.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import onnx

from .lowering import EMITTED_OPS, OPTIONAL_OPS

__all__ = ["MIN_OPSET", "OpsetError", "check_opset", "default_opset", "max_opset", "needed_ops"]

MIN_OPSET = 17
"""LayerNormalization, which layer_norm lowers to, entered ai.onnx at opset 17."""

MIN_FOR_OP = {"Gelu": 20, "Attention": 23, "LayerNormalization": 17}


class OpsetError(ValueError):
    """An opset nnspec cannot emit, or onnxruntime cannot run."""


@cache
def _cpu_kernels() -> dict[str, tuple[tuple[int, int], ...]]:
    """ai.onnx op type to the version ranges onnxruntime's CPU provider has kernels for."""
    from onnxruntime.capi import _pybind_state

    ranges: dict[str, set[tuple[int, int]]] = {}
    for k in _pybind_state.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider" and k.domain in ("", "ai.onnx"):
            ranges.setdefault(k.op_name, set()).add(tuple(k.version_range))  # type: ignore[arg-type]
    return {op: tuple(sorted(r)) for op, r in ranges.items()}


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
                     "for the ops nnspec emits")  # pragma: no cover - a broken installation


def default_opset(native_gelu: bool = False, native_attention: bool = False) -> int:
    """The opset `to_onnx` uses when none is given."""
    return max_opset(needed_ops(native_gelu, native_attention))


def check_opset(opset: int, native_gelu: bool = False, native_attention: bool = False) -> None:
    """Raise `OpsetError`, saying why, when nnspec cannot emit `opset` or onnxruntime cannot run it."""
    ops = needed_ops(native_gelu, native_attention)
    low = max([MIN_OPSET, *(MIN_FOR_OP.get(op, 0) for op in ops)])
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool):
        raise OpsetError(f"opset must be an integer, got {opset!r}")
    top = max_opset(ops)
    if opset < low:
        why = min((op for op in ops if MIN_FOR_OP.get(op, 0) == low), default="LayerNormalization")
        raise OpsetError(f"opset {opset} is not supported: nnspec emits {why}, which needs opset >= {low} "
                         f"(supported: {low}..{top})")
    if opset > newest:
        raise OpsetError(f"opset {opset} is newer than the installed onnx package knows ({newest}); "
                         f"supported: {low}..{top}")
    blockers = _blockers(opset, ops)
    if opset > top or blockers:
        why = f"no CPU kernel for {', '.join(blockers)}" if blockers else "it does not load models of that opset"
        raise OpsetError(f"opset {opset} is not supported: the installed onnxruntime cannot run it ({why}); "
                         f"supported: {low}..{top}")
