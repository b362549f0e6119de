"""ONNX lowerings of elementwise arithmetic, reductions, and tensor construction and indexing."""

from __future__ import annotations

from .table import LOWERINGS

__all__: list[str] = []
_ = LOWERINGS
