"""PyTorch lowerings of transposed and 3-D convolution, adaptive and 3-D pooling, resampling, padding.

Layers with weights are torch.nn modules (state_dict keys ``<node id>.weight``); the rest are
torch.nn.functional calls with the node's arguments.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch.nn.functional as F

from nnspec.builder import Node, Op
from nnspec.builder.ops.spatial import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool3d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    Interpolate,
    MaxPool3d,
    Pad,
    PixelShuffle,
    PixelUnshuffle,
)

from .emitter import Ctor, Emitter, Outputs
from .lowering import TABLE

__all__: list[str] = []

M = TypeVar("M", bound=Op)


def _model(n: Node, cls: type[M]) -> M:
    """The node's validated arguments, typed as its op's model."""
    if not isinstance(n.model, cls):  # pragma: no cover - the table is keyed by op name
        raise TypeError(f"node '{n.id}': expected a {cls.__name__} node, got {type(n.model).__name__}")
    return n.model


def _in_channels(e: Emitter) -> int:
    return int(e.type().shape[1])


@TABLE.register("conv3d")
def _conv3d(e: Emitter, n: Node) -> Outputs:
    m = _model(n, Conv3d)
    ctor = Ctor.of("Conv3d", _in_channels(e), m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                   dilation=m.dilation, groups=m.groups, bias=m.bias)
    return {"y": e.call_module(ctor, e.x())}


def _conv_transpose(e: Emitter, m: ConvTranspose1d | ConvTranspose2d, cls: str) -> Outputs:
    ctor = Ctor.of(cls, _in_channels(e), m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                   output_padding=m.output_padding, groups=m.groups, bias=m.bias, dilation=m.dilation)
    return {"y": e.call_module(ctor, e.x())}


@TABLE.register("conv_transpose1d")
def _conv_transpose1d(e: Emitter, n: Node) -> Outputs:
    return _conv_transpose(e, _model(n, ConvTranspose1d), "ConvTranspose1d")


@TABLE.register("conv_transpose2d")
def _conv_transpose2d(e: Emitter, n: Node) -> Outputs:
    return _conv_transpose(e, _model(n, ConvTranspose2d), "ConvTranspose2d")


@TABLE.register("max_pool3d")
def _max_pool3d(e: Emitter, n: Node) -> Outputs:
    m = _model(n, MaxPool3d)
    stride = m.kernel_size if m.stride is None else m.stride
    return {"y": e.fn(F.max_pool3d, e.x(), m.kernel_size, stride, m.padding, ceil_mode=m.ceil_mode)}


@TABLE.register("avg_pool3d")
def _avg_pool3d(e: Emitter, n: Node) -> Outputs:
    m = _model(n, AvgPool3d)
    stride = m.kernel_size if m.stride is None else m.stride
    return {"y": e.fn(F.avg_pool3d, e.x(), m.kernel_size, stride, m.padding, ceil_mode=m.ceil_mode,
                      count_include_pad=m.count_include_pad)}


@TABLE.register("adaptive_avg_pool1d")
def _adaptive_avg_pool1d(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.adaptive_avg_pool1d, e.x(), _model(n, AdaptiveAvgPool1d).output_size)}


@TABLE.register("adaptive_avg_pool2d")
def _adaptive_avg_pool2d(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.adaptive_avg_pool2d, e.x(), _model(n, AdaptiveAvgPool2d).output_size)}


@TABLE.register("adaptive_max_pool1d")
def _adaptive_max_pool1d(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.adaptive_max_pool1d, e.x(), _model(n, AdaptiveMaxPool1d).output_size)}


@TABLE.register("adaptive_max_pool2d")
def _adaptive_max_pool2d(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.adaptive_max_pool2d, e.x(), _model(n, AdaptiveMaxPool2d).output_size)}


@TABLE.register("interpolate", "upsample")
def _interpolate(e: Emitter, n: Node) -> Outputs:
    m = _model(n, Interpolate)  # upsample is a subclass: the same arguments
    kwargs: dict[str, Any] = {"mode": m.mode}
    if m.size is not None:
        kwargs["size"] = m.size
    else:
        kwargs["scale_factor"] = m.scale_factor
    if m.align_corners is not None:
        kwargs["align_corners"] = m.align_corners
    return {"y": e.fn(F.interpolate, e.x(), **kwargs)}


@TABLE.register("pixel_shuffle")
def _pixel_shuffle(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.pixel_shuffle, e.x(), _model(n, PixelShuffle).upscale_factor)}


@TABLE.register("pixel_unshuffle")
def _pixel_unshuffle(e: Emitter, n: Node) -> Outputs:
    return {"y": e.fn(F.pixel_unshuffle, e.x(), _model(n, PixelUnshuffle).downscale_factor)}


@TABLE.register("pad")
def _pad(e: Emitter, n: Node) -> Outputs:
    m = _model(n, Pad)
    if m.mode == "constant":
        return {"y": e.fn(F.pad, e.x(), list(m.pads), value=m.value)}
    return {"y": e.fn(F.pad, e.x(), list(m.pads), mode=m.mode)}
