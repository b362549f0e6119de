"""Text quoted from a spec, a model file or the command line, made safe to print.

A spec may hold any character, and a message that quotes it goes to a terminal. Escape
sequences (ANSI/OSC: set the window title, clear the screen, move the cursor), other control
characters, bidirectional overrides and lone surrogates are shown as Python escapes instead
(``\\x1b``, ``\\u202e``), so a message always reads as what it says.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["docstring_body", "printable"]

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_CANDIDATES = re.compile(r"[^\x20-\x7e\n\t]")
_CLOSING_QUOTE = re.compile(r'"(?="|\Z)')


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _replace(match: re.Match[str]) -> str:
    ch = match.group()
    return _escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch


def printable(text: str, keep_newlines: bool = True) -> str:
    """`text` with every character a terminal would act on shown as an escape.

    Printable characters of any script stay as they are; newlines and tabs stay unless
    `keep_newlines` is False (for a value that must stay on one line).

    >>> printable("conv\\x1b[2J")
    'conv\\\\x1b[2J'
    """
    out = _CANDIDATES.sub(_replace, text) if _CANDIDATES.search(text) else text
    if not keep_newlines:
        out = out.replace("\n", "\\n").replace("\t", "\\t")
    return out


def docstring_body(text: str) -> str:
    """`text` as the inside of a ``\"\"\"...\"\"\"`` literal in generated Python: the literal always
    parses and reads back as `text` (backslashes doubled, quotes that would close it escaped,
    control characters as escapes)."""
    body = printable(text.replace("\\", "\\\\"))
    return _CLOSING_QUOTE.sub(r'\\"', body)  # a quote before a quote or at the end could close the literal
