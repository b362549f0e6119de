"""Layout of generated source: docstrings wrapped, and long logical lines broken as black would
(at their outermost call), each statement's shape comment kept at its end or put above it."""

from __future__ import annotations

import io
import tokenize

from nnspec.builder.text import docstring_body

__all__ = ["WIDTH", "docstring", "logical", "matching", "render", "split_top", "statement", "wrap"]

WIDTH = 120
"""Generated lines are at most this long where they can be broken (the repository's ruff allows 130)."""


def logical(code: str, comment: str) -> list[str]:
    """One statement as one logical line, its shape comment at its end (`render` lays it out)."""
    return [code + comment]


def render(lines: list[str]) -> list[str]:
    """Logical lines laid out: each long statement broken (`statement`), multi-line strings as they are."""
    out: list[str] = []
    for line in lines:
        if len(line) <= WIDTH or "\n" in line:
            out.append(line)
            continue
        code, comment = split_comment(line)
        out.extend(statement(code, comment))
    return out


def split_comment(line: str) -> tuple[str, str]:
    """A logical line's code and its trailing comment (with the two spaces before it; "" if none)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, SyntaxError):
        return line, ""
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            col = tok.start[1]
            return line[:col].rstrip(), "  " + line[col:]
    return line, ""


def docstring(doc: str, indent: str = "    ") -> str:
    """The spec's doc wrapped at about 100 columns, indented for a class body (or as `indent` says)."""
    out: list[str] = []
    line = ""
    for word in docstring_body(doc).split():  # escaped: any doc gives source that parses
        if line and len(line) + len(word) > 95:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return out[0] if len(out) == 1 else f"\n{indent}".join(out) + f"\n{indent}"



def statement(code: str, comment: str) -> list[str]:
    """One statement with its shape comment: on one line where they fit, else the code broken at
    its call (`wrap`) with the comment after it, or above it where it would not fit there."""
    if len(code) + len(comment) <= WIDTH:
        return [code + comment]
    lines = wrap(code)
    if comment and len(lines[-1]) + len(comment) <= WIDTH:
        return [*lines[:-1], lines[-1] + comment]
    indent = code[:len(code) - len(code.lstrip())]
    if not comment:
        return lines
    above = [f"{indent}{comment.strip()}"]
    while len(above[-1]) > WIDTH and ", " in above[-1][:WIDTH]:  # a long shape: one dim after another
        cut = above[-1].rindex(", ", 0, WIDTH) + 1
        above[-1:] = [above[-1][:cut], f"{indent}# {above[-1][cut:].lstrip()}"]
    return [*above, *lines]


def wrap(code: str, width: int = WIDTH) -> list[str]:
    """A long line split at its outermost call (or def), arguments filled onto as few lines as fit
    (black's layout); short lines, and lines that are not one call, as they are."""
    if len(code) <= width:
        return [code]
    indent = code[:len(code) - len(code.lstrip())]
    start = code.find("(")
    close = matching(code, start) if start >= 0 else -1
    after = code[close + 1:] if close >= 0 else "?"
    if not (after in ("", ":") or (after.startswith(" -> ") and after.endswith(":"))):
        return [code]  # not one call (or def) whose parentheses close at the end
    parts = split_top(code[start + 1:close])
    if not parts:
        return [code]
    parts[-1] += code[close:]
    inner = indent + (" " * 8 if code.endswith(":") else " " * 4)  # a def's or a for's arguments: off its body
    out = [code[:start + 1]]
    row = ""
    for i, part in enumerate(parts):
        comma = "," if i + 1 < len(parts) else ""
        joined = f"{row}, {part}" if row else part
        if row and len(inner) + len(joined) + len(comma) > width:
            out.append(f"{inner}{row},")
            row = part
        else:
            row = joined
    out.append(f"{inner}{row}")
    return out


def matching(text: str, start: int) -> int:
    depth = 0
    quote = ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def split_top(text: str) -> list[str]:
    """`text` split at the commas outside brackets and quotes."""
    parts, depth, quote, last = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[last:i].strip())
            last = i + 1
    if text[last:].strip():
        parts.append(text[last:].strip())
    return parts
