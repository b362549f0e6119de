"""Running exported models in onnxruntime (CPU), with inputs checked by name, dtype and shape.

`run_onnx` names the offending input when one is missing, unknown, of the wrong dtype or of
the wrong shape, instead of onnxruntime's generic errors; `random_inputs` makes inputs of the
right shape and dtype for a model (token ids within the embedding table, padding masks that
leave at least one key visible).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from nnspec.builder.errors import did_you_mean
from nnspec.builder.limits import DEFAULT_LIMITS
from nnspec.builder.tensor import dim_size
from nnspec.builder.text import printable

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["InputError", "ModelSource", "input_specs", "random_inputs", "run_onnx", "session"]

ModelSource = onnx.ModelProto | str | Path
DEFAULT_DIM = 2
MAX_RANK = 64
"""numpy's limit on the number of dimensions of an array."""

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
    if isinstance(model, onnx.ModelProto) and model.ByteSize() >= _PROTOBUF_LIMIT:
        return _large_session(model, opts)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


_PROTOBUF_LIMIT = 2**31 - 2**20
"""A model this large cannot be serialised in one protobuf message (2 GiB), with some headroom."""


def _large_session(model: onnx.ModelProto, opts: ort.SessionOptions) -> ort.InferenceSession:
    """A session for a model over protobuf's 2 GiB: saved with its weights as external data in a
    private temporary folder (removed at once, and on every signal), then loaded from there."""
    import onnxruntime as ort

    from nnspec.backends.outputs import temporary_folder

    with temporary_folder() as folder:
        path = folder / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=1024)
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


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


def _check_sizes(model: onnx.ModelProto, sizes: Mapping[str, int], max_bytes: int) -> None:
    """Refuse inputs that are not tensors, and sizes that would allocate more than `max_bytes` per input."""
    for vi in model.graph.input:
        if vi.type.WhichOneof("value") != "tensor_type":
            raise InputError(f"input '{printable(vi.name)}' is not a tensor; random inputs are tensors only")
        t = vi.type.tensor_type
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
        except (KeyError, TypeError, ValueError):
            raise InputError(f"input '{printable(vi.name)}' has an element type ({t.elem_type}) nnspec cannot "
                             "make random values of") from None
        if len(t.shape.dim) > MAX_RANK:
            raise InputError(f"input '{printable(vi.name)}' has rank {len(t.shape.dim)}; numpy holds at most {MAX_RANK}")
        shape = [d.dim_value if d.HasField("dim_value") else dim_size(d.dim_param, sizes, DEFAULT_DIM)
                 for d in t.shape.dim]
        need = math.prod(shape) * itemsize
        if need > max_bytes:
            dims = ", ".join(f"{d.dim_param}={n}" if d.dim_param else str(n) for d, n in zip(t.shape.dim, shape, strict=True))
            raise InputError(f"input '{printable(vi.name)}' would take {need:,} bytes [{dims}]; the limit is "
                             f"{max_bytes:,} (--limit max_tensor_bytes)")


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
    named = {d.dim_param for vi in model.graph.input for d in vi.type.tensor_type.shape.dim if d.dim_param}
    steps: dict[str, int] = {}
    for node in layers:
        name = casts.get(node.input[4], node.input[4])
        if name not in inputs:
            continue
        x = known.get(node.input[0])
        dims = x.type.tensor_type.shape.dim if x is not None else ()
        d = dims[0] if dims else None  # X is (seq_length, batch, input_size)
        if d is not None and d.HasField("dim_value"):
            n = d.dim_value
        elif d is not None and d.dim_param in named:  # a dim of the inputs (not inference's unk__N)
            n = int(sizes.get(d.dim_param, DEFAULT_DIM))
        else:
            n = 1  # shape inference lost the steps (a Shape/Gather chain before X): 1 is always valid
        steps[name] = min(steps.get(name, n), n)
    return steps


def random_inputs(model: onnx.ModelProto, sizes: Mapping[str, int] | None = None, seed: int = 0,
                  max_bytes: int = DEFAULT_LIMITS.max_tensor_bytes) -> dict[str, np.ndarray]:
    """Random inputs for `model`: symbolic dims from `sizes` (default 2), floats ~ N(0, 1),
    integer ids below the size of the table they index, sequence lengths from 1 to the number of
    steps, bool masks True on a random tail (padding) that leaves position 0 False.

    Raises:
        InputError: an input is not a tensor, or would take more than `max_bytes`.
    """
    sizes = dict(sizes or {})
    _check_sizes(model, sizes, max_bytes)
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
