"""PyTorch lowerings of elementwise arithmetic, reductions, and tensor construction and indexing."""

from __future__ import annotations

from .lowering import TABLE

__all__: list[str] = []
_ = TABLE
