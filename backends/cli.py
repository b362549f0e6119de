"""The `nnspec` command line.

Exit status: 0 on success, 1 for a bad spec (every problem printed with file:line:col and
node), 2 for bad command-line usage. A user error never shows a traceback; an unexpected
internal failure says it is a bug, and no command leaves a half-written output file.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import traceback
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

import click

from nnspec.builder import OPS, PluginError, SpecError, check_spec, compile_graph, load_spec, param_count, plugin_of
from nnspec.builder.errors import did_you_mean
from nnspec.builder.ops import FAMILIES
from nnspec.builder.text import printable

from .clikit import (
    limit_option,
    load_graph,
    load_plugins_or_exit,
    parse_limits,
    parse_overrides,
    plugin_option,
    print_diagnostics,
    set_option,
    signature_option,
    spec_source,
    write_text_atomic,
)
from .jsonout import emit, emit_parse_error, json_output

ISSUES_URL = "https://github.com/nnspec/nnspec/issues"


class _LazyGroup(click.Group):
    """A group whose back-end commands are imported only when run (or listed by --help), so that
    `nnspec validate` never pays for importing torch or onnx."""

    LAZY: ClassVar[dict[str, str]] = {
        "build": "nnspec.backends.pytorch.commands:build",
        "export": "nnspec.backends.onnx.commands:export",
        "run": "nnspec.backends.onnx.commands:run",
        "check": "nnspec.backends.onnx.commands:check",
        "generate": "nnspec.backends.onnx.generate_command:generate_command",
        "render": "nnspec.backends.graphviz.commands:render",
        "import-weights": "nnspec.backends.weightmap.commands:import_weights_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        available = [name for name, target in self.LAZY.items() if _importable(target.partition(":")[0])]
        return sorted([*super().list_commands(ctx), *available])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and _importable(self.LAZY[cmd_name].partition(":")[0]):
            module, _, attr = self.LAZY[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            return _with_plugin_option(command)
        command = super().get_command(ctx, cmd_name)
        return None if command is None else _with_plugin_option(command)


def _with_plugin_option(command: click.Command) -> click.Command:
    """Give a command the global ``--plugin`` option (once): every command reads specs or lists ops."""
    if not any(p.name == "plugins" for p in command.params):
        plugin_option(command)
    return command


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="nnspec")
@plugin_option
def cli() -> None:
    """nnspec: declarative neural networks.

    Write an architecture once as a YAML or JSON spec; validate it, inspect its shapes and
    parameters, build it as a PyTorch module, export it to ONNX, and draw it.
    """
    load_plugins_or_exit()  # installed plugins and NNSPEC_PLUGINS, before any command reads a spec


@cli.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@set_option
@signature_option
@limit_option
@json_output
def validate(specs: tuple[str, ...], sets: tuple[str, ...], signature: str | None, limits: tuple[str, ...],
             as_json: bool) -> None:
    """Check SPECS (and every signature in them): structure, wiring and shapes.

    Prints every problem with file:line:col and the node; exits 1 if any spec has an error.
    With --signature, each spec must declare it, and its nodes and parameters are reported.
    """
    results = []
    failed = False
    for path in specs:
        try:
            spec = load_spec(spec_source(path), parse_overrides(sets), parse_limits(limits))
            if signature is not None and signature not in spec.signatures:
                compile_graph(spec, signature)  # raises: no such signature, with did-you-mean
            graphs, warnings = check_spec(spec)
        except SpecError as exc:
            failed = True
            results.append({"file": path, "ok": False, "diagnostics": [d.to_json() for d in exc.diagnostics]})
            if not as_json:
                print_diagnostics(exc.diagnostics)
            continue
        main = graphs[signature]
        results.append({"file": path, "ok": True, "name": spec.name, "nodes": len(main), "params": param_count(main),
                        "signatures": list(spec.signatures), "diagnostics": [d.to_json() for d in warnings]})
        if not as_json:
            print_diagnostics(warnings)
            sigs = f", signatures: {', '.join(spec.signatures)}" if spec.signatures else ""
            which = spec.name if signature is None else f"{spec.name} [{signature}]"
            click.echo(f"ok  {path}: {which}, {len(main)} nodes, {param_count(main):,} parameters{sigs}")
    if as_json:
        emit({"files": results}, ok=not failed)
    sys.exit(1 if failed else 0)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--depth", type=click.IntRange(min=0), default=None,
              help="Fold block calls nested deeper than N into one row (0: every top-level block call).")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="Size of a symbolic dim for the counts (repeatable), e.g. --dim batch=1 --dim seq=128.")
@set_option
@signature_option
@limit_option
@json_output
def summary(spec: str, depth: int | None, dims: tuple[str, ...], sets: tuple[str, ...], signature: str | None,
            limits: tuple[str, ...], as_json: bool) -> None:
    """Print SPEC's nodes with op, output shape, dtype, parameters and multiply-adds, and the totals
    (trainable and fixed, multiply-adds, activation memory), symbolic until --dim sizes them."""
    from .summary_command import parse_dims, print_summary, summary_json

    loaded, g = load_graph(spec, sets, signature, limits, as_json)
    sizes = parse_dims(dims, g)
    if as_json:
        emit(summary_json(loaded.name, signature, g, depth, sizes))
        return
    print_summary(loaded.name, signature, g, depth, sizes)


@cli.command()
@click.argument("names", nargs=-1, metavar="[OP]...")
@json_output
def ops(names: tuple[str, ...], as_json: bool) -> None:
    """List every op (or the OPs named) with its family, arguments and doc.

    Required arguments come first, as in a Python signature; naming an op shows each argument's
    type, default and description.
    """
    unknown = [n for n in names if n not in OPS]
    if unknown:
        hints = "".join(f"; {h}" for n in unknown[:1] for h in did_you_mean(n, OPS))
        raise click.UsageError(f"no op named {', '.join(repr(n) for n in unknown)}{hints}")
    entries: list[dict[str, Any]] = []
    for name in names or sorted(OPS):
        cls = OPS[name]
        args: list[dict[str, Any]] = []
        for key, field in cls.arg_fields().items():
            args.append({"name": key, "type": _type_name(field.annotation), "required": field.is_required(),
                         "default": None if field.is_required() else repr(field.default),
                         "description": field.description})
        args.sort(key=lambda a: not a["required"])  # stable: required first, each group in declaration order
        ports = "any number" if cls.INPUTS == ("*",) else ", ".join(
            f"{p}?" if p in cls.OPTIONAL else p for p in cls.INPUTS)
        entries.append({"op": name, "family": cls.FAMILY, "inputs": ports, "outputs": list(cls.OUTPUTS),
                        "args": args, "doc": cls.summary(), "plugin": plugin_of(name)})
    if as_json:
        emit({"ops": entries})
        return
    if names:
        for e in entries:
            _show_op(e)
        return
    for family in FAMILIES:
        group = [e for e in entries if e["family"] == family]
        if not group:
            continue
        click.secho(f"{family}", bold=True)
        for e in group:
            sig = ", ".join(a["name"] if a["required"] else f"{a['name']}={a['default']}" for a in e["args"])
            origin = f"  (plugin {e['plugin']})" if e["plugin"] else ""
            click.echo(f"  {e['op']}({sig})  in: {e['inputs']}{origin}")
            click.echo(f"      {e['doc']}")


def _show_op(e: dict[str, Any]) -> None:
    """One op in full: its signature, ports, doc and every argument."""
    sig = ", ".join(a["name"] if a["required"] else f"{a['name']}={a['default']}" for a in e["args"])
    origin = f", plugin {e['plugin']}" if e["plugin"] else ""
    click.secho(f"{e['op']}({sig})", bold=True)
    click.echo(f"  family: {e['family']}{origin}; in: {e['inputs']}; out: {', '.join(e['outputs'])}")
    click.echo(f"  {e['doc']}")
    for a in e["args"]:
        what = "required" if a["required"] else f"default {a['default']}"
        about = f"  {a['description']}" if a["description"] else ""
        click.echo(f"    {a['name']}: {a['type']} ({what}){about}")


def _type_name(ann: Any) -> str:
    """An argument's type as a reader writes it: ``int | tuple[int, int]``, ``'same' | 'valid'``."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(_type_name(a) for a in args))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write to FILE instead of stdout.")
def schema(output: str | None) -> None:
    """Print the JSON Schema of spec files (for editor completion and checking)."""
    from nnspec.builder.schema import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if output:
        write_text_atomic(output, text, (".json",))
    else:
        click.echo(text, nl=False)


def main() -> None:
    """Entry point: run the CLI; an unexpected exception is reported as a bug, without a traceback."""
    from .outputs import install_signal_cleanup

    install_signal_cleanup()  # SIGTERM and SIGHUP remove temporary files, as SIGINT does
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        vars(exc)["message"] = printable(exc.message)  # it may quote a --set value or a file name
        emit_parse_error(exc, sys.argv[1:], cli.list_commands(click.Context(cli)))
        exc.show()
        sys.exit(exc.exit_code)
    except SpecError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last line of defence: a bug, reported as one
        user = _user_error(exc)
        if user is not None:
            click.echo(f"error: {printable(user)}", err=True)
            sys.exit(1)
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        click.echo(f"internal error: {type(exc).__name__}: {printable(str(exc))}\n"
                   f"  at {Path(frame.filename).name}:{frame.lineno}\n"
                   f"This is a bug in nnspec, not in your spec; please report it at {ISSUES_URL} "
                   "with the command and the spec. No output was written.", err=True)
        sys.exit(3)


def _user_error(exc: BaseException) -> str | None:
    """The message of a fault in the input anywhere in the chain of `exc`: a plugin that fails, an op
    without a lowering, a spec a backend cannot express. Backends wrap it with the node it stopped at,
    but it is not nnspec's bug."""
    from .outputs import InputFileError, OutputError
    from .table import LoweringError, MissingLoweringError

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, MemoryError):  # an input that asks for more than the machine has
            return f"out of memory ({printable(str(cur)) or 'an allocation failed'}); the input is too large for this machine"
        if isinstance(cur, PluginError | MissingLoweringError | LoweringError | InputFileError | OutputError):
            return str(exc) if str(cur) in str(exc) else str(cur)  # the outer one adds the node
        cur = cur.__cause__ or cur.__context__
    return None


if __name__ == "__main__":
    main()
