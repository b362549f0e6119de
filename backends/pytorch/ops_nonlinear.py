"""PyTorch lowerings of the activations beyond the seed set and the new normalisation layers.

Stateless activations emit torch.nn.functional calls; ops with weights (prelu and the norms)
are torch.nn layers, so their state_dict keys are ``<node id>.weight`` / ``<node id>.bias``
and their initialisation is PyTorch's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nnspec.builder import Node
from nnspec.builder.ops.activations import Clamp, Elu, Glu, Hardtanh, LeakyRelu, Prelu, Softplus
from nnspec.builder.ops.norms import GroupNorm, InstanceNorm, LayerNorm2d, RmsNorm

from .emitter import Ctor, Emitter, Outputs
from .lowering import TABLE, _args, _features

__all__: list[str] = []


# --- activations beyond the seed set ---------------------------------------------------------

@TABLE.register("relu6")
def _relu6(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.relu6, e.x())}


@TABLE.register("hardtanh")
def _hardtanh(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Hardtanh)
    return {"y": e.fn(F.hardtanh, e.x(), min_val=m.min_val, max_val=m.max_val)}


@TABLE.register("clamp")
def _clamp(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Clamp)
    bounds = {k: v for k, v in (("min", m.min), ("max", m.max)) if v is not None}
    return {"y": e.fn(torch.clamp, e.x(), **bounds)}


@TABLE.register("leaky_relu")
def _leaky_relu(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.leaky_relu, e.x(), negative_slope=_args(n, LeakyRelu).negative_slope)}


@TABLE.register("elu")
def _elu(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.elu, e.x(), alpha=_args(n, Elu).alpha)}


@TABLE.register("silu")
def _silu(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.silu, e.x())}


@TABLE.register("mish")
def _mish(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.mish, e.x())}


@TABLE.register("hardswish")
def _hardswish(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.hardswish, e.x())}


@TABLE.register("hardsigmoid")
def _hardsigmoid(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.hardsigmoid, e.x())}


@TABLE.register("softplus")
def _softplus(e: Emitter, n: Node) -> Outputs:
    m = _args(n, Softplus)
    return {"y": e.fn(F.softplus, e.x(), beta=m.beta, threshold=m.threshold)}


@TABLE.register("prelu")
def _prelu(e: Emitter, n: Node) -> Outputs:
    # nn.PReLU's default init is 0.25 for every slope
    return {"y": e.call_module(Ctor.of("PReLU", _args(n, Prelu).num_parameters), e.x())}


@TABLE.register("glu")
def _glu(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.glu, e.x(), dim=_args(n, Glu).dim)}


# --- normalisation beyond batch and layer norm -----------------------------------------------

def _channels(e: Emitter) -> int:
    return int(e.type().shape[1])  # a fixed size: the shape rules check it


@TABLE.register("rms_norm")
def _rms_norm(e: Emitter, n: Node) -> Outputs:
    m = _args(n, RmsNorm)
    ctor = Ctor.of("RMSNorm", _features(e), eps=m.eps, elementwise_affine=m.elementwise_affine)
    return {"y": e.call_module(ctor, e.x())}


@TABLE.register("group_norm")
def _group_norm(e: Emitter, n: Node) -> Outputs:
    m = _args(n, GroupNorm)
    ctor = Ctor.of("GroupNorm", m.num_groups, _channels(e), eps=m.eps, affine=m.affine)
    return {"y": e.call_module(ctor, e.x())}


@TABLE.register("instance_norm")
def _instance_norm(e: Emitter, n: Node) -> Outputs:
    m = _args(n, InstanceNorm)
    cls = {3: "InstanceNorm1d", 4: "InstanceNorm2d", 5: "InstanceNorm3d"}[e.type().rank]
    return {"y": e.call_module(Ctor.of(cls, _channels(e), eps=m.eps, affine=m.affine), e.x())}


@TABLE.register("layer_norm2d")
def _layer_norm2d(e: Emitter, n: Node) -> Outputs:
    m = _args(n, LayerNorm2d)
    ctor = Ctor.of("LayerNorm", _channels(e), eps=m.eps, elementwise_affine=m.elementwise_affine)
    name = n.id.replace(".", "_")
    nhwc = e.named(e.method("permute", e.x(), 0, 2, 3, 1), f"{name}_nhwc")  # (batch, H, W, C)
    y = e.named(e.call_module(ctor, nhwc), f"{name}_normed")  # normalised over C
    return {"y": e.method("permute", y, 0, 3, 1, 2)}  # (batch, C, H, W)
