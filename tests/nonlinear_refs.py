"""Independent float64 references for the activations beyond the seed set and the new
normalisation layers: each op's formula written out, for `test_torch_ops.REFERENCES`.

A reference takes the built module (for its weights), the case's arguments as written (defaults
left out) and the inputs by port, and returns the outputs by port.
"""

from __future__ import annotations

from typing import Any

import torch

Inputs = dict[str, torch.Tensor]


def _weight(m: torch.nn.Module, name: str) -> torch.Tensor:
    return m.get_submodule("n").get_parameter(name).detach().double()


def _clip(t: torch.Tensor, low: float | None, high: float | None) -> torch.Tensor:
    if low is not None:
        t = torch.where(t < low, torch.full_like(t, low), t)
    if high is not None:
        t = torch.where(t > high, torch.full_like(t, high), t)
    return t


def _sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + torch.exp(-t))


def _channel(w: torch.Tensor, rank: int) -> torch.Tensor:
    """(C,) as (1, C, 1, ...) against a rank-`rank` (batch, C, *) tensor."""
    return w.view(1, -1, *([1] * (rank - 2)))


def _standardise(t: torch.Tensor, dims: list[int], eps: float) -> torch.Tensor:
    mean = t.sum(dims, keepdim=True) / _count(t, dims)
    var = ((t - mean) ** 2).sum(dims, keepdim=True) / _count(t, dims)
    return (t - mean) / torch.sqrt(var + eps)


def _count(t: torch.Tensor, dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= t.shape[d]
    return n


# --- activations beyond the seed set ---------------------------------------------------------

def relu6(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    return {"y": _clip(x["x"].double(), 0.0, 6.0)}


def hardtanh(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    return {"y": _clip(x["x"].double(), a.get("min_val", -1.0), a.get("max_val", 1.0))}


def clamp(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    return {"y": _clip(x["x"].double(), a.get("min"), a.get("max"))}


def leaky_relu(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    return {"y": torch.where(t >= 0, t, a.get("negative_slope", 0.01) * t)}


def elu(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    return {"y": torch.where(t > 0, t, a.get("alpha", 1.0) * (torch.exp(t) - 1))}


def silu(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    return {"y": t * _sigmoid(t)}


def mish(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    return {"y": t * torch.tanh(torch.log(1 + torch.exp(t)))}


def hardswish(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    return {"y": t * _clip(t + 3, 0.0, 6.0) / 6}


def hardsigmoid(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    return {"y": _clip(x["x"].double() + 3, 0.0, 6.0) / 6}


def softplus(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    beta, threshold = a.get("beta", 1.0), a.get("threshold", 20.0)
    return {"y": torch.where(beta * t > threshold, t, torch.log(1 + torch.exp(beta * t)) / beta)}


def prelu(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t, w = x["x"].double(), _weight(m, "weight")
    slope = w if w.numel() == 1 else _channel(w, t.dim())
    return {"y": torch.where(t >= 0, t, slope * t)}


def glu(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t, dim = x["x"].double(), a.get("dim", -1)
    half = t.shape[dim] // 2
    return {"y": t.narrow(dim, 0, half) * _sigmoid(t.narrow(dim, half, half))}


# --- normalisation beyond batch and layer norm -----------------------------------------------

def rms_norm(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    eps = a.get("eps") or torch.finfo(torch.float32).eps
    y = t / torch.sqrt((t * t).sum(-1, keepdim=True) / t.shape[-1] + eps)
    return {"y": y * _weight(m, "weight") if a.get("elementwise_affine", True) else y}


def group_norm(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    grouped = t.reshape(t.shape[0], a["num_groups"], -1)  # (batch, G, C/G * positions)
    y = _standardise(grouped, [2], a.get("eps", 1e-5)).reshape(t.shape)
    if not a.get("affine", True):
        return {"y": y}
    return {"y": y * _channel(_weight(m, "weight"), t.dim()) + _channel(_weight(m, "bias"), t.dim())}


def instance_norm(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    y = _standardise(t, list(range(2, t.dim())), a.get("eps", 1e-5))
    if not a.get("affine", False):
        return {"y": y}
    return {"y": y * _channel(_weight(m, "weight"), t.dim()) + _channel(_weight(m, "bias"), t.dim())}


def layer_norm2d(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    y = _standardise(t, [1], a.get("eps", 1e-6))  # over the channels at each (h, w)
    if not a.get("elementwise_affine", True):
        return {"y": y}
    return {"y": y * _channel(_weight(m, "weight"), 4) + _channel(_weight(m, "bias"), 4)}
