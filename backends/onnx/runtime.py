"""Running exported models in onnxruntime (CPU), with inputs checked by name, dtype and shape.

`run_onnx` names the offending input when one is missing, unknown, of the wrong dtype or of
the wrong shape, instead of onnxruntime's generic errors; `random_inputs` makes inputs of the
right shape and dtype for a model (token ids within the embedding table, padding masks that
leave at least one key visible).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from builder.errors import did_you_mean
from builder.tensor import dim_size

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["InputError", "ModelSource", "input_specs", "random_inputs", "run_onnx", "session"]

ModelSource = onnx.ModelProto | str | Path
DEFAULT_DIM = 2

_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool",
}


class InputError(ValueError):
    """Inputs that do not fit the model: missing, unknown, or of the wrong dtype or shape."""


def session(model: ModelSource, optimization: str = "all", threads: int = 0, spin: bool = True) -> ort.InferenceSession:
    """An onnxruntime CPU session at the given graph optimisation level (``all`` is onnxruntime's default).

    `spin`: let idle worker threads spin for the next run (onnxruntime's default); turn it off
    to time several sessions side by side without them stealing each other's cores.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def input_specs(sess: ort.InferenceSession) -> dict[str, tuple[list[int | str | None], str]]:
    """Each model input's shape (sizes, dim names, None for unnamed) and nnspec dtype name."""
    out = {}
    for i in sess.get_inputs():
        out[i.name] = (list(i.shape), _ORT_TYPES.get(i.type, i.type))
    return out


def _check(specs: Mapping[str, tuple[list[int | str | None], str]], inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    problems: list[str] = []
    for name in inputs:
        if name not in specs:
            hint = "".join(f" ({h})" for h in did_you_mean(name, specs))
            problems.append(f"unknown input '{name}'{hint}; the model's inputs: {', '.join(specs)}")
    sizes: dict[str, tuple[int, str]] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in specs.items():
        if name not in inputs:
            problems.append(f"missing input '{name}' ({dtype} [{', '.join(str(d) for d in shape)}])")
            continue
        arr = np.asarray(inputs[name])
        want = f"{dtype} [{', '.join(str(d) for d in shape)}]"
        if str(arr.dtype) != dtype:
            problems.append(f"input '{name}': expected {want}, got {arr.dtype} {list(arr.shape)}")
            continue
        if arr.ndim != len(shape):
            problems.append(f"input '{name}': expected rank {len(shape)} {want}, got rank {arr.ndim} {list(arr.shape)}")
            continue
        for axis, (d, n) in enumerate(zip(shape, arr.shape, strict=True)):
            if isinstance(d, int) and d != n:
                problems.append(f"input '{name}': dim {axis} must be {d} {want}, got {list(arr.shape)}")
            elif isinstance(d, str):
                seen = sizes.setdefault(d, (n, name))
                if seen[0] != n:
                    problems.append(f"input '{name}': dim {axis} ('{d}') is {n}, but '{d}' is {seen[0]} in "
                                    f"input '{seen[1]}'")
        arrays[name] = arr
    if problems:
        raise InputError("\n".join(problems))
    return arrays


def run_onnx(model: ModelSource | ort.InferenceSession, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run a model (a ModelProto, a path, or a session) in onnxruntime on CPU.

    Args:
        model: the model, or a session from `session` to run many times.
        inputs: input name to array; dtypes and fixed sizes must match the model's.

    Returns:
        Output name to array, in the model's output order.

    Raises:
        InputError: naming each input that is missing, unknown, or of the wrong dtype or shape.
    """
    sess = model if hasattr(model, "get_inputs") else session(model)  # type: ignore[arg-type]
    arrays = _check(input_specs(sess), inputs)  # type: ignore[arg-type]
    names = [o.name for o in sess.get_outputs()]  # type: ignore[union-attr]
    return dict(zip(names, sess.run(names, arrays), strict=True))  # type: ignore[union-attr]


def _id_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """For integer inputs that index a table (Gather on an initializer), the table's size."""
    rows = {t.name: t.dims[0] for t in model.graph.initializer if t.dims}
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in rows:
            ids = node.input[1]
            bounds[ids] = min(bounds.get(ids, rows[node.input[0]]), rows[node.input[0]])
    return bounds


_RECURRENT = ("RNN", "GRU", "LSTM")


def _length_inputs(model: onnx.ModelProto, sizes: Mapping[str, int]) -> dict[str, int]:
    """For integer inputs that are the sequence lengths of a recurrent layer (its `sequence_lens`,
    maybe through a Cast), the number of time steps: valid lengths are 1 to that."""
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    inputs = {vi.name for vi in model.graph.input}
    layers = [n for n in model.graph.node if n.op_type in _RECURRENT and len(n.input) > 4 and n.input[4]]
    if not layers:
        return {}
    known = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    known.update({vi.name: vi for vi in model.graph.input})
    steps: dict[str, int] = {}
    for node in layers:
        name = casts.get(node.input[4], node.input[4])
        x = known.get(node.input[0])
        if name not in inputs or x is None or not x.type.tensor_type.shape.dim:
            continue
        d = x.type.tensor_type.shape.dim[0]  # X is (seq_length, batch, input_size)
        steps[name] = d.dim_value if d.HasField("dim_value") else int(sizes.get(d.dim_param, DEFAULT_DIM))
    return steps


def random_inputs(model: onnx.ModelProto, sizes: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for `model`: symbolic dims from `sizes` (default 2), floats ~ N(0, 1),
    integer ids below the size of the table they index, sequence lengths from 1 to the number of
    steps, bool masks True on a random tail (padding) that leaves position 0 False."""
    sizes = dict(sizes or {})
    rng = np.random.default_rng(seed)
    bounds = _id_bounds(model)
    lengths = _length_inputs(model, sizes)
    out: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        t = vi.type.tensor_type
        shape = []
        for d in t.shape.dim:
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            else:  # a cache's past_sequence_length+seq: the sum of the sizes
                shape.append(dim_size(d.dim_param, sizes, DEFAULT_DIM))
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dtype, np.floating):
            out[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            n = shape[-1] if shape else 1
            keep = rng.integers(1, n + 1, size=(*shape[:-1], 1)) if shape else np.ones(())
            out[vi.name] = np.arange(n) >= keep if shape else np.asarray(False)
        elif vi.name in lengths:
            out[vi.name] = rng.integers(1, max(lengths[vi.name], 1) + 1, size=shape).astype(dtype)
        else:
            out[vi.name] = rng.integers(0, bounds.get(vi.name, DEFAULT_DIM), size=shape).astype(dtype)
    return out
