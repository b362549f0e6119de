"""Resource limits that keep a hostile or mistaken spec from exhausting the machine.

Every limit has a sensible default; a user raises one from Python
(``load_spec(path, limits=Limits(max_nodes=10**6))``) or the CLI (``--limit max_nodes=1e6``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace

__all__ = ["DEFAULT_LIMITS", "Limits"]


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 * 2**30


@dataclass(frozen=True)
class Limits:
    """Upper bounds enforced while loading and compiling a spec."""

    max_file_bytes: int = 16 * 2**20
    """Largest spec file read."""
    max_depth: int = 64
    """Deepest nesting of mappings and lists in the spec text."""
    max_items: int = 1_000_000
    """Values built from the text, counting every expansion of a YAML alias."""
    max_nodes: int = 200_000
    """Graph nodes after block expansion (``repeat`` included)."""
    max_block_depth: int = 32
    """Blocks calling blocks, deepest chain."""
    max_weight_bytes: int = _physical_memory()
    """Total float32 weight bytes; defaults to the machine's physical memory."""
    max_int_bits: int = 64
    """Largest magnitude of an integer produced by a ``${...}`` expression."""

    def with_overrides(self, items: dict[str, str]) -> Limits:
        known = {f.name for f in fields(self)}
        values: dict[str, int] = {}
        for key, text in items.items():
            if key not in known:
                raise ValueError(f"unknown limit '{key}' (known: {', '.join(sorted(known))})")
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value >= 0 and value == int(value)):
                raise ValueError(f"limit '{key}' must be a whole number >= 0, got '{text}'")
            values[key] = int(value)
        return replace(self, **values)


DEFAULT_LIMITS = Limits()
