"""``nnspec generate``: token ids in, token ids out, streamed, in onnxruntime.

A SPEC is exported in memory as its key/value-cache signature (``with_past``, derived from
its causal self-attention; the main graph where it has none); an .onnx file is run as it is
(a ``with_past`` export runs with its cache, any other decoder-only model is fed the prefix).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from nnspec.backends.clikit import fail, limit_option, load_graph, set_option
from nnspec.backends.jsonout import emit, json_output

if TYPE_CHECKING:
    import numpy as np

__all__ = ["generate_command"]


def _ids(text: str, what: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated token ids such as 1,2,3, got {text!r}", param_hint=what) from None
    if not ids or any(i < 0 for i in ids):
        raise click.BadParameter(f"expected one or more non-negative token ids, got {text!r}", param_hint=what)
    return ids


def _model(source: str, weights: str | None, seed: int, sets: tuple[str, ...], limits: tuple[str, ...],
           no_cache: bool) -> Any:
    """The model to run: an .onnx path as is, or the spec exported (its cache signature where it has one)."""
    if source.endswith(".onnx"):
        if sets or weights or limits:
            raise click.UsageError("--set, --limit and --weights apply to a spec, not to an .onnx file")
        return source
    from nnspec.builder import compile_graph
    from nnspec.builder.kv_cache import CacheError, with_kv_cache

    from .commands import _prepare
    from .export import assemble

    spec, graph = load_graph(source, sets, None, limits)
    if any(sig == "encode" for sig in spec.signatures):
        fail(f"'{source}' is an encoder-decoder; `nnspec generate` runs decoder-only models (use the Python "
             "API's generate with source ids)")
    if not no_cache:
        try:
            graph = with_kv_cache(graph)
        except CacheError:
            graph = compile_graph(spec)  # no causal self-attention: the prefix is fed each step
    return assemble(*_prepare(graph, weights, None, seed, False, False))


@click.command("generate")
@click.argument("model", metavar="SPEC|MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("--prompt-ids", "prompts", multiple=True, required=True, metavar="1,2,3",
              help="The prompt's token ids; repeat for a batch of prompts (left-padded).")
@click.option("--max-new-tokens", type=click.IntRange(0, 1_000_000), default=32, show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="For a SPEC: weights keyed like the PyTorch state_dict (default: initialised from --seed).")
@click.option("--temperature", type=click.FloatRange(0), default=0.0, show_default=True,
              help="0 picks the most likely token; above 0 samples.")
@click.option("--top-k", type=click.IntRange(1), default=None, help="Sample among the k most likely tokens.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Sample among the most likely tokens that reach probability p together.")
@click.option("--stop-token", "stops", multiple=True, type=click.IntRange(0), help="Stop a row at this id (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the weights (a SPEC without --weights) and sampling.")
@click.option("--no-cache", is_flag=True, help="Feed the whole prefix every step (no key/value cache).")
@set_option
@limit_option
@json_output
def generate_command(model: str, prompts: tuple[str, ...], max_new_tokens: int, weights: str | None,
                     temperature: float, top_k: int | None, top_p: float | None, stops: tuple[int, ...], seed: int,
                     no_cache: bool, sets: tuple[str, ...], limits: tuple[str, ...], as_json: bool) -> None:
    """Continue token ids with SPEC (exported on the fly) or MODEL.onnx in onnxruntime.

    Prints the new ids as they come (one prompt: on one line; several: one line per step),
    then the speed on stderr. No tokenizer: ids in, ids out.
    """
    from .generate import OnnxSignature, generate_onnx

    batch = [_ids(p, "--prompt-ids") for p in prompts]
    source = _model(model, weights, seed, sets, limits, no_cache)
    stream = None if as_json else _printer(len(batch))
    try:
        loaded = OnnxSignature(source)
        start = time.perf_counter()  # the speed of generation, not of loading the model
        tokens = generate_onnx(loaded, prompt=batch, max_new_tokens=max_new_tokens, stop_tokens=stops,
                               temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, on_token=stream,
                               use_cache=not no_cache)
    except (ValueError, OSError) as exc:
        fail(f"cannot generate with '{model}': {exc}")
    except Exception as exc:
        if isinstance(source, str) and type(exc).__module__.startswith(("onnxruntime", "google.protobuf", "onnx")):
            fail(f"onnxruntime cannot run '{model}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        raise
    seconds = time.perf_counter() - start
    new = tokens[:, max(len(p) for p in batch):]  # (batch, n) the new ids
    _report(batch, new, seconds, as_json)


def _printer(rows: int) -> Any:
    def show(choice: np.ndarray) -> None:
        text = " ".join(str(int(t)) for t in choice)
        sys.stdout.write(f"{text} " if rows == 1 else f"{text}\n")
        sys.stdout.flush()

    return show


def _report(batch: Sequence[list[int]], new: np.ndarray, seconds: float, as_json: bool) -> None:
    count = int(new.size)
    rate = count / seconds if seconds > 0 else float("inf")
    if as_json:
        emit({"prompts": list(batch), "new_ids": new.tolist(), "new_tokens": count, "seconds": round(seconds, 4),
              "tokens_per_second": round(rate, 2)})
        return
    if len(batch) == 1:
        click.echo()
    click.echo(f"{count} tokens in {seconds:.2f} s: {rate:.1f} tokens/s", err=True)
