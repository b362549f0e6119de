"""Random valid specs built from the op-case table: they validate, their shapes are the ones the
cases predict, and (when both backends exist) PyTorch and ONNX agree on them.

A chain starts with one case (its inputs become graph inputs). Each next node is a case one of
whose ports takes the current tensor: its dims unify with the case's (a symbol such as ``T``
binds to whatever dim is there, an integer must match), or only the last dim differs and a
``linear`` node bridges it. The case's other ports become new graph inputs. The case's expected
shapes, with the bound symbols substituted, predict every shape along the chain.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from op_cases import CASES, SIZES, OpCase

from nnspec.builder import check_spec, compile_graph, graph_outputs, load_spec
from nnspec.builder.tensor import same_dim, symbol

Dim = int | str
HAS_BACKENDS = all(importlib.util.find_spec(m) is not None for m in ("nnspec.backends.pytorch", "nnspec.backends.onnx"))
TOLERANCE = 1e-4
"""Largest allowed max |onnx - torch| / max(1, max |torch|) on a chain."""


CHAINABLE = [c for c in CASES if c.wired and not c.positive]
"""Cases a chain may hold: not ops without inputs, nor ops defined only for positive inputs (sqrt, log),
which a chain's values (drawn from N(0, 1), then computed) would leave."""


@dataclass
class Chain:
    """A spec under construction: inputs, nodes, and the tensor the next node continues from."""

    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    ref: str = ""
    shape: list[Dim] = field(default_factory=list)
    dtype: str = "float32"
    steps: list[str] = field(default_factory=list)

    def spec(self) -> dict[str, Any]:
        return {"name": "chain", "inputs": self.inputs, "nodes": self.nodes, "outputs": {"y": self.ref}}


@cache
def _expr(d: Dim) -> sympy.Expr:
    """A dim as builder's shapes hold it: names are positive integer symbols (``S`` too, not sympy's S)."""
    if isinstance(d, int):
        return sympy.Integer(d)
    return sympy.parse_expr(d, local_dict={n: symbol(n) for n in re.findall(r"[A-Za-z_]\w*", d)})


def _dim(expr: sympy.Expr) -> Dim:
    return int(expr) if expr.is_Integer else str(expr)


def _subst(shape: list[Dim], binding: dict[str, Dim]) -> list[Dim]:
    subs = {symbol(k): _expr(v) for k, v in binding.items()}
    return [d if isinstance(d, int) else _dim(_expr(d).subs(subs, simultaneous=True)) for d in shape]


def _unify(want: list[Dim], have: list[Dim], binding: dict[str, Dim]) -> dict[str, Dim] | None:
    """Bind the case's symbols so that its shape `want` is `have`, or None when it cannot be."""
    if len(want) != len(have):
        return None
    out = dict(binding)
    for w, h in zip(want, have, strict=True):
        if isinstance(w, int):
            if w != h:
                return None
        elif not w.isidentifier():
            return None  # an expression in an input shape: not worth solving
        elif w in out and not same_dim(_expr(out[w]), _expr(h)):
            return None
        else:
            out[w] = h
    return out


def _is_input_shape(shape: list[Dim]) -> bool:
    return all(isinstance(d, int) or d.isidentifier() for d in shape)


@dataclass(frozen=True)
class Move:
    """Continue the chain with `case`, feeding the current tensor to `port` (after a linear bridge to `bridge`)."""

    case: OpCase
    port: str
    binding: tuple[tuple[str, Dim], ...]
    bridge: int | None = None


def moves(chain: Chain) -> list[Move]:
    """Every case that can take the chain's current tensor on one of its ports."""
    out = []
    for case in CHAINABLE:
        for port, (want, dtype) in case.inputs.items():
            if dtype != chain.dtype:
                continue
            binding = _unify(want, chain.shape, {})
            bridge = None
            if binding is None and dtype == "float32" and len(want) == len(chain.shape) >= 2 \
                    and isinstance(want[-1], int) and isinstance(chain.shape[-1], int):
                binding, bridge = _unify(want[:-1], chain.shape[:-1], {}), want[-1]
            if binding is None:
                continue
            others = [_subst(s, binding) for p, (s, _) in case.inputs.items() if p != port]
            if all(_is_input_shape(s) for s in others):
                out.append(Move(case, port, tuple(sorted(binding.items())), bridge))
    return out


def apply(chain: Chain, move: Move, index: int) -> None:
    """Add the move's nodes (a bridge, then the case's node) and its extra graph inputs."""
    binding = dict(move.binding)
    ref = chain.ref
    if move.bridge is not None:
        chain.nodes[f"bridge{index}"] = {"op": "linear", "in": ref, "out_features": move.bridge}
        ref = f"bridge{index}"
    feeds = {}
    for port, (shape, dtype) in move.case.inputs.items():
        if port == move.port:
            feeds[port] = ref
        else:
            name = f"in{index}_{port}"
            chain.inputs[name] = {"shape": _subst(shape, binding), "dtype": dtype}
            feeds[port] = name
    node = f"n{index}"
    chain.nodes[node] = {"op": move.case.op, "in": feeds, **move.case.args}
    out_port = sorted(move.case.expect)[index % len(move.case.expect)]
    chain.ref = f"{node}.{out_port}"
    chain.shape = _subst(move.case.expect[out_port], binding)
    chain.dtype = "float32"
    chain.steps.append(f"{move.case.id}[{move.port}{'' if move.bridge is None else f', bridge {move.bridge}'}]")


def start(case: OpCase) -> Chain:
    chain = Chain()
    index = 0
    feeds = {}
    for port, (shape, dtype) in case.inputs.items():
        chain.inputs[f"in{index}_{port}"] = {"shape": list(shape), "dtype": dtype}
        feeds[port] = f"in{index}_{port}"
    chain.nodes["n0"] = {"op": case.op, "in": feeds, **case.args}
    out_port = sorted(case.expect)[0]
    chain.ref, chain.shape = f"n0.{out_port}", list(case.expect[out_port])
    chain.steps.append(case.id)
    return chain


@st.composite
def chains(draw: st.DrawFn, max_length: int = 5) -> Chain:
    chain = start(draw(st.sampled_from(CHAINABLE)))
    for index in range(1, draw(st.integers(1, max_length))):
        options = moves(chain)
        if not options:
            break
        apply(chain, draw(st.sampled_from(options)), index)
    return chain


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_random_chain_validates_with_the_predicted_shape(chain: Chain) -> None:
    spec = load_spec(chain.spec())
    graphs, warnings = check_spec(spec)
    assert warnings == [], warnings
    out = graph_outputs(graphs[None])["y"]
    same = len(out.shape) == len(chain.shape) and all(
        same_dim(_expr(a), b) for a, b in zip(chain.shape, out.shape, strict=True))
    assert same, f"{' -> '.join(chain.steps)}: predicted {chain.shape}, inferred {out}"


@pytest.mark.skipif(not HAS_BACKENDS, reason="nnspec.backends.pytorch and backends.onnx are not both here yet")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains(max_length=4), st.sampled_from(SIZES), st.integers(0, 2**16))
def test_random_chain_agrees_in_both_backends(chain: Chain, sizes: dict[str, int], seed: int) -> None:
    import torch

    from nnspec.backends.onnx import random_inputs, run_onnx, to_onnx
    from nnspec.backends.pytorch import to_torch

    graph = compile_graph(load_spec(chain.spec()))
    torch.manual_seed(seed)
    module = to_torch(graph).eval()
    model = to_onnx(graph, module.state_dict())
    feed = random_inputs(model, sizes, seed)
    got = run_onnx(model, feed)["y"]
    with torch.no_grad():
        ref = module(**{k: torch.from_numpy(v) for k, v in feed.items()})
    ref = (ref[0] if isinstance(ref, tuple) else ref).numpy()
    assert got.shape == ref.shape, f"{' -> '.join(chain.steps)}: {got.shape} vs {ref.shape}"
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    diff = float(np.max(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
    if diff > TOLERANCE * scale and np.issubdtype(ref.dtype, np.floating):
        # An ill-conditioned chain (a layer norm over nearly equal channels) magnifies float32
        # rounding itself: allow what torch's own float32 result is off from its float64 one, ten times.
        with torch.no_grad():
            exact = module.double()(**{k: torch.from_numpy(v).double() if v.dtype == np.float32
                                       else torch.from_numpy(v) for k, v in feed.items()})
        exact = (exact[0] if isinstance(exact, tuple) else exact).numpy()
        scale = max(scale, 10 * float(np.max(np.abs(ref - exact))) / TOLERANCE)
    assert diff <= TOLERANCE * scale, f"{' -> '.join(chain.steps)} at {sizes}: max |diff| {diff:.3g}, scale {scale:.3g}"
