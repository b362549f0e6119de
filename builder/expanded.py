"""What block expansion produces: tensors named by node and port, the block frames around each
node, the block calls, and the expanded op nodes with their inferred types (see `nnspec.builder.resolve`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import SourcePos
from .ops import Op
from .tensor import TensorType

__all__ = ["BlockCall", "Frame", "Pending", "TensorRef"]


class TensorRef(NamedTuple):
    """One tensor of the graph: output `port` of node `node` (full dotted id).

    A named tuple rather than a dataclass: it keys the type table of every edge, and tuple
    hashing is done in C.
    """

    node: str
    port: str

    def __str__(self) -> str:
        return f"{self.node}.{self.port}"


@dataclass(frozen=True)
class Frame:
    """One level of block nesting around a node (a call, or one copy of a repeated call)."""

    path: str
    block: str
    repeat: int | None = None
    index: int | None = None


@dataclass(frozen=True)
class BlockCall:
    """One call of a block (one copy of a repeated call): the tensors bound to its inputs and the
    tensors it produces for its outputs, by name, in the block's declared order, and the values of
    the block's own params in this call (what generated code passes to the block's constructor)."""

    block: str
    inputs: dict[str, TensorRef]
    outputs: dict[str, TensorRef]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pending:
    """An op node after expansion: validated arguments, resolved inputs, inferred types and weights."""

    id: str
    model: Op
    bindings: dict[str, TensorRef]
    scope: tuple[Frame, ...]
    pos: SourcePos
    inputs: dict[str, TensorType] = field(default_factory=dict)
    outputs: dict[str, TensorType] = field(default_factory=dict)
    weights: dict[str, tuple[int, ...]] = field(default_factory=dict)
