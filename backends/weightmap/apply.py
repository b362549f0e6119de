"""Applying a weight map: a foreign checkpoint in, the spec's state_dict out, every key accounted for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nnspec.builder import Spec, compile_graph, load_spec
from nnspec.builder.errors import did_you_mean

from .checkpoint import read_checkpoint
from .mapfile import Rule, WeightMap, load_map, specificity, substitute

__all__ = ["ImportResult", "WeightImportError", "expected_weights", "import_weights"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


class WeightImportError(ValueError):
    """A checkpoint that does not fit the spec through the map: one line per key, naming it."""


@dataclass
class ImportResult:
    """The imported weights and what happened on the way.

    Attributes:
        state_dict: the spec's state_dict keys to tensors, in the spec's order.
        missing: spec keys left out (only with ``allow_missing``).
        notes: things the user should know (dtype casts), one line each.
    """

    state_dict: dict[str, torch.Tensor]
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def expected_weights(spec: Spec | str | Path | Mapping[str, Any], signature: str | None = None) -> dict[str, torch.Tensor]:
    """The spec's state_dict as meta tensors: every key with its shape and dtype, nothing allocated."""
    from nnspec.backends.pytorch import to_torch

    g = compile_graph(spec if isinstance(spec, Spec) else load_spec(spec), signature)  # type: ignore[arg-type]
    module = to_torch(g, device="meta")
    return dict(module.state_dict())


def import_weights(spec: Spec | str | Path | Mapping[str, Any], checkpoint: str | Path | Mapping[str, torch.Tensor],
                   weight_map: WeightMap | str | Path | Mapping[str, Any], *, allow_missing: bool = False,
                   dtype: str | None = None, signature: str | None = None) -> ImportResult:
    """Turn a foreign checkpoint into the spec's weights through a map.

    Args:
        spec: the spec (anything `load_spec` reads, or a `Spec`).
        checkpoint: a checkpoint file (see `read_checkpoint`) or a mapping of names to tensors.
        weight_map: the map (a file, a mapping, or a loaded `WeightMap`).
        allow_missing: leave out spec weights the map or the checkpoint does not give,
            instead of failing (they are listed in the result).
        dtype: cast floating-point weights to this dtype (``float32``, ``float16``, ``bfloat16``);
            by default they keep the checkpoint's dtype.
        signature: import the weights of this signature of the spec only.

    Returns:
        The state_dict, ready for `save_weights`, `to_torch(...).load_state_dict` or `to_onnx`.

    Raises:
        WeightImportError: naming every unmapped, missing, or shape- or dtype-mismatched key.
        MapError, CheckpointError: the map or the checkpoint cannot be read.
    """
    wmap = weight_map if isinstance(weight_map, WeightMap) else load_map(weight_map)
    source = dict(checkpoint) if isinstance(checkpoint, Mapping) else read_checkpoint(checkpoint)
    expected = expected_weights(spec, signature)
    if dtype is not None and dtype not in DTYPES:
        raise WeightImportError(f"dtype '{dtype}' is not one of {', '.join(DTYPES)}")
    problems: list[str] = []
    used: set[str] = set()
    result = ImportResult({})
    for key, want in expected.items():
        hits = _rules_for(wmap, key)
        if len(hits) != 1:
            if hits:
                problems.append(f"'{key}': several rules of the map give it ({', '.join(h[0] for h in hits)})")
            elif allow_missing:
                result.missing.append(key)
            else:
                problems.append(f"'{key}' {list(want.shape)}: no rule in the map gives it")
            continue
        _, rule, index = hits[0]
        names = [substitute(s, index) for s in rule.sources]
        absent = [n for n in names if n not in source]
        if absent:
            if allow_missing:
                result.missing.append(key)
            else:
                problems.append(f"'{key}': the checkpoint has no '{absent[0]}'{_hint(absent[0], source)}")
            continue
        used.update(names)
        tensor = _apply(rule, [source[n] for n in names], key, problems)
        if tensor is not None and _fits(key, tensor, want, names, problems):
            result.state_dict[key] = tensor
    used |= _check_ties(wmap, source, used, problems)
    for name, tensor in source.items():
        if name not in used and not any(p.match(name) for p in wmap.drop_patterns):
            problems.append(f"unmapped checkpoint tensor '{name}' {list(tensor.shape)} {_dtype_name(tensor)}: "
                            "no rule reads it and the map does not drop it")
    if problems:
        where = wmap.path or wmap.name
        noun = "problem" if len(problems) == 1 else "problems"
        raise WeightImportError(f"{where}: {len(problems)} {noun} importing the checkpoint:\n  " + "\n  ".join(problems))
    result.notes.extend(_settle_dtypes(result.state_dict, expected, dtype))
    return result


def _rules_for(wmap: WeightMap, key: str) -> list[tuple[str, Rule, dict[str, str]]]:
    """(pattern, rule, indices) of the most specific rules whose spec-key pattern matches `key` (one,
    unless the map is ambiguous)."""
    hits = [(pattern, rule, m.groupdict()) for regex, pattern, rule in wmap.target_patterns if (m := regex.match(key))]
    best = max((specificity(h[0]) for h in hits), default=0)
    return [h for h in hits if specificity(h[0]) == best]


def _hint(name: str, source: Mapping[str, Any]) -> str:
    return "".join(f" ({h})" for h in did_you_mean(name, source))


def _apply(rule: Rule, parts: list[torch.Tensor], key: str, problems: list[str]) -> torch.Tensor | None:
    """take -> split -> transpose -> reshape; a transform that does not fit is a problem naming the key."""
    try:
        t = parts[0] if len(parts) == 1 else torch.cat(parts, dim=rule.dim)
        if rule.split is not None:
            s = rule.split
            pieces = torch.chunk(t, s.parts, dim=s.dim) if s.parts is not None else torch.split(t, list(s.sizes or ()), s.dim)
            if s.parts is not None and (t.shape[s.dim] % s.parts or len(pieces) != s.parts):
                raise ValueError(f"dim {s.dim} of size {t.shape[s.dim]} does not split into {s.parts} equal parts")
            t = pieces[s.index]
        if rule.transpose is True:
            if t.dim() != 2:
                raise ValueError(f"transpose: true swaps the dims of a 2-D tensor, this one is {list(t.shape)}; "
                                 "give a permutation")
            t = t.t()
        elif rule.transpose:
            t = t.permute(*rule.transpose)
        if rule.reshape is not None:
            t = t.reshape(*rule.reshape)
    except (RuntimeError, ValueError, IndexError) as exc:
        problems.append(f"'{key}': the map's transforms do not apply to {[list(p.shape) for p in parts]}: {exc}")
        return None
    return t.contiguous()


def _fits(key: str, tensor: torch.Tensor, want: torch.Tensor, names: list[str], problems: list[str]) -> bool:
    src = ", ".join(f"'{n}'" for n in names)
    if tuple(tensor.shape) != tuple(want.shape):
        problems.append(f"'{key}': the spec needs {list(want.shape)}, the map makes {list(tensor.shape)} from {src}")
        return False
    if tensor.is_floating_point() != want.is_floating_point() or (
            not want.is_floating_point() and tensor.dtype != want.dtype):
        problems.append(f"'{key}': the spec needs {_dtype_name(want)}, {src} is {_dtype_name(tensor)}")
        return False
    return True


def _check_ties(wmap: WeightMap, source: Mapping[str, torch.Tensor], used: set[str], problems: list[str]) -> set[str]:
    """Each tied checkpoint key must hold the same values as its partner (or be absent)."""
    accounted: set[str] = set()
    for copy, original in wmap.tie.items():
        if copy not in source:
            continue
        accounted.add(copy)
        if original not in source:
            problems.append(f"tie: '{copy}' is tied to '{original}', which the checkpoint does not have")
        elif source[copy].shape != source[original].shape or not torch.equal(source[copy], source[original]):
            problems.append(f"tie: '{copy}' differs from '{original}', but the spec ties them "
                            "(the checkpoint was trained untied)")
    return accounted


def _settle_dtypes(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor], dtype: str | None) -> list[str]:
    """Keep the checkpoint's floating dtype (or cast to `dtype`); say what differs from the spec's default."""
    floats = {_dtype_name(t) for t in state.values() if t.is_floating_point()}
    if dtype is not None:
        target = DTYPES[dtype]
        for k, t in state.items():
            if t.is_floating_point():
                state[k] = t.to(target)
        return [f"cast {'/'.join(sorted(floats))} weights to {dtype}"] if floats - {dtype} else []
    if len(floats) > 1:
        return [f"the checkpoint mixes {', '.join(sorted(floats))} weights; they are kept as they are "
                "(give dtype to cast them to one)"]
    spec_floats = {_dtype_name(t) for t in expected.values() if t.is_floating_point()}
    if floats and floats != spec_floats:
        return [f"the weights are {floats.pop()} (the spec's default is {'/'.join(sorted(spec_floats))}); "
                "they are kept as they are"]
    return []


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")

