"""Weight maps: YAML data files that say how a foreign checkpoint's tensors become a spec's weights.

A map names, for every weight of the spec (a state_dict key, with ``{i}``-style layer
indices), the checkpoint tensor(s) it comes from and the transforms on the way::

    weights:
      wte.weight: transformer.wte.weight                      # rename
      h.{i}.attn.in_proj_weight:                              # GPT-2's Conv1D is (in, out)
        {from: 'transformer.h.{i}.attn.c_attn.weight', transpose: true}
      encoder.{i}.attention.in_proj_weight:                   # BERT's separate q, k, v, packed
        concat: ['bert.encoder.layer.{i}.attention.self.query.weight', ...]
    drop: ['transformer.h.{i}.attn.bias']                     # checkpoint tensors nothing needs
    tie: {lm_head.weight: transformer.wte.weight}             # a copy of another tensor

A rule's transforms run in a fixed order: take (``from``, or ``concat`` along ``dim``), then
``split``, then ``transpose``, then ``reshape``. A source pattern's index may be shifted
(``layer{i+1}``) where the checkpoint counts from another number. ``{*}`` renames a whole
module (``layer{i}.rest.{j}.{*}: layer{i}.{j+1}.{*}``); where several rules match a key, the
one with the most literal text wins (``layer{i}.first.downsample.conv.{*}`` over
``layer{i}.first.{*}``), and a tie is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["MapError", "Rule", "Split", "WeightMap", "load_map"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*|\*)([+-][0-9]+)?\}")
REST = "*"
"""``{*}`` stands for the rest of a key (``bn1.{*}``: every tensor of bn1, buffers included)."""


class MapError(ValueError):
    """A map file that cannot be read or does not make sense (the message names the file and the entry)."""


class Split(BaseModel):
    """Take one piece of a tensor cut along `dim`: into `parts` equal pieces, or pieces of `sizes`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dim: int = 0
    parts: int | None = Field(default=None, ge=1)
    sizes: tuple[int, ...] | None = None
    index: int = Field(ge=0)

    @model_validator(mode="after")
    def _one_way(self) -> Split:
        if (self.parts is None) == (self.sizes is None):
            raise ValueError("split: give exactly one of 'parts' and 'sizes'")
        count = self.parts if self.parts is not None else len(self.sizes or ())
        if self.index >= count:
            raise ValueError(f"split: index {self.index} is out of range for {count} pieces")
        return self


class Rule(BaseModel):
    """Where one spec weight comes from: a checkpoint key (or several, concatenated) and transforms."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    source: str | None = Field(default=None, alias="from")
    concat: tuple[str, ...] | None = None
    dim: int = 0
    split: Split | None = None
    transpose: bool | tuple[int, ...] = False
    reshape: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Rule:
        if (self.source is None) == (self.concat is None):
            raise ValueError("give exactly one of 'from' (a checkpoint key) and 'concat' (a list of keys)")
        if self.concat is not None and len(self.concat) < 2:
            raise ValueError("concat: give at least two keys (use 'from' for one)")
        return self

    @property
    def sources(self) -> tuple[str, ...]:
        """The checkpoint key patterns this rule reads, in order."""
        return (self.source,) if self.source is not None else tuple(self.concat or ())


class WeightMap(BaseModel):
    """A map file: its name and doc, the rules keyed by spec weight pattern, drops and ties."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    doc: str = ""
    spec: str | None = None
    source: str = ""
    weights: dict[str, Rule]
    drop: tuple[str, ...] = ()
    tie: dict[str, str] = Field(default_factory=dict)
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("weights", mode="before")
    @classmethod
    def _plain_renames(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: {"from": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _placeholders(self) -> WeightMap:
        for target, rule in self.weights.items():
            names = {m.group(1) for m in _PLACEHOLDER.finditer(target)}
            if any(m.group(2) for m in _PLACEHOLDER.finditer(target)) or target.count("{*}") > 1:
                raise ValueError(f"weights['{target}']: a spec key's index cannot be shifted (shift it in the "
                                 "source), and it holds at most one {*}")
            for src in rule.sources:
                extra = {m.group(1) for m in _PLACEHOLDER.finditer(src)} - names
                if extra:
                    raise ValueError(f"weights['{target}']: source '{src}' uses {{{', '.join(sorted(extra))}}}, "
                                     f"which the spec key does not bind")
        return self

    @cached_property
    def target_patterns(self) -> list[tuple[re.Pattern[str], str, Rule]]:
        """(regex over spec keys, pattern text, rule) for every rule."""
        return [(pattern_regex(t, capture=True), t, r) for t, r in self.weights.items()]

    @cached_property
    def drop_patterns(self) -> list[re.Pattern[str]]:
        return [pattern_regex(d) for d in self.drop]


def pattern_regex(pattern: str, capture: bool = False) -> re.Pattern[str]:
    """A regex for a key pattern: each ``{name}`` matches a decimal index (captured by name when asked)."""
    out, pos, seen = [], 0, set()
    for m in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        name = m.group(1)
        if name == REST:
            out.append("(?P<_rest>.+)" if capture and name not in seen else "(?:.+)")
            seen.add(name)
        elif capture and name not in seen:
            out.append(f"(?P<{name}>0|[1-9][0-9]*)")
            seen.add(name)
        elif capture:
            out.append(f"(?P={name})")
        else:
            out.append("(?:0|[1-9][0-9]*)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z")


def specificity(pattern: str) -> int:
    """How much literal text a pattern has: the most specific matching rule wins."""
    return len(_PLACEHOLDER.sub("", pattern))


def substitute(pattern: str, index: Mapping[str, str]) -> str:
    """`pattern` with each ``{name}`` / ``{name+k}`` replaced by its (shifted) index."""
    def one(m: re.Match[str]) -> str:
        if m.group(1) == REST:
            return index["_rest"]
        value = int(index[m.group(1)]) + int(m.group(2) or 0)
        if value < 0:
            raise MapError(f"index {{{m.group(1)}{m.group(2)}}} in '{pattern}' is negative for {m.group(1)}={index[m.group(1)]}")
        return str(value)
    return _PLACEHOLDER.sub(one, pattern)


def load_map(source: str | Path | Mapping[str, Any]) -> WeightMap:
    """Read a map file (YAML or JSON) or take a mapping; errors name the file and the entry.

    Raises:
        MapError: the file is missing, unreadable, or not a valid map.
    """
    path: Path | None = None
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise MapError(f"{path}: no such map file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise MapError(f"{path}: cannot read the map: {exc}") from None
    else:
        data = dict(source)
    where = str(path) if path is not None else "map"
    if not isinstance(data, dict):
        raise MapError(f"{where}: a map is a mapping with 'name' and 'weights', got {type(data).__name__}")
    try:
        return WeightMap.model_validate({**data, "path": path})
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])) or 'map'}: {e['msg']}" for e in exc.errors()]
        raise MapError(f"{where}: not a valid weight map:\n  " + "\n  ".join(lines)) from None
