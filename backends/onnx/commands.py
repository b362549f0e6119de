"""``nnspec export``, ``nnspec run`` and ``nnspec check``: the ONNX backend's commands.

onnx, onnxruntime and torch are imported inside the commands, never when the CLI starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nnspec.backends import progress
from nnspec.backends.clikit import (
    atomic_output,
    check_output,
    fail,
    limit_option,
    load_graph,
    print_diagnostics,
    set_option,
    signature_option,
)
from nnspec.backends.jsonout import emit, json_output
from nnspec.builder import SpecError, param_count
from nnspec.builder.dims import sized_graph, unknown_dims
from nnspec.builder.errors import did_you_mean
from nnspec.builder.limits import DEFAULT_LIMITS

if TYPE_CHECKING:
    import networkx as nx
    import numpy as np
    import onnx

    from nnspec.builder import Spec

__all__ = ["check", "export", "run"]

TOLERANCE = 1e-4
"""check: the largest allowed |onnx - torch|, relative to max(1, max |torch output|)."""


def _dims(items: Sequence[str]) -> dict[str, int]:
    """``--dim batch=2`` options as sizes of symbolic dims."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            size = int(value)
        except ValueError:
            size = 0
        if not sep or not name.strip() or size < 1:
            raise click.UsageError(f"--dim expects NAME=SIZE with a positive SIZE, got '{item}'")
        out[name.strip()] = size
    return out


def _check_sizes(spec: Spec, sizes: Mapping[str, int], signature: str | None) -> None:
    """Refuse ``--dim`` names that no input has (usage, exit 2) and sizes the model cannot take
    (a sequence longer than its position table: the node and the spec line, exit 1)."""
    try:
        sized_graph(spec, sizes, signature)
    except ValueError as exc:
        raise click.UsageError(f"--dim: {exc}") from None
    except SpecError as exc:
        print_diagnostics(exc.diagnostics)
        raise SystemExit(1) from None


def _check_onnx_dims(model: onnx.ModelProto, sizes: Mapping[str, int]) -> None:
    """Refuse ``--dim`` names that are no dim of the ONNX model's inputs (usage, exit 2)."""
    known: dict[str, None] = {}
    for vi in model.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param:
                known.setdefault(d.dim_param, None)
    problems = unknown_dims(sizes, list(known))
    if problems:
        raise click.UsageError(f"--dim: {'; '.join(problems)}")


dim_option = click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
                          help="Size of a symbolic dim for random inputs (repeatable), e.g. --dim batch=2; default 2.")
weights_option = click.option("--weights", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                              help="Weights keyed like the PyTorch state_dict: a safetensors file, or a .pt/.bin "
                                   "state_dict (read with torch.load(weights_only=True)) (default: initialised "
                                   "as PyTorch would, from --seed).")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed for weights and random inputs.")


def variant_options(fn: Any) -> Any:
    """``--quantize int8`` and ``--dtype float16``: the deployable variants (see `deploy`)."""
    fn = click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
                      help="float16: half-precision weights and compute (LayerNorm, softmax and inputs/outputs "
                           "stay float32), by onnxruntime's converter.")(fn)
    return click.option("--quantize", type=click.Choice(["int8"]), default=None,
                        help="int8: dynamic quantisation of the MatMul weights by onnxruntime.quantization.")(fn)


fused_option = click.option(
    "--fused-attention", is_flag=True,
    help="Lower multi_head_attention to onnxruntime's fused com.microsoft.MultiHeadAttention (a node it cannot "
         "express keeps the standard lowering, with a note saying why).")


@contextmanager
def _notes() -> Iterator[None]:
    """Say the export's warnings as ``note:`` lines on stderr: weights cast to another dtype, nodes that
    kept the standard lowering although an option asked for another."""
    import warnings

    from .table import FallbackWarning
    from .weights import WeightDtypeWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WeightDtypeWarning)
        warnings.simplefilter("always", FallbackWarning)
        yield
    for w in caught:  # a cast is said, as a note (--dtype float16 keeps half precision)
        if isinstance(w.message, WeightDtypeWarning):
            cast = WeightDtypeWarning(w.message.given, w.message.model)  # said as the model's, in either backend
            keep = "export with --dtype float16 for a half-precision model" if cast.half else None
            click.echo(f"note: {cast.note(keep)}", err=True)
        elif issubclass(w.category, FallbackWarning):
            click.echo(f"note: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _native_options(fn: Any) -> Any:
    fn = click.option("--native-attention", is_flag=True,
                      help="Lower attention to the opset-23 Attention op instead of MatMul/Softmax.")(fn)
    return click.option("--native-gelu", is_flag=True, help="Lower gelu to the opset-20 Gelu op.")(fn)


def _prepare(graph: nx.MultiDiGraph, weights: str | None, opset: int | None, seed: int, native_gelu: bool,
             native_attention: bool, fused_attention: bool = False) -> tuple[Any, Mapping[str, np.ndarray]]:
    from .export import prepare
    from .opsets import OpsetError
    from .table import LoweringError
    from .weights import WeightError

    try:
        with _notes():
            return prepare(graph, weights, opset, seed=seed, native_gelu=native_gelu,
                           native_attention=native_attention, fused_attention=fused_attention)
    except (OpsetError, WeightError, LoweringError) as exc:
        fail(str(exc))


@click.command("export")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="FILE.onnx",
              help="The model file to write (weights over 2 GB go to FILE.onnx.data beside it).")
@weights_option
@click.option("--opset", type=int, default=None,
              help="The ai.onnx opset (default: the lowest that has every op of the model, at least 17).")
@click.option("--external-data", is_flag=True, help="Write the weights to FILE.onnx.data even under 2 GB.")
@seed_option
@_native_options
@fused_option
@variant_options
@set_option
@signature_option
@limit_option
@json_output
def export(spec: str, output: str, weights: str | None, opset: int | None, external_data: bool, seed: int,
           native_gelu: bool, native_attention: bool, fused_attention: bool, quantize: str | None, dtype: str,
           sets: tuple[str, ...], signature: str | None, limits: tuple[str, ...], as_json: bool = False) -> None:
    """Export SPEC (or one signature) as an ONNX model, emitted directly from the checked graph.

    Inputs and outputs carry the spec's names, initializers the PyTorch state_dict keys, and
    symbolic dims stay dynamic. The file is written only when the export succeeds.
    """
    check_output(output, (".onnx",), [spec, weights], "--output")  # before anything is built
    _, graph = load_graph(spec, sets, signature, limits)  # a bad spec is refused before onnx is imported
    from .weights import weight_bytes
    from .writer import needs_external, write_prepared

    show = progress.enabled(as_json)
    with progress.initialising(4 * param_count(graph), show and weights is None):
        lowered, arrays = _prepare(graph, weights, opset, seed, native_gelu, native_attention, fused_attention)
    total = weight_bytes(arrays)  # from the shapes: initial weights are made one by one as they are written
    target = Path(output)
    if quantize is not None or dtype != "float32":
        _export_variant(lowered, arrays, target, quantize, dtype, [spec, weights])
        return
    external = external_data or needs_external(lowered, arrays)
    location = target.name + ".data"
    if external and (output == "-" or (Path(output).exists() and not Path(output).is_file())):
        fail(f"'{output}' is not a regular file; a model with external data needs one (its weights go beside it)")
    with atomic_output(target, (".onnx",), [spec, weights], "--output") as tmp:
        if external:
            with atomic_output(target.with_name(location), (".data",), [spec, weights], "--output") as tmp_data, \
                    progress.writing(tmp_data, total, "writing weights", show):
                write_prepared(lowered, arrays, tmp, True, location, tmp_data)
                _stamp(tmp, tmp_data)  # the pair is renamed one by one: `run` tells a mixed pair
        else:
            with progress.writing(tmp, total, "writing model", show):
                write_prepared(lowered, arrays, tmp, False)
    size = total
    extra = f" + {location}" if external else ""
    emit({"wrote": [str(target), *([str(target.with_name(location))] if external else [])],
          "nodes": len(lowered.nodes), "weights": len(arrays), "weight_bytes": size, "opset": lowered.options.opset})
    click.echo(f"wrote {target}{extra}: {len(lowered.nodes)} nodes, {len(arrays)} weights ({size / 1e6:.1f} MB), "
               f"opset {lowered.options.opset}", err=True)


def _export_variant(lowered: Any, arrays: Mapping[str, np.ndarray], target: Path, quantize: str | None, dtype: str,
                    sources: list[str | None]) -> None:
    """Write the int8 or float16 variant that onnxruntime's tools make of the exported model (inline)."""
    from .deploy import DeployError, deploy
    from .export import assemble
    from .writer import save_onnx

    try:
        model = deploy(assemble(lowered, arrays), quantize, dtype)  # type: ignore[arg-type]
    except DeployError as exc:
        fail(str(exc))
    if model.ByteSize() > 2**31 - 1:
        fail(f"the {quantize or dtype} model is over 2 GiB; onnxruntime's tools need it inline")
    with atomic_output(target, (".onnx",), sources, "--output") as tmp:
        save_onnx(model, tmp, external_data=False)
    emit({"wrote": [str(target)], "variant": quantize or dtype, "nodes": len(model.graph.node),
          "weights": len(model.graph.initializer), "opset": lowered.options.opset})
    click.echo(f"wrote {target}: {quantize or dtype} ({target.stat().st_size / 1e6:.1f} MB), "
               f"opset {lowered.options.opset}", err=True)


def _stamp(model: Path, data: Path) -> None:
    from .files import stamp_data_digest

    stamp_data_digest(model, data)


def _load_inputs(items: Sequence[str]) -> dict[str, np.ndarray]:
    from .files import FileError, read_npy

    out = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise click.UsageError(f"--input expects NAME=FILE.npy, got '{item}'")
        try:
            out[name] = read_npy(file, DEFAULT_LIMITS.max_tensor_bytes, name)
        except FileError as exc:
            fail(str(exc))
    return out


_ORT_ERRORS = "onnxruntime.capi.onnxruntime_pybind11_state"
"""Where onnxruntime's exceptions (Fail, InvalidArgument, RuntimeException) are defined."""


def _first_line(exc: BaseException) -> str:
    """onnxruntime's message without its source-file noise: the status message's last clause."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    node, _, status = text.partition("Status Message:")
    where = node.split("Name:", 1)[1].strip(" '") if "Name:" in node else ""
    reason = status.rsplit(" was false.", 1)[-1].strip() or status.strip() or text
    return f"node '{where}': {reason}" if where else reason


_SAFE_CASTS = {("float64", "float32"), ("float64", "float16"), ("float32", "float16"), ("float16", "float32"),
               ("int32", "int64"), ("int16", "int64"), ("int8", "int64"), ("uint8", "int64"), ("int64", "int32")}
"""(given, wanted) dtypes an input is cast between, with a note: NumPy saves float64 and int32 by default."""


def _cast_inputs(model: onnx.ModelProto, given: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each given input in the dtype the model declares, where the cast keeps its meaning (a note says
    so on stderr); other mismatches are left for `run_onnx` to refuse, naming the input."""
    import numpy as np
    import onnx

    wanted = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    out = dict(given)
    for name, arr in given.items():
        if name not in wanted or not wanted[name]:
            continue
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(wanted[name]))
        if arr.dtype != dtype and (arr.dtype.name, dtype.name) in _SAFE_CASTS:
            cast = arr.astype(dtype)
            if np.issubdtype(dtype, np.integer) and not np.array_equal(cast, arr):
                continue  # values that do not fit: run_onnx names the dtype mismatch
            out[name] = cast
            click.echo(f"note: input '{name}': {arr.dtype} cast to {dtype} as the model declares", err=True)
    return out


def _preview(arr: np.ndarray, n: int = 6) -> str:
    import numpy as np

    flat = arr.reshape(-1)[:n]
    text = np.array2string(flat, precision=4, separator=", ", suppress_small=True)
    return text[:-1] + ", ...]" if arr.size > n else text


def _model_for(source: str, weights: str | None, opset: int | None, seed: int, sets: tuple[str, ...],
               signature: str | None, limits: tuple[str, ...], sizes: Mapping[str, int] | None) -> onnx.ModelProto | str:
    """An .onnx path as is; a spec exported in memory (its `sizes` checked first, when given)."""
    if source.endswith(".onnx"):
        if sets or signature or weights or limits:
            raise click.UsageError("--set, --signature, --limit and --weights apply to a spec, not to an .onnx file")
        return source
    from .export import assemble

    loaded, graph = load_graph(source, sets, signature, limits)
    if sizes is not None:
        _check_sizes(loaded, sizes, signature)
    return assemble(*_prepare(graph, weights, opset, seed, False, False))


def _model_file(path: str) -> onnx.ModelProto:
    """A user's .onnx file, checked to be a model nnspec can feed; a broken one exits 1."""
    from .files import FileError, load_model_file

    try:
        return load_model_file(path)
    except FileError as exc:
        fail(str(exc))


def _session(source: onnx.ModelProto | str) -> Any:
    """An onnxruntime session; a user's model file that onnxruntime refuses exits 1."""
    from .files import FileError, model_session

    try:
        return model_session(source, user_file=isinstance(source, str))
    except FileError as exc:
        fail(str(exc))


def _save_outputs(folder: str, outputs: Mapping[str, np.ndarray], inputs: Sequence[str | None]) -> None:
    """Each output as a .npy file inside `folder`, under a safe name; a refused place exits 1."""
    from nnspec.backends.outputs import OutputError

    from .files import save_outputs

    try:
        files = save_outputs(folder, outputs, inputs)
    except OutputError as exc:
        fail(str(exc), exc.exit_code)
    renamed = [f"{name} -> {path.name}" for name, path in files.items() if path.name != f"{name}.npy"]
    if renamed:
        click.echo(f"output names made safe as file names: {', '.join(renamed)}", err=True)


@click.command("run")
@click.argument("model", metavar="MODEL.onnx|SPEC", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "inputs", multiple=True, metavar="NAME=FILE.npy", help="An input array (repeatable).")
@click.option("--random", "use_random", is_flag=True, help="Random inputs for those not given (see --dim).")
@dim_option
@click.option("--output-dir", "-d", type=click.Path(file_okay=False), default=None,
              help="Save each output as DIR/<name>.npy.")
@weights_option
@click.option("--opset", type=int, default=None, help="For a SPEC: the opset to export at.")
@seed_option
@set_option
@signature_option
@limit_option
@json_output
def run(model: str, inputs: tuple[str, ...], use_random: bool, dims: tuple[str, ...], output_dir: str | None,
        weights: str | None, opset: int | None, seed: int, sets: tuple[str, ...], signature: str | None,
        limits: tuple[str, ...], as_json: bool) -> None:
    """Run MODEL.onnx (or SPEC, exported on the fly) in onnxruntime on CPU.

    Prints each output's name, shape, dtype and first values; --output-dir saves them.
    """
    import onnx

    from .runtime import InputError, random_inputs, run_onnx

    sizes = _dims(dims)
    given = _load_inputs(inputs)
    source = _model_for(model, weights, opset, seed, sets, signature, limits, sizes if use_random else None)
    proto = source if isinstance(source, onnx.ModelProto) else _model_file(source)
    _check_onnx_dims(proto, sizes)
    names = [i.name for i in proto.graph.input]
    for name in given:
        if name not in names:
            hint = "".join(f" ({h})" for h in did_you_mean(name, names))
            fail(f"the model has no input '{name}'{hint}; its inputs: {', '.join(names)}")
    given = _cast_inputs(proto, given)
    missing = [n for n in names if n not in given]
    if missing and not use_random:
        fail(f"no value for input(s) {', '.join(missing)}: give --input NAME=FILE.npy, or --random")
    try:
        feed = {**{k: v for k, v in random_inputs(proto, sizes, seed).items() if k in missing}, **given}
    except InputError as exc:
        fail(str(exc))
    try:
        outputs = run_onnx(_session(source), feed)
    except InputError as exc:
        fail(str(exc))
    except Exception as exc:
        if isinstance(source, onnx.ModelProto) or type(exc).__module__ != _ORT_ERRORS:
            raise  # a spec nnspec exported and checked: its failure is nnspec's bug
        sizes_fed = ", ".join(f"{k}: {v.dtype} {list(v.shape)}" for k, v in feed.items())
        fail(f"onnxruntime cannot run '{source}' on these inputs ({sizes_fed}): {_first_line(exc)}")
    if output_dir is not None:
        _save_outputs(output_dir, outputs, [model, weights, *(i.partition("=")[2] for i in inputs)])
    if as_json:
        emit({"outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "preview": v.reshape(-1)[:6].tolist()}
                          for k, v in outputs.items()}})
        return
    for name, arr in outputs.items():
        click.echo(f"{name}: {arr.dtype} {list(arr.shape)} {_preview(arr)}")
    if output_dir is not None:
        click.echo(f"saved {len(outputs)} output(s) to {output_dir}/", err=True)


def compare(graph: nx.MultiDiGraph, sizes: Mapping[str, int], seed: int = 0, weights: str | Path | None = None,
            **options: Any) -> dict[str, dict[str, float]]:
    """Build both backends on the same weights, run both on random inputs; per output: max |diff|, scale.

    Args:
        weights: a weights file for both (see `load_weights`); default: PyTorch's initialisation from `seed`.

    Returns:
        Output name to ``{"diff": max |onnx - torch|, "scale": max(1, max |torch|)}``.
    """
    import numpy as np
    import torch

    from nnspec.backends.pytorch import load_weights, to_torch

    from .export import to_onnx
    from .runtime import random_inputs, run_onnx

    torch.manual_seed(seed)
    module = to_torch(graph).eval()
    if weights is not None:  # a signature reads part of the model's weights: the rest of the file is no error
        load_weights(module, weights, strict=graph.graph.get("signature") is None)
    model = to_onnx(graph, module.state_dict(), **options)  # quantize / dtype: the deployable variant
    feed = random_inputs(model, sizes, seed)
    got = run_onnx(model, feed)
    with torch.no_grad():
        ref = module(**{k: torch.from_numpy(v) for k, v in feed.items()})
    refs = ref if isinstance(ref, tuple) else (ref,)
    out = {}
    for name, y, r in zip(graph.graph["outputs"], got.values(), refs, strict=True):
        r = r.numpy()
        scale = max(1.0, float(np.max(np.abs(r)))) if r.size else 1.0
        diff = float(np.max(np.abs(y.astype(np.float64) - r))) if r.size else 0.0
        out[name] = {"diff": diff, "scale": scale}
    return out


@click.command("check")
@click.argument("spec", type=click.Path(dir_okay=False))
@dim_option
@click.option("--tolerance", type=float, default=None,
              help="Largest allowed max |onnx - torch| / max(1, max |torch|) (default: 1e-4 for float32, "
                   "2e-2 for --dtype float16, 0.15 for --quantize int8).")
@weights_option
@seed_option
@click.option("--opset", type=int, default=None, help="The opset to export at (default: as export).")
@fused_option
@variant_options
@set_option
@signature_option
@limit_option
@json_output
def check(spec: str, dims: tuple[str, ...], tolerance: float | None, weights: str | None, seed: int,
          opset: int | None, fused_attention: bool, quantize: str | None, dtype: str, sets: tuple[str, ...],
          signature: str | None, limits: tuple[str, ...], as_json: bool) -> None:
    """Build SPEC with both backends (same weights), run both on random inputs, compare.

    Prints the max abs difference per output; exits 1 if one is above the tolerance.
    """
    loaded, graph = load_graph(spec, sets, signature, limits)
    sizes = _dims(dims)
    _check_sizes(loaded, sizes, signature)
    from .deploy import TOLERANCES, DeployError
    from .opsets import OpsetError

    variant = quantize or dtype
    if tolerance is None:
        tolerance = TOLERANCES[variant]
    from nnspec.backends.pytorch import WeightsError

    try:
        with _notes():
            result = compare(graph, sizes, seed, weights, opset=opset, quantize=quantize, dtype=dtype,
                             fused_attention=fused_attention)
    except (OpsetError, DeployError, WeightsError) as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(str(exc))
    bad = [name for name, r in result.items() if not r["diff"] <= tolerance * r["scale"]]
    if as_json:
        emit({"variant": variant, "tolerance": tolerance, "outputs": result}, ok=not bad)
    else:
        if variant != "float32":
            click.echo(f"{variant} model: allowed max |onnx - torch| = {tolerance:g} x max(1, max |torch|)")
        for name, r in result.items():
            verdict = "FAIL" if name in bad else "ok"
            click.echo(f"{verdict:4}  {name}: max |onnx - torch| = {r['diff']:.3g} (allowed {tolerance * r['scale']:.3g})")
    if bad:
        fail(f"onnxruntime and PyTorch differ on {', '.join(bad)}")
