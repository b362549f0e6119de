"""ONNX lowerings of the activations beyond the seed set and the new normalisation layers."""

from __future__ import annotations

from .table import LOWERINGS

__all__: list[str] = []
_ = LOWERINGS
