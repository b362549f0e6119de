"""``nnspec import-weights``: a foreign checkpoint, through a weight map, to the spec's safetensors weights.

torch is imported inside the command, so that other commands start without it.
"""

from __future__ import annotations

from pathlib import Path

import click

from nnspec.backends.clikit import atomic_output, fail, limit_option, load_graph, set_option, signature_option

__all__ = ["import_weights_command"]


@click.command("import-weights")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--map", "map_path", required=True, type=click.Path(dir_okay=False), metavar="MAP.yaml",
              help="The weight map: checkpoint names to the spec's weights (see specs/maps/).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="FILE.safetensors",
              help="The weights file to write (safetensors, keyed by the spec's node ids).")
@click.option("--allow-missing", is_flag=True, help="Leave out spec weights the checkpoint does not give (listed).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="Cast floating-point weights (default: keep the checkpoint's dtype).")
@set_option
@signature_option
@limit_option
def import_weights_command(spec: str, checkpoint: str, map_path: str, output: str, allow_missing: bool,
                           dtype: str | None, sets: tuple[str, ...], signature: str | None, limits: tuple[str, ...]) -> None:
    """Import CHECKPOINT's weights into SPEC through a weight map.

    CHECKPOINT is a safetensors file, a sharded safetensors index (.json), or a PyTorch
    .bin/.pt state_dict (read with torch.load(weights_only=True): tensors only, never arbitrary
    objects). Every checkpoint tensor must be used, dropped or tied by the map, and every spec
    weight given; the errors name each key. The output is written only when all of it fits.
    """
    if not output.endswith(".safetensors"):
        raise click.UsageError(f"-o/--output writes safetensors; name it FILE.safetensors, not '{output}'")
    loaded, _ = load_graph(spec, sets, signature, limits)
    from nnspec.backends.pytorch import save_weights

    from . import CheckpointError, MapError, WeightImportError, import_weights

    try:
        result = import_weights(loaded, checkpoint, map_path, allow_missing=allow_missing, dtype=dtype,
                                signature=signature)
    except (CheckpointError, MapError, WeightImportError) as exc:
        fail(str(exc))
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if result.missing:
        click.echo(f"note: {len(result.missing)} spec weight(s) left out (--allow-missing): "
                   f"{', '.join(result.missing[:8])}{', ...' if len(result.missing) > 8 else ''}", err=True)
    with atomic_output(Path(output)) as tmp:
        save_weights(result.state_dict, tmp, metadata={"spec": loaded.name, "imported_from": Path(checkpoint).name,
                                                       "map": Path(map_path).name})
    count = sum(t.numel() for t in result.state_dict.values())
    click.echo(f"wrote {output}: {len(result.state_dict)} tensors, {count:,} parameters from {checkpoint}", err=True)
