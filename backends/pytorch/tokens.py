"""The generated source's lines as tokens, for comparing the classes written for a block's calls
(`generalize`): literals marked, each line anchored by what it assigns, and the few questions the
merge asks of a token (is it a repeat's count, does it stand alone, what does a ``(`` call)."""

from __future__ import annotations

import ast
import functools
import inspect
import io
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .layout import split_comment

__all__ = ["Line", "Tok", "callee_at", "literal_value", "parse_line", "repeat_count", "stands_alone", "torch_signature"]

_OPENERS = ("(", "[", ",", "=", ":", "{", "return", "else", "if", "in", "**", "*", "+", "-", "/", "//")
"""Tokens after which ``-`` is a sign (``-0.5`` is one literal)."""


@dataclass(frozen=True)
class Tok:
    kind: str  # "lit", "name" or "op"
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Line:
    """One logical line: its code as tokens (literals marked), its shape comment, and its anchor
    (what it assigns, else its code without literals), by which lines of two calls are aligned."""

    text: str
    code: str
    comment: str
    toks: tuple[Tok, ...]
    anchor: tuple[str, ...]

    @property
    def indent(self) -> int:
        return len(self.text) - len(self.text.lstrip())

    def key(self) -> tuple[str, ...]:
        return tuple("#" if t.kind == "lit" else t.text for t in self.toks)

    def assigned(self) -> tuple[str, ...]:
        """The names a local assignment binds (``a, b = ...``), or ``("self.N",)`` for an attribute."""
        return self.anchor[2:] if self.anchor[1] == "=" else ()


@functools.cache
def parse_line(text: str) -> Line:
    code, comment = split_comment(text)
    indent = str(len(text) - len(text.lstrip()))
    if "\n" in text:  # a docstring: compared whole
        return Line(text, code, "", (Tok("op", text, 0, len(text)),), (indent, text))
    toks: list[Tok] = []
    try:
        raw = [t for t in tokenize.generate_tokens(io.StringIO(code).readline)
               if t.type in (tokenize.NAME, tokenize.NUMBER, tokenize.STRING, tokenize.OP)]
    except (tokenize.TokenError, SyntaxError):
        return Line(text, code, comment, (Tok("op", code, 0, len(code)),), (indent, code))
    only_string = len(raw) == 1 and raw[0].type == tokenize.STRING
    skip = False
    for i, t in enumerate(raw):
        if skip:
            skip = False
            continue
        start, end = t.start[1], t.end[1]
        prev = toks[-1].text if toks else ""
        if t.type == tokenize.OP and t.string == "-" and i + 1 < len(raw) and raw[i + 1].type == tokenize.NUMBER \
                and (not toks or prev in _OPENERS):
            toks.append(Tok("lit", code[start:raw[i + 1].end[1]], start, raw[i + 1].end[1]))
            skip = True
        elif t.type == tokenize.NUMBER or (t.type == tokenize.NAME and t.string in ("True", "False", "None")) \
                or (t.type == tokenize.STRING and not only_string) or t.string == "...":
            toks.append(Tok("lit", t.string, start, end))
        else:
            toks.append(Tok("name" if t.type == tokenize.NAME else "op", t.string, start, end))
    return Line(text, code, comment, tuple(toks), (indent, *_anchor(toks)))


def _anchor(toks: list[Tok]) -> tuple[str, ...]:
    depth = 0
    for i, t in enumerate(toks):
        if t.text in ("(", "[", "{"):
            depth += 1
        elif t.text in (")", "]", "}"):
            depth -= 1
        elif t.text == "=" and depth == 0:
            lhs = toks[:i]
            if len(lhs) == 3 and lhs[0].text == "self" and lhs[1].text == ".":
                return ("=", f"self.{lhs[2].text}")
            if lhs and all(x.kind == "name" or x.text == "," for x in lhs):
                return ("=", *(x.text for x in lhs if x.kind == "name"))
            return ("stmt", *(x.text for x in lhs))
    if toks and toks[0].text == "return":
        return ("return",)
    return ("code", *("#" if t.kind == "lit" else t.text for t in toks))


def repeat_count(line: Line) -> int | None:
    """The token of the count in ``self.rest = torch.nn.ModuleList([... for _ in range(n)])``, else None."""
    texts = [t.text for t in line.toks]
    head = ["self", ".", texts[2] if len(texts) > 2 else "", "=", "torch", ".", "nn", ".", "ModuleList", "(", "["]
    if texts[:11] != head or texts[-6:-4] != ["range", "("] or texts[-3:] != [")", "]", ")"] \
            or line.toks[-4].kind != "lit":
        return None
    return len(texts) - 4


def stands_alone(toks: Sequence[Tok], t: int) -> bool:
    """Whether the literal at `t` stands alone (an argument or a value), so that an expression in its
    place needs no parentheses."""
    before = toks[t - 1].text if t else ""
    after = toks[t + 1].text if t + 1 < len(toks) else ""
    return before in ("(", ",", "=", "[") and after in (")", ",", "]", "")


def literal_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def callee_at(toks: Sequence[Tok], t: int) -> str | None:
    """The dotted name called by the ``(`` at `t` (``torch.nn.Conv2d``), or None (a tuple)."""
    parts: list[str] = []
    k = t - 1
    while k >= 0 and toks[k].kind == "name":
        parts.append(toks[k].text)
        if k >= 1 and toks[k - 1].text == ".":
            k -= 2
        else:
            break
    if not parts or parts[-1] in ("if", "else", "in", "return", "and", "or", "not"):
        return None
    return ".".join(reversed(parts))


@functools.cache
def torch_signature(callee: str) -> list[str] | None:
    """The positional argument names of a torch callable (``torch.nn.Conv2d``), where Python knows them."""
    obj: Any = torch if callee.startswith("torch.") else None
    for part in callee.split(".")[1:]:
        obj = getattr(obj, part, None)
    if obj is None:
        return None
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in sig.parameters.values() if p.kind in kinds and p.name != "self"]
