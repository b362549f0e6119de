"""PyTorch lowerings of the plugin's ops (imported by nnspec when the PyTorch backend is used)."""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx

from nnspec.backends.pytorch import TABLE
from nnspec.backends.pytorch.emitter import Ctor, Emitter, Outputs, TensorInit
from nnspec.builder import Node

from . import SwiGLU


@TABLE.register("squared_relu")
def lower_squared_relu(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(torch.square, e.fn(torch.relu, e.x()))}


@TABLE.register("swiglu")
def lower_swiglu(e: Emitter, n: Node) -> Outputs:
    assert isinstance(n.model, SwiGLU)
    m, d = n.model, int(e.type().shape[-1])
    sizes = {"w1": (m.hidden_features, d), "w3": (m.hidden_features, d), "w2": (m.out_features or d, m.hidden_features)}
    tensors = []
    for name, (rows, cols) in sizes.items():  # as torch.nn.Linear initialises: uniform in 1/sqrt(fan_in)
        tensors.append(TensorInit(f"{name}.weight", (rows, cols), "uniform", 1 / math.sqrt(cols)))
        if m.bias:
            tensors.append(TensorInit(f"{name}.bias", (rows,), "uniform", 1 / math.sqrt(cols)))
    own = Ctor("", tensors=tuple(tensors))  # the node's submodule: plain children w1, w2, w3 holding the tensors
    w = {t.name: e.weight(t.name, own) for t in tensors}

    def linear(x: fx.Node, name: str) -> fx.Node:
        return e.fn(F.linear, x, w[f"{name}.weight"], w.get(f"{name}.bias"))

    x = e.x()
    gated = e.fn(operator.mul, e.fn(F.silu, linear(x, "w1")), linear(x, "w3"))  # (*, hidden)
    return {"y": linear(gated, "w2")}
