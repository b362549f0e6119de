"""``nnspec render``: draw a spec to a file, the format picked by the suffix."""

from __future__ import annotations

from pathlib import Path

import click

from nnspec.backends.clikit import fail, limit_option, load_graph, parse_limits, set_option, signature_option
from nnspec.backends.jsonout import emit, json_output

from .view import ALL, Depth

__all__ = ["render"]


def _depth(ctx: click.Context, param: click.Parameter, value: str | None) -> Depth:
    if value is None:
        return None
    if value == ALL:
        return ALL
    try:
        level = int(value)
    except ValueError:
        level = -1
    if level < 0:
        raise click.BadParameter(f"expected a level (0, 1, ...) or 'all', got '{value}'")
    return level


@click.command("render")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="The file to write; its suffix picks the format: .svg .png .pdf .dot .mmd .html (a viewer).")
@click.option("--depth", callback=_depth, default=None, metavar="N|all",
              help="Draw block calls open down to level N and fold deeper ones into one node each "
                   "(0: every top-level call is one node). Default: the deepest level that stays legible.")
@click.option("--rankdir", type=click.Choice(["TB", "LR"], case_sensitive=False), default="TB", show_default=True,
              help="Top to bottom, or left to right (for long sequential nets).")
@click.option("--unroll", is_flag=True, help="Draw every copy of a repeated block, not one copy marked N×.")
@click.option("--no-shapes", is_flag=True, help="Leave tensor shapes off the edges and nodes.")
@click.option("--no-params", is_flag=True, help="Leave parameter counts off.")
@set_option
@signature_option
@limit_option
@json_output
def render(spec: str, output: str, depth: Depth, rankdir: str, unroll: bool, no_shapes: bool, no_params: bool,
           sets: tuple[str, ...], signature: str | None, limits: tuple[str, ...], as_json: bool = False) -> None:
    """Draw SPEC into FILE: blocks as clusters, shapes on the edges, a colour per op family.

    .dot and .mmd need nothing else; .svg, .png, .pdf and .html are laid out by Graphviz's
    `dot` program. The .html page is a self-contained viewer (no network): pan, zoom and fit,
    search by node id or op, blocks folded and opened one by one with a click, each node's details.
    """
    from .render import FORMATS, NEEDS_DOT, GraphvizNotFound, LayoutBudget, dot_program
    from .render import render as render_file

    suffix = Path(output).suffix.lower()
    if suffix not in FORMATS:
        raise click.BadParameter(f"'{Path(output).name}' has no known suffix; use one of {', '.join(FORMATS)}",
                                 param_hint="'-o' / '--output'")
    try:
        if suffix in NEEDS_DOT:
            dot_program(suffix)  # before the spec is read: fail fast, write nothing
        _, graph = load_graph(spec, sets, signature, limits)
        layout = LayoutBudget(parse_limits(limits).max_layout_seconds)
        path = render_file(graph, output, depth, "LR" if rankdir.upper() == "LR" else "TB", not no_shapes,
                           not no_params, unroll=unroll, layout=layout)
    except (GraphvizNotFound, RuntimeError, ValueError) as exc:  # LayoutTimeout is a RuntimeError
        fail(str(exc))
    for note in layout.notes:
        click.echo(f"note: {note}", err=True)
    emit({"wrote": [str(path)], "format": FORMATS[suffix], "notes": layout.notes})
    click.echo(f"wrote {path} ({FORMATS[suffix]})", err=True)
