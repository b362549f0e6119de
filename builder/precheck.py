"""Errors in nodes that are found even when the spec's structure fails, so that a spec's
independent errors come in one run: a misspelt argument (``out_channel``) or a stray input size
(``in_channels``) in a node or a block is reported beside a bad dtype or a missing
``outputs``, not only after they are fixed.

Only what holds whatever the params are is checked here: the keys of a node whose ``op`` is a
registered op. Values (which may be ``${...}``) wait for the graph pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from .errors import Diagnostic
from .ops import OPS
from .source import DataPath, Source
from .spec import validation_diagnostics

__all__ = ["node_key_errors"]

_NODE_KEYS = frozenset({"when", "repeat"})
"""Keys any node may carry that the op models do not declare (resolved before they are validated)."""


def _sections(data: dict[str, Any]) -> Iterator[tuple[DataPath, str, Any]]:
    """(path of a nodes mapping, prefix for its node ids, the mapping) for the spec and each block."""
    yield ("nodes",), "", data.get("nodes")
    blocks = data.get("blocks")
    if isinstance(blocks, dict):
        for name, block in blocks.items():
            if isinstance(block, dict):
                yield ("blocks", name, "nodes"), f"{name}.", block.get("nodes")


def node_key_errors(data: dict[str, Any], source: Source) -> list[Diagnostic]:
    """An ``unknown-key`` diagnostic for each key of a node that its op does not take.

    Node ids in a block are given as ``<block>.<node>``, where the node is written.
    """
    out: list[Diagnostic] = []
    for base, prefix, nodes in _sections(data):
        if not isinstance(nodes, dict):
            continue
        for nid, node in nodes.items():
            if not isinstance(node, dict) or not isinstance(node.get("op"), str) or node["op"] not in OPS:
                continue
            cls = OPS[node["op"]]
            try:
                cls.model_validate({k: v for k, v in node.items() if k not in _NODE_KEYS})
            except ValidationError as exc:
                diags = validation_diagnostics(exc, node, source, (*base, nid), f"{prefix}{nid}", cls)
                out.extend(d for d in diags if d.code == "unknown-key")
    return out
