"""Concrete sizes for a spec's symbolic dims (``--dim seq=2000``), checked before anything runs.

A size that the model cannot take (a sequence longer than a position table, a spatial size
that pools below 1) is found by compiling the graph again with the sizes in place of the
symbols: each op's shape rule then sees integers and reports the node and the spec line, as
for a size written in the spec.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx

from .errors import did_you_mean
from .graph import compile_graph, graph_inputs
from .spec import InputSpec, Spec

__all__ = ["dim_names", "sized_graph", "unknown_dims", "with_sizes"]


def dim_names(g: nx.MultiDiGraph) -> list[str]:
    """The symbolic dims of a checked graph's inputs, in the order they first appear."""
    seen: dict[str, None] = {}
    for t in graph_inputs(g).values():
        for d in t.shape:
            for s in sorted(d.free_symbols, key=str):
                seen.setdefault(str(s), None)
    return list(seen)


def unknown_dims(sizes: Mapping[str, int], known: list[str]) -> list[str]:
    """One message per name in `sizes` that is not among `known`, with a did-you-mean."""
    problems = []
    for name in sizes:
        if name not in known:
            hint = "".join(f"; {h}" for h in did_you_mean(name, known))
            listed = ", ".join(known) if known else "none (every size is fixed)"
            problems.append(f"no input has a dim '{name}'{hint} (the inputs' dims: {listed})")
    return problems


def _sized(inputs: Mapping[str, InputSpec], sizes: Mapping[str, int]) -> dict[str, InputSpec]:
    return {name: spec.model_copy(update={"shape": [sizes.get(d, d) if isinstance(d, str) else d for d in spec.shape]})
            for name, spec in inputs.items()}


def with_sizes(spec: Spec, sizes: Mapping[str, int]) -> Spec:
    """`spec` with the named symbolic dims of its inputs (main graph and signatures) fixed.

    Source positions, params and limits stay those of `spec`, so errors point at its lines.
    """
    signatures = {k: s.model_copy(update={"inputs": _sized(s.inputs, sizes)}) for k, s in spec.signatures.items()}
    return spec.model_copy(update={"inputs": _sized(spec.inputs, sizes), "signatures": signatures})


def sized_graph(spec: Spec, sizes: Mapping[str, int], signature: str | None = None) -> nx.MultiDiGraph:
    """The graph of `spec` (or one signature) compiled with `sizes` for its symbolic dims.

    Raises:
        ValueError: a name in `sizes` is not a dim of the graph's inputs (with a did-you-mean).
        SpecError: a size the model cannot take, located at the node whose shape rule refuses it.
    """
    known = dim_names(compile_graph(spec, signature))
    problems = unknown_dims(sizes, known)
    if problems:
        raise ValueError("; ".join(problems))
    return compile_graph(with_sizes(spec, sizes), signature)
