"""Graphviz layout within a time budget.

``dot`` ranks, orders and routes a graph with network simplex and crossing minimisation, which
can run for minutes on a dense graph (150 nodes with a few inputs each: over two minutes).
Everything one render lays out shares one budget (`Limits.max_layout_seconds`, raised with
``--limit max_layout_seconds=N``), spent down a ladder of layouts (`LAYOUTS`): ``dot``'s full
layout gets half of what is left; if it runs out, a cheaper ``dot`` layout (straight edges, one
pass of each optimisation) half of the rest; then ``sfdp``'s force-directed one (no ranks, no
clusters; a second for 300 dense nodes) all that remains. Each fallback leaves a note, and the
drawings after it start where it ended. When the last runs out too, `LayoutTimeout`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from nnspec.builder.limits import DEFAULT_LIMITS

__all__ = ["LAYOUTS", "GraphvizNotFound", "Layout", "LayoutBudget", "LayoutTimeout", "dot_program", "layout_budget",
           "run_dot"]

@dataclass(frozen=True)
class Layout:
    """One rung of the ladder: what the note calls it, the options for ``dot``, and its share of the time left."""

    name: str
    options: tuple[str, ...]
    share: float


LAYOUTS = (
    Layout("full layout", (), 0.5),
    Layout("cheaper dot layout (straight edges, fewer crossings removed)",
           ("-Gsplines=line", "-Gnslimit=0.1", "-Gnslimit1=0.1", "-Gmclimit=0.01", "-Gsearchsize=1",
            "-Gremincross=false"), 0.5),
    Layout("force-directed layout (sfdp: no ranks, blocks not boxed)", ("-Ksfdp", "-Gsplines=line", "-Goverlap=prism"),
           1.0),
)
"""The layouts tried in turn: network simplex and crossing minimisation cut to a tenth of an iteration
and a hundredth of their passes, then no ranking at all."""

INSTALL_HINT = ("install Graphviz: `apt-get install graphviz` (Debian, Ubuntu), `brew install graphviz` (macOS), "
                "`conda install graphviz`, or see https://graphviz.org/download/")


class GraphvizNotFound(RuntimeError):
    """Graphviz's ``dot`` program is not on PATH, and the format needs it."""


class LayoutTimeout(RuntimeError):
    """Even the cheaper layout did not finish within the budget."""


@dataclass
class LayoutBudget:
    """The seconds every layout of one render may take together, and what was given up to keep to them.

    Attributes:
        seconds: the whole budget.
        notes: one line for each fallback to a cheaper layout (for stderr, or ``--json``'s ``notes``).
        rung: the index in `LAYOUTS` the next layout starts at (past the ones that ran out).
    """

    seconds: float = DEFAULT_LIMITS.max_layout_seconds
    notes: list[str] = field(default_factory=list)
    rung: int = 0
    _deadline: float | None = field(default=None, repr=False)

    def left(self) -> float:
        """Seconds left, never below zero; the clock starts at the first layout."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.seconds
        return max(0.0, self._deadline - time.monotonic())


_CURRENT: ContextVar[LayoutBudget | None] = ContextVar("nnspec_layout_budget", default=None)


@contextmanager
def layout_budget(budget: LayoutBudget) -> Iterator[LayoutBudget]:
    """Make `budget` the one that `run_dot` calls without their own share, within the block (one render)."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def dot_program(suffix: str = ".svg") -> str:
    """The path of Graphviz's ``dot`` program.

    Raises:
        GraphvizNotFound: when ``dot`` is not on PATH; the message says how to install it.
    """
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizNotFound(
            f"writing {suffix} needs Graphviz's `dot` program, which is not on PATH; {INSTALL_HINT}. "
            "(.dot and .mmd files are written without it.)")
    return exe


def run_dot(source: str, fmt: str, budget: LayoutBudget | None = None) -> bytes:
    """Lay out DOT `source` with ``dot -T<fmt>`` within `budget` (default: the current render's, else a
    fresh one of `Limits.max_layout_seconds`) and return what it writes.

    Raises:
        GraphvizNotFound: without ``dot``.
        LayoutTimeout: when the last of `LAYOUTS` runs past the budget too.
        RuntimeError: when ``dot`` fails (its message included).
    """
    budget = budget or _CURRENT.get() or LayoutBudget()
    exe = dot_program(f".{fmt}")
    given_up: list[str] = []
    while budget.rung < len(LAYOUTS):
        layout = LAYOUTS[budget.rung]
        seconds = budget.left() * layout.share
        proc = _dot([exe, f"-T{fmt}", *layout.options], source, seconds)
        if proc is not None:
            if given_up:
                budget.notes.append(f"Graphviz ran out of time for the {' and the '.join(given_up)}, so the diagram "
                                    f"has the {layout.name}; give it more with --limit max_layout_seconds=N (now "
                                    f"{budget.seconds:g} s)")
            return _output(proc, fmt)
        given_up.append(f"{layout.name.split(' (')[0]} ({seconds:.2g} s)")
        budget.rung += 1
    raise LayoutTimeout(f"Graphviz took more than {budget.seconds:g} s (--limit max_layout_seconds) to lay out this "
                        "diagram, the cheaper layouts included; draw it folded (--depth 0 or 1), or write .dot or "
                        ".mmd, which need no layout")


def _dot(command: list[str], source: str, seconds: float) -> subprocess.CompletedProcess[bytes] | None:
    """Run ``dot``; None when it runs past `seconds` (it is killed)."""
    if seconds <= 0:
        return None
    try:
        return subprocess.run(command, input=source.encode("utf-8"), capture_output=True, timeout=seconds, check=False)
    except subprocess.TimeoutExpired:
        return None


def _output(proc: subprocess.CompletedProcess[bytes], fmt: str) -> bytes:
    if proc.returncode != 0:
        raise RuntimeError(f"Graphviz `dot -T{fmt}` failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode('utf-8', 'replace').strip()}")
    return bytes(proc.stdout)
