"""``nnspec build``: build a spec as a PyTorch module; write standalone source and initial weights.

torch is imported inside the command, so that other commands start without it.
"""

from __future__ import annotations

from pathlib import Path

import click

from nnspec.backends import progress
from nnspec.backends.clikit import (
    atomic_output,
    check_output,
    fail,
    limit_option,
    load_graph,
    set_option,
    signature_option,
    write_text_atomic,
)
from nnspec.backends.jsonout import emit, json_output
from nnspec.backends.weightfiles import TORCH_SUFFIXES
from nnspec.builder import param_count

__all__ = ["build"]

WEIGHT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)


@click.command("build")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--emit-python", "emit_python_to", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write standalone PyTorch source (a class per block and one for the model, importing only torch) "
                   "to FILE.")
@click.option("--with-past", is_flag=True,
              help="With --emit-python, also write the derived key/value-cache methods (with_past, cross_kv).")
@click.option("--weights", "weights_to", type=click.Path(dir_okay=False), metavar="FILE.safetensors",
              help="Save the module's initial weights (the spec's init:, else PyTorch's defaults) to FILE: "
                   "safetensors, or a torch.save state_dict for FILE.pt, .pth or .bin.")
@click.option("--seed", type=int, default=None, help="Seed torch's generator before initialising the weights.")
@set_option
@limit_option
@signature_option
@json_output
def build(spec: str, emit_python_to: str | None, with_past: bool, weights_to: str | None, seed: int | None,
          sets: tuple[str, ...], limits: tuple[str, ...], signature: str | None, as_json: bool = False) -> None:
    """Build SPEC as a PyTorch module (torch.fx) and print its size.

    With --emit-python, write it as standalone source whose state_dict keys and outputs are the
    built module's; with --weights, save its initial weights as safetensors (a torch.save
    state_dict for .pt, .pth and .bin). Files are written atomically: a failure leaves no partial file.
    """
    if with_past and emit_python_to is None:
        fail("--with-past adds methods to the --emit-python file; give --emit-python FILE too", 2)
    if emit_python_to is not None:
        check_output(emit_python_to, (".py",), [spec, weights_to], "--emit-python")  # before anything is built
    if weights_to is not None:
        check_output(weights_to, WEIGHT_SUFFIXES, [spec, emit_python_to], "--weights")
    loaded, graph = load_graph(spec, sets, signature, limits)
    import torch

    from . import LoweringError, emit_python, save_weights, to_torch

    try:  # build everything first: a node that cannot be lowered leaves no file behind
        if seed is not None:
            torch.manual_seed(seed)
        with progress.initialising(4 * param_count(graph), progress.enabled(as_json) and weights_to is not None):
            model = to_torch(loaded, signature, device=None if weights_to else "meta")
        source = emit_python(loaded, signature, with_past=with_past) if emit_python_to is not None else None
    except LoweringError as exc:
        fail(str(exc))
    if emit_python_to is not None and weights_to is not None and Path(emit_python_to) == Path(weights_to):
        fail(f"--emit-python and --weights both name '{emit_python_to}'; give two files", 2)
    if emit_python_to is not None and source is not None:
        write_text_atomic(emit_python_to, source, (".py",), [spec, weights_to])
    if weights_to is not None:
        as_torch = Path(weights_to).suffix.lower() in TORCH_SUFFIXES
        with atomic_output(weights_to, WEIGHT_SUFFIXES, [spec, emit_python_to], "--weights") as tmp:
            total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            with progress.writing(tmp, total, "writing weights", progress.enabled(as_json)):
                save_weights(model, tmp, metadata={"spec": loaded.name, "signature": signature},
                             file_format="torch" if as_torch else "safetensors")
    params = sum(p.numel() for p in model.parameters())
    tensors = len(model.state_dict())
    what = loaded.name if signature is None else f"{loaded.name} (signature {signature})"
    if as_json:
        emit({"name": loaded.name, "signature": signature, "tensors": tensors, "params": params,
              "signatures": list(model.signatures), "wrote": [p for p in (emit_python_to, weights_to) if p is not None]})
        return
    sigs = f"; signatures: {', '.join(model.signatures)}" if model.signatures else ""
    click.echo(f"built {what}: {tensors} tensors, {params:,} parameters{sigs}")
    for path, label in ((emit_python_to, "source"), (weights_to, "weights")):
        if path is not None:
            click.echo(f"wrote {label} to {path}")
