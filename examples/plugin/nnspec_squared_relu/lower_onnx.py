"""ONNX lowerings of the plugin's ops (imported by nnspec when the ONNX backend is used)."""

from __future__ import annotations

import math

from nnspec.backends.onnx import LOWERINGS
from nnspec.backends.onnx.table import Emitter, Init
from nnspec.builder import Node

from . import SwiGLU


@LOWERINGS.register("squared_relu")
def lower_squared_relu(e: Emitter, node: Node) -> None:
    r = e.op1("Relu", [e.input("x")])
    e.op1("Mul", [r, r], e.output())


@LOWERINGS.register("swiglu")
def lower_swiglu(e: Emitter, node: Node) -> None:
    m = e.model(SwiGLU)
    d = int(node.inputs["x"].shape[-1])

    def linear(x: str, name: str, fan_in: int, output: str | None = None) -> str:
        """x W^T + b for W in PyTorch's (out, in) layout; initializers are named like the state_dict."""
        bound = 1 / math.sqrt(fan_in)
        wt = e.op1("Transpose", [e.weight(f"{name}.weight", Init.uniform(bound))], perm=[1, 0])
        if not m.bias:
            return e.op1("MatMul", [x, wt], output)
        return e.op1("Add", [e.op1("MatMul", [x, wt]), e.weight(f"{name}.bias", Init.uniform(bound))], output)

    x = e.input("x")
    a = linear(x, "w1", d)
    gate = e.op1("Mul", [a, e.op1("Sigmoid", [a])])  # silu(a)
    linear(e.op1("Mul", [gate, linear(x, "w3", d)]), "w2", m.hidden_features, e.output())
