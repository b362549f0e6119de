"""Diagnostics: every problem in a spec is a `Diagnostic` naming file, line, column and node.

A diagnostic renders as one header line plus optional hint lines::

    specs/lenet5.yaml:12:3: error[unknown-op]: node 'c3': unknown op 'conv3d'
      hint: did you mean 'conv2d'?

Independent problems are collected and raised together as `SpecError`, so an author can
fix a spec in one pass.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Diagnostic", "SourcePos", "SpecError", "did_you_mean"]


@dataclass(frozen=True, order=True)
class SourcePos:
    """A position in a spec file; line and column are 1-based (0 means unknown)."""

    file: str = "<spec>"
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec.

    Attributes:
        code: stable machine-readable class, e.g. ``unknown-op`` or ``shape-mismatch``.
        message: what was expected and what arrived.
        pos: where in the source the problem is.
        node: the node id the problem belongs to, when there is one.
        hints: extra lines, e.g. a did-you-mean suggestion.
        severity: ``error`` stops compilation; ``warning`` does not.
    """

    code: str
    message: str
    pos: SourcePos = SourcePos()
    node: str | None = None
    hints: tuple[str, ...] = ()
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"node '{self.node}': " if self.node else ""
        head = f"{self.pos}: {self.severity}[{self.code}]: {where}{self.message}"
        return "\n".join([head, *(f"  hint: {h}" for h in self.hints)])

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": self.pos.file,
            "line": self.pos.line,
            "col": self.pos.col,
            "node": self.node,
            "hints": list(self.hints),
        }


@dataclass
class SpecError(Exception):
    """One or more errors that make a spec unusable (warnings may ride along)."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)

    @classmethod
    def single(cls, code: str, message: str, pos: SourcePos = SourcePos(), node: str | None = None,
               hints: Iterable[str] = ()) -> SpecError:
        return cls([Diagnostic(code, message, pos, node, tuple(hints))])


_MANY = 500
"""Above this many choices, a hint compares only those of about the word's length (difflib costs
tens of microseconds per comparison, and a spec may hold thousands of names)."""


def did_you_mean(word: str, choices: Iterable[str]) -> tuple[str, ...]:
    """A hint naming the closest of `choices` to `word`, or nothing when none is close."""
    names = set(choices)
    if len(names) > _MANY:
        names = {c for c in names if abs(len(c) - len(word)) <= 2}
    close = difflib.get_close_matches(word, sorted(names)[:_MANY], n=1, cutoff=0.5)
    return (f"did you mean '{close[0]}'?",) if close else ()
