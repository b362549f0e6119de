"""Independent float64 references for the spatial ops beyond the seed set (transposed and 3-D
convolution, 3-D and adaptive pooling, interpolation, pixel shuffle, padding): each op's
definition written out with index arithmetic, for `test_torch_ops.REFERENCES`.

A reference takes the built module (for its weights), the case's arguments as written (defaults
left out) and the inputs by port, and returns the outputs by port.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import torch

Inputs = dict[str, torch.Tensor]
Ref = Callable[[torch.nn.Module, dict[str, Any], Inputs], Inputs]


def _layer(m: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    layer = m.get_submodule("n")
    weight, bias = layer.get_parameter("weight"), getattr(layer, "bias", None)
    return weight.detach().double(), None if bias is None else bias.detach().double()


def _tup(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (v,) * n if isinstance(v, int) else tuple(v)


# --- convolution ---------------------------------------------------------------------------

def _grouped(x: torch.Tensor, w: torch.Tensor, groups: int, spec: str) -> torch.Tensor:
    """einsum per group, concatenated along the output channels."""
    xs, ws = x.chunk(groups, dim=1), w.chunk(groups, dim=0)
    return torch.cat([torch.einsum(spec, xg, wg) for xg, wg in zip(xs, ws, strict=True)], dim=1)


def conv3d(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    """y[n, o, z] = b[o] + sum over c in o's group and kernel offsets k of x_pad[n, c, z s + k d] w[o, c, k]."""
    w, b = _layer(m)
    t = x["x"].double()
    k, s, d = w.shape[2:], _tup(a.get("stride", 1), 3), _tup(a.get("dilation", 1), 3)
    padding = a.get("padding", 0)
    if padding == "same":  # total d(k-1) per dim, the odd one at the end
        total = [dd * (kk - 1) for kk, dd in zip(k, d, strict=True)]
        pairs = [(q // 2, q - q // 2) for q in total]
    else:
        pairs = [(q, q) for q in _tup(0 if padding == "valid" else padding, 3)]
    t = torch.nn.functional.pad(t, [q for pair in reversed(pairs) for q in pair])
    out = [(n - dd * (kk - 1) - 1) // ss + 1 for n, kk, ss, dd in zip(t.shape[2:], k, s, d, strict=True)]
    groups = a.get("groups", 1)
    y = torch.zeros(t.shape[0], w.shape[0], *out, dtype=torch.float64)
    for i in range(k[0]):
        for j in range(k[1]):
            for l in range(k[2]):  # noqa: E741
                patch = t[:, :, i * d[0]::s[0], j * d[1]::s[1], l * d[2]::s[2]][:, :, :out[0], :out[1], :out[2]]
                wg = w[:, :, i, j, l].reshape(groups, -1, w.shape[1])  # (g, O/g, C/g)
                xg = patch.reshape(t.shape[0], groups, w.shape[1], *out)
                y += torch.einsum("ngcdhw,goc->ngodhw", xg, wg).reshape(y.shape)
    return {"y": y if b is None else y + b.view(1, -1, 1, 1, 1)}


def conv_transpose(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    """Every input element scatters x[n, c, l] w[c, o, k] to output position l s - p + k d (1-D or 2-D)."""
    w, b = _layer(m)
    t = x["x"].double()
    dims = t.dim() - 2
    k = w.shape[2:]
    s, d = _tup(a.get("stride", 1), dims), _tup(a.get("dilation", 1), dims)
    p, op = _tup(a.get("padding", 0), dims), _tup(a.get("output_padding", 0), dims)
    groups = a.get("groups", 1)
    full = [(n - 1) * ss + dd * (kk - 1) + 1 + oo for n, kk, ss, dd, oo in zip(t.shape[2:], k, s, d, op, strict=True)]
    y = torch.zeros(t.shape[0], w.shape[1] * groups, *full, dtype=torch.float64)
    offsets = [(i,) for i in range(k[0])] if dims == 1 else [(i, j) for i in range(k[0]) for j in range(k[1])]
    for off in offsets:
        contrib = _grouped(t, w[(slice(None), slice(None), *off)], groups, "nc...,co->no...")
        index = tuple(slice(o * dd, o * dd + (n - 1) * ss + 1, ss)
                      for o, dd, ss, n in zip(off, d, s, t.shape[2:], strict=True))
        y[(slice(None), slice(None), *index)] += contrib
    crop = tuple(slice(pp, n - pp) for pp, n in zip(p, full, strict=True))  # the output_padding end stays
    y = y[(slice(None), slice(None), *crop)]
    return {"y": y if b is None else y + b.view(1, -1, *([1] * dims))}


# --- pooling -------------------------------------------------------------------------------

def _pool_out(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    out = (n + 2 * p - k + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:  # the last window must start inside the input or left padding
        out -= 1
    return out


def _windows(t: torch.Tensor, k: Sequence[int], s: Sequence[int], out: Sequence[int]) -> torch.Tensor:
    """(N, C, *out, *k): the windows of the last three dims."""
    for axis, (kk, ss, oo) in enumerate(zip(k, s, out, strict=True)):
        t = t.unfold(2 + axis, kk, ss).narrow(2 + axis, 0, oo)
    return t


def _pool3d_setup(a: dict[str, Any], t: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...], int, list[int], int]:
    k = _tup(a["kernel_size"], 3)
    s = _tup(a.get("stride") or a["kernel_size"], 3)
    p = a.get("padding", 0)
    out = [_pool_out(n, kk, ss, p, a.get("ceil_mode", False)) for n, kk, ss in zip(t.shape[2:], k, s, strict=True)]
    extra = max(k) + max(s)  # room on the right for the last (ceil-mode) windows
    return k, s, p, out, extra


def max_pool3d(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    k, s, p, out, extra = _pool3d_setup(a, t)
    padded = torch.nn.functional.pad(t, [p, p + extra] * 3, value=-math.inf)
    return {"y": _windows(padded, k, s, out).amax(dim=(-3, -2, -1))}


def avg_pool3d(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    """Window sums over zero padding, divided by the window's cells inside the padded input
    (count_include_pad) or inside the input itself."""
    t = x["x"].double()
    k, s, p, out, extra = _pool3d_setup(a, t)
    sums = _windows(torch.nn.functional.pad(t, [p, p + extra] * 3), k, s, out).sum(dim=(-3, -2, -1))
    ones = torch.ones(1, 1, *t.shape[2:], dtype=torch.float64)
    if a.get("count_include_pad", True):
        mask = torch.nn.functional.pad(torch.nn.functional.pad(ones, [p, p] * 3, value=1.0), [0, extra] * 3)
    else:
        mask = torch.nn.functional.pad(ones, [p, p + extra] * 3)
    return {"y": sums / _windows(mask, k, s, out).sum(dim=(-3, -2, -1))}


def _adaptive(reduce: Callable[[torch.Tensor, int], torch.Tensor], spatial: int) -> Ref:
    def ref(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
        t = x["x"].double()
        sizes = (a["output_size"],) * spatial if isinstance(a["output_size"], int) else tuple(a["output_size"])
        for axis, out in zip(range(t.dim() - spatial, t.dim()), sizes, strict=True):
            if out is None:
                continue
            n = t.shape[axis]
            bins = [t.narrow(axis, i * n // out, math.ceil((i + 1) * n / out) - i * n // out) for i in range(out)]
            t = torch.cat([reduce(part, axis) for part in bins], dim=axis)
        return {"y": t}

    return ref


def _mean(t: torch.Tensor, axis: int) -> torch.Tensor:
    return t.sum(axis, keepdim=True) / t.shape[axis]


def _max(t: torch.Tensor, axis: int) -> torch.Tensor:
    return t.amax(axis, keepdim=True)


# --- resampling ----------------------------------------------------------------------------

def _cubic(t: float, a: float = -0.75) -> float:
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _matrix(n: int, out: int, inv_scale: Fraction, mode: str, align: bool) -> torch.Tensor:
    """The (out, n) matrix that resamples one axis of length n to `out` values."""
    mat = torch.zeros(out, n, dtype=torch.float64)
    for j in range(out):
        if mode in ("nearest", "nearest-exact"):
            src = math.floor((j + (Fraction(1, 2) if mode == "nearest-exact" else 0)) * inv_scale)
            mat[j, min(src, n - 1)] = 1.0
            continue
        pos = Fraction(j * (n - 1), out - 1) if align and out > 1 else Fraction(0) if align else \
            (j + Fraction(1, 2)) * inv_scale - Fraction(1, 2)
        if mode == "bicubic":
            i0 = math.floor(pos)
            for i in range(i0 - 1, i0 + 3):
                mat[j, min(max(i, 0), n - 1)] += _cubic(float(pos - i))
            continue
        pos = max(pos, Fraction(0))
        i0 = min(math.floor(pos), n - 1)
        lam = float(pos - i0)
        mat[j, i0] += 1 - lam
        mat[j, min(i0 + 1, n - 1)] += lam
    return mat


def interpolate(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    """Separable resampling: one interpolation matrix per spatial axis (nearest, linear or cubic
    weights at PyTorch's source coordinates), computed with exact fractions."""
    t = x["x"].double()
    dims = t.dim() - 2
    mode, align = a.get("mode", "nearest"), bool(a.get("align_corners"))
    for axis in range(2, t.dim()):
        n = t.shape[axis]
        if "scale_factor" in a:
            sf = a["scale_factor"] if isinstance(a["scale_factor"], list) else [a["scale_factor"]] * dims
            scale = Fraction(repr(float(sf[axis - 2])))
            out, inv = math.floor(n * scale), 1 / scale
        else:
            size = a["size"] if isinstance(a["size"], list) else [a["size"]] * dims
            out = size[axis - 2]
            inv = Fraction(n, out)
        mat = _matrix(n, out, inv, mode, align)
        t = torch.movedim(torch.tensordot(t, mat, dims=([axis], [1])), -1, axis)
    return {"y": t}


def pixel_shuffle(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    """y[..., c, h r + i, w r + j] = x[..., c r² + i r + j, h, w], index by index."""
    t, r = x["x"].double(), a["upscale_factor"]
    *lead, c, h, w = t.shape
    y = torch.zeros(*lead, c // (r * r), h * r, w * r, dtype=torch.float64)
    for i in range(r):
        for j in range(r):
            y[..., i::r, j::r] = t[..., i * r + j::r * r, :, :]
    return {"y": y}


def pixel_unshuffle(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    """y[..., c r² + i r + j, h, w] = x[..., c, h r + i, w r + j], index by index."""
    t, r = x["x"].double(), a["downscale_factor"]
    *lead, c, h, w = t.shape
    y = torch.zeros(*lead, c * r * r, h // r, w // r, dtype=torch.float64)
    for i in range(r):
        for j in range(r):
            y[..., i * r + j::r * r, :, :] = t[..., i::r, j::r]
    return {"y": y}


def _source_index(j: int, n: int, mode: str) -> int:
    """Which input index output position j (counted from the first padded cell at -pad) reads."""
    if mode == "reflect":
        period = 2 * (n - 1)
        j %= period
        return j if j < n else period - j
    if mode == "replicate":
        return min(max(j, 0), n - 1)
    return j % n  # circular


def pad(m: torch.nn.Module, a: dict[str, Any], x: Inputs) -> Inputs:
    t = x["x"].double()
    mode = a.get("mode", "constant")
    pads = a["pads"]
    for i in range(0, len(pads), 2):
        axis, (before, after) = t.dim() - 1 - i // 2, pads[i:i + 2]
        n = t.shape[axis]
        if mode == "constant":
            shape = list(t.shape)
            shape[axis] = n + before + after
            y = torch.full(shape, float(a.get("value", 0.0)), dtype=torch.float64)
            lo, hi = max(before, 0), max(-before, 0)  # where the kept input lands, and what is cropped
            kept = n - hi - max(-after, 0)
            y.narrow(axis, lo, kept).copy_(t.narrow(axis, hi, kept))
            t = y
        else:
            index = torch.tensor([_source_index(j, n, mode) for j in range(-before, n + after)])
            t = t.index_select(axis, index)
    return {"y": t}


REFERENCES: dict[str, Ref] = {
    "conv3d": conv3d,
    "conv_transpose1d": conv_transpose,
    "conv_transpose2d": conv_transpose,
    "max_pool3d": max_pool3d,
    "avg_pool3d": avg_pool3d,
    "adaptive_avg_pool1d": _adaptive(_mean, 1),
    "adaptive_avg_pool2d": _adaptive(_mean, 2),
    "adaptive_max_pool1d": _adaptive(_max, 1),
    "adaptive_max_pool2d": _adaptive(_max, 2),
    "interpolate": interpolate,
    "upsample": interpolate,
    "pixel_shuffle": pixel_shuffle,
    "pixel_unshuffle": pixel_unshuffle,
    "pad": pad,
}
"""Op name to its reference, merged into `test_torch_ops.REFERENCES`."""
