"""Spatial ops beyond the seed set: transposed and 3-D convolution, 3-D and adaptive pooling,
resampling (upsample/interpolate, pixel shuffle) and padding."""

from __future__ import annotations
