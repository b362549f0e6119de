"""The output of ``nnspec summary``: a table like torchinfo's and Keras' (node, op, output shape,
dtype, parameters, multiply-adds), then the totals, symbolic in the spec's dims until ``--dim``
gives them sizes. Imports neither torch nor onnx.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence

import click
import networkx as nx
import sympy

from nnspec.builder.dims import dim_names, unknown_dims
from nnspec.builder.summary import Row, summary_rows, totals, value

__all__ = ["parse_dims", "print_summary", "summary_json"]


def parse_dims(items: Sequence[str], g: nx.MultiDiGraph) -> dict[str, int]:
    """``--dim NAME=SIZE`` options, each a symbolic dim of the graph's inputs (else a usage error)."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, size = item.partition("=")
        if not sep or not name.strip() or not size.strip().isdigit() or int(size) < 1:
            raise click.UsageError(f"--dim expects NAME=SIZE with a positive SIZE, got '{item}'")
        out[name.strip()] = int(size)
    problems = unknown_dims(out, dim_names(g))
    if problems:
        raise click.UsageError(f"--dim: {'; '.join(problems)}")
    return out


def summary_json(name: str, signature: str | None, g: nx.MultiDiGraph, depth: int | None,
                 sizes: Mapping[str, int]) -> dict[str, object]:
    """The summary as JSON data: counts are integers, or expressions (text) over dims without a size."""
    return {"name": name, "signature": signature, "sizes": dict(sizes), "dims": dim_names(g),
            **totals(g).to_json(sizes), "nodes": [r.to_json(sizes) for r in summary_rows(g, depth)]}


def _text(expr: sympy.Expr, sizes: Mapping[str, int]) -> str:
    """A count for people: ``423,038·batch``, or ``0.42 M`` once every dim has a size."""
    got = value(expr, sizes)
    if isinstance(got, int):
        return _human(got)
    return re.sub(r"\d{4,}", lambda m: f"{int(m.group()):,}", got.replace("**", "^").replace("*", "·"))


def _human(n: int) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:,}"


def _bytes(expr: sympy.Expr, sizes: Mapping[str, int]) -> str:
    got = value(expr, sizes)
    if not isinstance(got, int):
        return f"{_text(expr, sizes)} bytes"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if got >= scale:
            return f"{got / scale:,.1f} {unit}"
    return f"{got:,} bytes"


def _row_cells(r: Row, sizes: Mapping[str, int]) -> tuple[str, str, str, str, str, str]:
    op = f"{r.op} ×{r.repeat}" if r.repeat else r.op
    dtypes = ", ".join(dict.fromkeys(d for _, _, d in r.outputs))
    params = f"{r.params:,}" if r.params else ("tied" if r.tied else "-")
    macs = _text(r.macs, sizes) if r.macs != 0 else "-"
    return "  " * r.depth + r.id, op, r.shape, dtypes, params, macs


def print_summary(name: str, signature: str | None, g: nx.MultiDiGraph, depth: int | None,
                  sizes: Mapping[str, int]) -> None:
    """Print the table and the totals with rich (plain text when piped)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{name}{f' [{signature}]' if signature else ''}", title_justify="left")
    for column, justify in (("node", "left"), ("op", "left"), ("output shape", "left"), ("dtype", "left"),
                            ("params", "right"), ("mult-adds", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in summary_rows(g, depth):
        table.add_row(*(Text(cell) for cell in _row_cells(r, sizes)))
    console = Console(width=max(100, min(200, shutil.get_terminal_size((160, 24)).columns)), highlight=False)
    console.print(table)
    t = totals(g)
    console.print(f"total parameters: {t.params:,} ({t.params * 4 / 2**20:,.1f} MiB in float32)", markup=False)
    console.print(f"trainable: {t.params:,}; non-trainable (fixed buffers): {t.buffers:,}", markup=False)
    given = ", ".join(f"{k}={v}" for k, v in sizes.items())
    at = f" at {given}" if given else ""
    console.print(f"multiply-adds{at}: {_text(t.macs, sizes)}", markup=False)
    console.print(f"activations{at}: {_bytes(t.activations, sizes)} (outputs of every node, forward); "
                  f"inputs: {_bytes(t.inputs, sizes)}", markup=False)
