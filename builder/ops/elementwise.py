"""Elementwise arithmetic (sub, div, pow, sqrt, ..., where, masked_fill) and reductions
(sum, max, min) beside `mean`."""

from __future__ import annotations
