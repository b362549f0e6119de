"""Resource limits that keep a hostile or mistaken spec from exhausting the machine.

Every limit has a sensible default; a user raises one from Python
(``load_spec(path, limits=Limits(max_nodes=10**6))``) or the CLI (``--limit max_nodes=1e6``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace

__all__ = ["CEILINGS", "DEFAULT_LIMITS", "Limits"]


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 * 2**30


_MEMORY = _physical_memory()


@dataclass(frozen=True)
class Limits:
    """Upper bounds enforced while loading and compiling a spec, and on what the commands allocate.

    Each limit also has a ceiling (`CEILINGS`) that no override passes: the ceiling is what
    nnspec itself can take (Python's stack for nesting, the machine's memory for weights).
    """

    max_file_bytes: int = 16 * 2**20
    """Largest spec file read."""
    max_depth: int = 64
    """Deepest nesting of mappings and lists in the spec text or in a ``--set`` value."""
    max_items: int = 1_000_000
    """Values built from the text, counting every expansion of a YAML alias."""
    max_nodes: int = 200_000
    """Graph nodes after block expansion (``repeat`` included)."""
    max_block_depth: int = 32
    """Blocks calling blocks, deepest chain."""
    max_weight_bytes: int = _MEMORY // 2
    """Total float32 weight bytes; defaults to half the machine's physical memory (the backends
    hold the weights once and need room for the rest)."""
    max_int_bits: int = 64
    """Largest magnitude of an integer produced by a ``${...}`` expression."""
    max_expr_chars: int = 2**20
    """Characters of ``${...}`` expressions evaluated while loading and expanding a spec, each text counted
    once per distinct set of values it reads (so once for all the copies of a block that agree)."""
    max_tensor_bytes: int = min(4 * 2**30, _MEMORY // 4)
    """Largest single array a command allocates or reads: a random or ``.npy`` input."""
    max_layout_seconds: int = 30
    """Seconds Graphviz may take to lay out the drawings of one ``render``: half for ``dot``'s full layout,
    the rest for cheaper ones when it runs out (`nnspec.backends.graphviz.layout`)."""

    def with_overrides(self, items: dict[str, str]) -> Limits:
        """These limits with some replaced by text values (``--limit NAME=N``), each checked
        to be a whole number from 0 to its ceiling."""
        known = {f.name for f in fields(self)}
        values: dict[str, int] = {}
        for key, text in items.items():
            if key not in known:
                raise ValueError(f"unknown limit '{key}' (known: {', '.join(sorted(known))})")
            values[key] = _limit_value(key, text)
        return replace(self, **values)


CEILINGS: dict[str, int] = {
    "max_file_bytes": 2**31 - 1,
    "max_depth": 500,  # the YAML composer and the resolver recurse per level; Python's stack is 1000 frames
    "max_items": 100_000_000,
    "max_nodes": 10_000_000,
    "max_block_depth": 200,
    "max_weight_bytes": _MEMORY,
    "max_int_bits": 1 << 16,  # 65,536-bit integers: sympy stays fast; beyond, one expression takes minutes
    "max_tensor_bytes": _MEMORY,
    "max_layout_seconds": 3600,
    "max_expr_chars": 2**28,  # 0.5-4 s per million characters (parsing is the slow part): minutes, not hours
}
"""The largest value each limit may be raised to."""


def _limit_value(key: str, text: str) -> int:
    shown = text if len(text) <= 40 else text[:40] + "..."
    try:
        value = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0 and value == int(value)):
        raise ValueError(f"limit '{key}' must be a whole number >= 0, got '{shown}'")
    if value > CEILINGS[key]:
        raise ValueError(f"limit '{key}' can be at most {CEILINGS[key]:,} (its ceiling), got '{shown}'")
    return int(value)


DEFAULT_LIMITS = Limits()
