"""Reading foreign checkpoints as name -> tensor, without ever unpickling arbitrary objects.

Formats are told apart by their bytes, not their names: safetensors (an 8-byte header length,
then JSON), a sharded safetensors index (``*.safetensors.index.json``), and PyTorch's
``torch.save`` files (``.bin``/``.pt``, zip or legacy pickle), which are read through
``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nnspec.builder.text import printable

__all__ = ["CheckpointError", "read_checkpoint", "read_torch_state_dict"]

NESTED_KEYS = ("state_dict", "model", "module", "model_state_dict")
"""Where training scripts commonly keep the weights inside a saved dict."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as tensors (the message names the file)."""


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, by name, in the dtype it was saved in.

    Args:
        path: a safetensors file, a sharded safetensors index (JSON), or a PyTorch
            ``.bin``/``.pt`` state_dict (optionally inside a dict under ``state_dict``/``model``).

    Raises:
        CheckpointError: no such file, an unknown format, a file that does not hold only
            tensors, or a pickle that needs more than tensors to load.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    with open(p, "rb") as f:
        head = f.read(16)
    if p.name.endswith(".json"):
        return _read_index(p)
    if _looks_like_safetensors(head):
        return _read_safetensors(p)
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return read_torch_state_dict(p)
    raise CheckpointError(f"{p}: not a checkpoint nnspec can read (safetensors, a safetensors index, "
                          "or a PyTorch .bin/.pt state_dict)")


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    (size,) = struct.unpack("<Q", head[:8])
    return 2 <= size < 1 << 31 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _read_index(path: Path) -> dict[str, torch.Tensor]:
    """A sharded checkpoint: ``weight_map`` names the shard of each tensor, beside the index."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors index ({exc})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{path}: a safetensors index needs a 'weight_map' of tensor name to shard file")
    root = path.parent.resolve()
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        file = (root / shard).resolve()
        if file.parent != root:
            raise CheckpointError(f"{path}: shard '{shard}' is not a file beside the index")
        if not file.is_file():
            raise CheckpointError(f"{path}: shard '{shard}' does not exist")
        tensors = _read_safetensors(file)
        for key, tensor in tensors.items():
            if weight_map.get(key) != shard:
                raise CheckpointError(f"{path}: tensor '{key}' is in shard '{shard}', but the index does not list it there")
            out[key] = tensor
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{path}: the index lists {len(missing)} tensor(s) its shards lack, e.g. '{missing[0]}'")
    return out


def read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save`` file's state_dict, through ``torch.load(weights_only=True)`` only.

    Raises:
        CheckpointError: the pickle needs more than tensors, or holds more than a state_dict.
    """
    import warnings

    try:
        with warnings.catch_warnings():  # a damaged file's odd pickle protocol: the error below says it
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as exc:  # a damaged file raises any type (IndexError, BadZipFile, ...); all mean "not loadable"
        reason = _refusal(exc)
        advice = "; save model.state_dict(), not the model" if reason.startswith("Unsupported global") else ""
        raise CheckpointError(f"{path}: not a PyTorch state_dict nnspec will load (only tensors are unpickled, "
                              f"never arbitrary objects{advice}): {reason}") from None
    return _tensors_of(obj, path)


def _refusal(exc: BaseException) -> str:
    """What torch.load refused, in one printable line: the unpickler's reason (``Unsupported global:
    GLOBAL mymodule.Net ...``) rather than the advice on loading untrusted files around it."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?= Please use|\n|$)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = found.group(1) if found else lines[0] if lines else type(exc).__name__
    return printable(reason.split(". ")[0])[:300]  # the first sentence: the rest is torch's advice


def _tensors_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict inside what torch.load returned; anything but name -> tensor is an error."""
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = [k for k in NESTED_KEYS if isinstance(obj.get(k), Mapping)]
        if nested:
            obj = obj[nested[0]]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors)")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: '{key}' is a {type(value).__name__}, not a tensor")
        out[key] = value
    return out
