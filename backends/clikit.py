"""Shared pieces of the `nnspec` command line: spec loading that reports errors and exits 1,
the ``--set`` option, and atomic output files (never half-written, never a good file replaced
by a broken one).

Command modules import torch and onnx inside their functions, never at import time, so that
``nnspec validate`` starts fast.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
import networkx as nx

from nnspec.builder import Diagnostic, Limits, PluginError, Spec, SpecError, check_spec, compile_graph, load_plugins, load_spec
from nnspec.builder.params import parse_override
from nnspec.builder.text import printable

from . import jsonout, outputs

__all__ = [
    "atomic_output", "check_output", "fail",
    "json_option", "limit_option", "load_graph", "load_or_exit", "parse_limits", "parse_overrides",
    "load_plugins_or_exit", "plugin_option", "print_diagnostics",
    "set_option", "signature_option", "spec_source", "write_text_atomic",
]

set_option = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE",
    help="Override a param of the spec (repeatable), e.g. --set d_model=256.")
limit_option = click.option(
    "--limit", "limits", multiple=True, metavar="NAME=N",
    help="Raise a resource limit (repeatable), e.g. --limit max_nodes=1000000.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
signature_option = click.option("--signature", default=None, metavar="NAME",
                                help="Use this signature of the spec instead of the main graph.")


def load_plugins_or_exit(modules: Sequence[str] = ()) -> None:
    """Load the installed plugins, those of ``NNSPEC_PLUGINS`` and `modules`; a broken one exits 1."""
    try:
        load_plugins(modules)
    except PluginError as exc:
        fail(str(exc))


def _plugin_callback(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> None:
    if value and not ctx.resilient_parsing:
        load_plugins_or_exit(value)


plugin_option = click.option(
    "--plugin", "plugins", multiple=True, metavar="MODULE", expose_value=False, is_eager=True, callback=_plugin_callback,
    help="Load an op plugin before reading the spec: a module name or a .py file (repeatable); "
         "NNSPEC_PLUGINS=mod1,mod2 does the same, and installed plugins (entry points nnspec.ops) always load.")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line to stderr and exit (with --json, the error is in the JSON document too)."""
    jsonout.record_error(message, code)
    click.echo(f"error: {printable(message)}", err=True)
    sys.exit(code)


def print_diagnostics(diags: Sequence[Diagnostic], as_json: bool = False) -> None:
    """Print diagnostics to stderr; with --json they go into the run's JSON document as well
    (`as_json` is kept for callers; the document is `nnspec.backends.jsonout`'s)."""
    jsonout.record(diags)
    for d in diags:
        click.secho(str(d), err=True, fg="red" if d.severity == "error" else "yellow")


def parse_overrides(sets: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in sets:
        try:
            key, value = parse_override(item)
        except ValueError as exc:
            raise click.UsageError(f"--set {exc}") from None
        out[key] = value
    return out


def parse_limits(items: Sequence[str]) -> Limits:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--limit expects NAME=N, got '{item}'")
        pairs[key.strip()] = value.strip()
    try:
        return Limits().with_overrides(pairs)
    except ValueError as exc:
        raise click.UsageError(f"--limit: {exc}") from None


def spec_source(path: str) -> Path | str:
    """What `load_spec` reads for a SPEC argument: the file, or for ``-`` the text on stdin."""
    if path != "-":
        return Path(path)
    text = sys.stdin.read()
    if not text.strip():
        fail("no spec on stdin ('-' reads the spec from stdin)")
    return text if "\n" in text else text + "\n"  # one line of text is text, not a file name


def load_or_exit(path: str, sets: Sequence[str] = (), limits: Sequence[str] = (), as_json: bool = False) -> Spec:
    """Load a spec for a command; on errors print them (with positions) and exit 1."""
    try:
        return load_spec(spec_source(path), parse_overrides(sets), parse_limits(limits))
    except SpecError as exc:
        print_diagnostics(exc.diagnostics, as_json)
        sys.exit(1)


def load_graph(path: str, sets: Sequence[str] = (), signature: str | None = None, limits: Sequence[str] = (),
               as_json: bool = False, show_warnings: bool = True) -> tuple[Spec, nx.MultiDiGraph]:
    """Load and check a whole spec, and return its main graph (or one signature); on errors print
    them and exit 1. A broken signature fails every command, as it fails `validate`."""
    spec = load_or_exit(path, sets, limits, as_json)
    try:
        derived = None
        if signature is not None and signature not in spec.signatures:
            # raises: no such signature, with did-you-mean; or a derived one (with_past) that cannot be built
            derived = compile_graph(spec, signature)
        graphs, warnings = check_spec(spec)
    except SpecError as exc:
        print_diagnostics(exc.diagnostics, as_json)
        sys.exit(1)
    graph = graphs[signature] if derived is None else derived
    if show_warnings and not as_json:
        print_diagnostics(warnings)
    return spec, graph


def check_output(path: str | Path, suffixes: Sequence[str] = (), inputs: Sequence[str | Path | None] = (),
                 what: str = "output") -> None:
    """Refuse an output path before the work that fills it (the policy of `nnspec.backends.outputs`)."""
    try:
        outputs.resolve_output(path, suffixes, inputs, what)
    except outputs.OutputError as exc:
        fail(str(exc), exc.exit_code)


@contextlib.contextmanager
def atomic_output(path: str | Path, suffixes: Sequence[str] = (), inputs: Sequence[str | Path | None] = (),
                  what: str = "output") -> Iterator[Path]:
    """`nnspec.backends.outputs.atomic_output` for a command: a refused path or write exits 1 (2 for usage).

    >>> with atomic_output("model.onnx", (".onnx",), inputs=[spec]) as tmp:
    ...     onnx.save(model, tmp)
    """
    try:
        with outputs.atomic_output(path, suffixes, inputs, what) as tmp:
            yield tmp
    except outputs.OutputError as exc:
        fail(str(exc), exc.exit_code)


def write_text_atomic(path: str | Path, text: str, suffixes: Sequence[str] = (),
                      inputs: Sequence[str | Path | None] = ()) -> None:
    with atomic_output(path, suffixes, inputs) as tmp:
        tmp.write_text(text, encoding="utf-8")
