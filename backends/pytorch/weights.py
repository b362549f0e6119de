"""Weights as safetensors files (or PyTorch ``.pt``/``.bin`` state_dicts), keyed by state_dict names.

A tensor shared by several state_dict keys (a tied weight in a hand-written module) is
stored once, under its first key; loading gives it back to every key that shares it. A
signature built alone loads a stand-in for a tied weight from its owner's key. A file of
another floating-point dtype than the module's is cast with a `WeightDtypeWarning`.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from nnspec.backends.outputs import InputFileError, temporary_beside
from nnspec.backends.weightfiles import TORCH_SUFFIXES, WeightDtypeWarning
from nnspec.builder.errors import did_you_mean

from .module import spec_info

__all__ = ["WeightsError", "load_weights", "save_weights"]


class WeightsError(InputFileError):
    """A weights file that does not fit the module: one line per missing, unexpected or mis-shaped tensor."""


def _storage_key(t: torch.Tensor) -> tuple[object, ...]:
    """Tensors with equal keys are the same view of the same memory (a tied weight)."""
    if t.device.type == "meta":
        return (id(t),)
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _shared(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Each key whose tensor an earlier key already holds, mapped to that earlier key."""
    first: dict[tuple[object, ...], str] = {}
    out = {}
    for key, t in state.items():
        k = _storage_key(t)
        if k in first:
            out[key] = first[k]
        else:
            first[k] = key
    return out


def save_weights(module_or_state: nn.Module | Mapping[str, torch.Tensor], path: str | Path,
                 metadata: Mapping[str, Any] | None = None,
                 file_format: Literal["safetensors", "torch"] | None = None) -> None:
    """Write a module's state_dict (or a state dict) to a safetensors file, atomically.

    The same weights give the same bytes: the header holds one metadata entry, ``nnspec``,
    a JSON object with sorted keys (safetensors does not keep the order of several entries).

    Args:
        module_or_state: the module, or a mapping of names to tensors.
        path: the file to write; it is replaced only once the new file is complete.
        metadata: JSON-serialisable values to record under ``nnspec`` in the header (safetensors only).
        file_format: ``torch``: a plain state_dict through ``torch.save``, which any PyTorch code
            loads with ``torch.load(weights_only=True)`` (tied tensors stay shared); default:
            ``torch`` for a path ending in `TORCH_SUFFIXES`, else safetensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else dict(module_or_state)
    target = Path(path)
    if file_format is None:
        file_format = "torch" if target.suffix.lower() in TORCH_SUFFIXES else "safetensors"
    if file_format == "torch":
        with temporary_beside(target) as tmp:
            torch.save({k: v.detach().to("cpu") for k, v in state.items()}, tmp)
            os.replace(tmp, target)
        return
    shared = _shared(state)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k not in shared}
    info = dict(metadata or {})
    if shared:
        info["shared"] = shared  # key -> the key it is stored under
    meta = {"nnspec": json.dumps(info, sort_keys=True)}
    with temporary_beside(target) as tmp:  # removed on failure and on SIGTERM/SIGHUP
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except SafetensorError as exc:  # a full disk arrives as text: give it back its errno
            code = re.search(r"os error (\d+)", str(exc))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(target)) from None
        os.replace(tmp, target)


def load_weights(module: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load a safetensors file or a PyTorch state_dict (``.pt``/``.bin``) into `module` (in place)
    and return it.

    Floating-point tensors of another dtype than the module's (a float16 checkpoint in a float32
    module) are cast to the module's with a `WeightDtypeWarning`; convert the module first
    (``module.to(torch.float16)``) to keep them as they are.

    Args:
        module: the module to fill; its state_dict names the tensors it needs.
        path: a file written by `save_weights`, any safetensors file with matching keys, or a
            ``torch.save`` state_dict, read through ``torch.load(weights_only=True)`` only.
        strict: tensors in the file that the module does not have are an error. With False
            they are ignored (e.g. loading the main graph's weights into one signature).

    Raises:
        WeightsError: naming every missing, unexpected or mis-shaped tensor, or a file that is no
            state_dict; nothing is loaded.
        FileNotFoundError: no such file.
    """
    loaded = _read(path)
    expected = module.state_dict()
    used = _fill_shared(module, expected, loaded)
    problems = []
    for key, want in expected.items():
        got = loaded.get(key)
        if got is None:
            problems.append(f"missing tensor '{key}' {list(want.shape)}")
        elif tuple(got.shape) != tuple(want.shape):
            problems.append(f"tensor '{key}' is {list(got.shape)} in the file, the module needs {list(want.shape)}")
        elif want.is_floating_point() and not got.is_floating_point():  # a cast would hide a wrong file
            problems.append(f"tensor '{key}' is {str(got.dtype).removeprefix('torch.')} in the file, the module "
                            f"needs {str(want.dtype).removeprefix('torch.')}")
    if strict:
        for key in loaded:
            if key not in expected and key not in used:
                hints = "".join(f" ({h})" for h in did_you_mean(key, [k for k in expected if k not in loaded]))
                problems.append(f"unexpected tensor '{key}' {list(loaded[key].shape)}{hints}")
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise WeightsError(f"{path}: {len(problems)} {noun} loading into {type(module).__name__}:\n  "
                           + "\n  ".join(problems))
    casts = {(str(loaded[k].dtype), str(want.dtype)) for k, want in expected.items()
             if want.is_floating_point() and loaded[k].dtype != want.dtype}
    if casts:
        given = sorted({a.removeprefix("torch.") for a, _ in casts})
        warnings.warn(WeightDtypeWarning(given, (b.removeprefix("torch.") for _, b in casts), "module",
                                         f"convert the module first, module.to(torch.{given[0]}), to keep them"),
                      stacklevel=2)
    module.load_state_dict({k: loaded[k] for k in expected}, strict=True)
    return module


def _read(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or ``torch.save`` file; a bad file is a `WeightsError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from nnspec.backends.weightfiles import WeightsFileError, check_safetensors, read_torch_weights, weights_format

    try:
        if weights_format(path) == "torch":
            return read_torch_weights(path)
        check_safetensors(path)  # a device, a truncated file, an unknown dtype: named, before safetensors reads it
    except WeightsFileError as exc:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such weights file") from None
        raise WeightsError(str(exc)) from None
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def _fill_shared(module: nn.Module, expected: Mapping[str, torch.Tensor], loaded: dict[str, torch.Tensor]) -> set[str]:
    """Give keys that share a tensor (ties) or stand in for one (signature aliases) their stored
    value; returns the file keys used that way."""
    used: set[str] = set()
    for key, first in _shared(expected).items():
        if key not in loaded and first in loaded:
            loaded[key] = loaded[first]
    meta = getattr(module, "meta", None)
    aliases = spec_info(module)["aliases"] if isinstance(meta, dict) and "nnspec" in meta else {}
    for holder, owner in aliases.items():
        if holder not in loaded and owner in loaded:
            loaded[holder] = loaded[owner]
            used.add(owner)
    return used
