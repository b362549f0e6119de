"""PyTorch lowerings of the activations beyond the seed set and the new normalisation layers."""

from __future__ import annotations

from .lowering import TABLE

__all__: list[str] = []
_ = TABLE
