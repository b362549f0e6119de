"""Tensor construction and indexing: squeeze/unsqueeze, expand, repeat, stack, gather,
index_select, `constant` and the learned free tensor `parameter`."""

from __future__ import annotations
