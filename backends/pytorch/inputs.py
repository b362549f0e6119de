"""Random example inputs for a built module (or a checked graph), at chosen sizes of its symbolic dims.

Integer inputs are token ids below `high`; boolean inputs are key-padding masks that pad the
tail of some rows but never a row's first position (a fully masked row has no defined attention).
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import torch
from torch import nn

from nnspec.builder import graph_inputs
from nnspec.builder.tensor import dim_size, fmt_dim

from .module import spec_info

__all__ = ["example_inputs", "input_types"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}


def input_types(source: nn.Module | nx.MultiDiGraph) -> dict[str, tuple[tuple[str, ...], str]]:
    """Input name to (dims as text, dtype name), in forward's argument order."""
    if isinstance(source, nx.MultiDiGraph):
        return {k: (tuple(fmt_dim(d) for d in t.shape), t.dtype) for k, t in graph_inputs(source).items()}
    info = spec_info(source)
    return {k: (tuple(info["input_types"][k][0]), info["input_types"][k][1]) for k in info["inputs"]}


def _id_ranges(source: nn.Module | nx.MultiDiGraph) -> dict[str, int]:
    if isinstance(source, nx.MultiDiGraph):
        return {}
    return dict(spec_info(source).get("id_ranges", {}))


def example_inputs(source: nn.Module | nx.MultiDiGraph, sizes: Mapping[str, int] | None = None, *, high: int = 10,
                   seed: int = 0, default: int = 3) -> tuple[torch.Tensor, ...]:
    """Random inputs for `source`'s forward, in argument order.

    Args:
        source: a module built by `to_torch` (or its signature), or a checked graph.
        sizes: values of the symbolic dims by name (``{"batch": 2, "seq": 7}``); others get `default`.
        high: integer inputs are drawn from [0, high), and below the size of an embedding they index.
        seed: the generator seed (the global generator is not touched).
        default: the size of any symbolic dim missing from `sizes`.
    """
    gen = torch.Generator().manual_seed(seed)
    sizes = dict(sizes or {})
    ranges = _id_ranges(source)
    out = []
    for name, (dims, dtype) in input_types(source).items():
        shape = [dim_size(d, sizes, default) for d in dims]  # past_sequence_length+seq: a sum
        if dtype == "bool":
            out.append(_padding_mask(shape, gen))
        elif dtype.startswith("int"):
            out.append(torch.randint(0, min(high, ranges.get(name, high)), shape, generator=gen, dtype=_DTYPES[dtype]))
        else:
            out.append(torch.randn(shape, generator=gen, dtype=_DTYPES[dtype]))
    return tuple(out)


def _padding_mask(shape: list[int], gen: torch.Generator) -> torch.Tensor:
    """True (padding) on a random tail of each row; position 0 is never padding."""
    if len(shape) != 2:
        return torch.zeros(shape, dtype=torch.bool)
    rows, length = shape
    keep = torch.randint(1, length + 1, (rows, 1), generator=gen)  # (rows, 1): real positions per row
    return torch.arange(length).unsqueeze(0) >= keep  # (rows, length)
