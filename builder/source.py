"""Reading spec text (YAML or JSON) into plain data plus a map from data paths to positions.

YAML is composed with the C-accelerated safe composer and turned into data by our own walk,
which allows only the standard scalar, sequence and mapping tags (no tag ever builds a
Python object), reports duplicate keys, and counts every value it builds so that alias
expansion ("billion laughs") and deep nesting stop at a limit with a clear error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Diagnostic, SourcePos, SpecError
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["DataPath", "Source", "parse_text", "read_source"]

DataPath = tuple[str | int, ...]

_Composer = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALARS = yaml.constructor.SafeConstructor()
_ALLOWED_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


@dataclass
class Source:
    """Where a spec came from: a file name for messages and positions of its values."""

    file: str = "<spec>"
    positions: dict[DataPath, SourcePos] = field(default_factory=dict)

    def pos(self, path: DataPath) -> SourcePos:
        """The position of `path`, or of its nearest enclosing value that has one."""
        while path:
            found = self.positions.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return self.positions.get((), SourcePos(self.file, 0, 0))


def read_source(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, Source]:
    """Read and parse the spec file at `path`."""
    name = str(path)
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > limits.max_file_bytes:
            raise SpecError.single(
                "limit", f"file is {size} bytes, over the limit of {limits.max_file_bytes}",
                SourcePos(name), hints=("raise it with --limit max_file_bytes=N",))
        raw = p.read_bytes()
    except OSError as exc:
        raise SpecError.single("io", f"cannot read file: {exc.strerror or exc}", SourcePos(name)) from None
    text = _decode(raw, name)
    return parse_text(text, name, json_only=p.suffix.lower() == ".json", limits=limits)


def _decode(raw: bytes, name: str) -> str:
    if b"\x00" in raw[:8192]:
        raise SpecError.single("encoding", "this is a binary file, not YAML or JSON text", SourcePos(name, 1, 1))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError.single(
            "encoding", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})", SourcePos(name, line, col),
            hints=("save the file as UTF-8",)) from None
    return text.removeprefix("\ufeff")


def parse_text(text: str, file: str = "<spec>", *, json_only: bool = False,
               limits: Limits = DEFAULT_LIMITS) -> tuple[Any, Source]:
    """Parse YAML (or strict JSON when `json_only`) text into data and value positions."""
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise SpecError.single("empty", "the spec is empty", SourcePos(file, 1, 1))
    if len(text) > limits.max_file_bytes:
        raise SpecError.single("limit", f"spec text is over the limit of {limits.max_file_bytes} bytes",
                               SourcePos(file))
    if json_only:
        _check_json(text, file)
    try:
        root = yaml.compose(text, Loader=_Composer)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = SourcePos(file, mark.line + 1, mark.column + 1) if mark else SourcePos(file)
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise SpecError.single("syntax", f"invalid YAML: {problem}", pos) from None
    except yaml.YAMLError as exc:
        raise SpecError.single("syntax", f"invalid YAML: {exc}", SourcePos(file)) from None
    except RecursionError:
        raise SpecError.single("limit", "nesting too deep to parse", SourcePos(file)) from None
    if root is None:
        raise SpecError.single("empty", "the spec is empty", SourcePos(file, 1, 1))
    builder = _Builder(file, limits)
    data = builder.build(root, (), 0)
    if builder.diagnostics:
        raise SpecError(builder.diagnostics)
    return data, Source(file, builder.positions)


def _check_json(text: str, file: str) -> None:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen[key] = value
        return seen

    try:
        json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise SpecError.single("syntax", f"invalid JSON: {exc.msg}", SourcePos(file, exc.lineno, exc.colno)) from None
    except _DuplicateKey:
        pass  # reported with its position by the YAML walk
    except RecursionError:
        raise SpecError.single("limit", "nesting too deep to parse", SourcePos(file)) from None


class _DuplicateKey(Exception):
    pass


class _Builder:
    """Walks a composed YAML node tree into plain data, recording positions."""

    def __init__(self, file: str, limits: Limits) -> None:
        self.file = file
        self.limits = limits
        self.items = 0
        self.positions: dict[DataPath, SourcePos] = {}
        self.diagnostics: list[Diagnostic] = []

    def _pos(self, node: yaml.Node) -> SourcePos:
        return SourcePos(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: DataPath, depth: int) -> Any:
        self.items += 1
        if self.items > self.limits.max_items:
            raise SpecError.single(
                "limit", f"the spec expands to more than {self.limits.max_items} values "
                "(YAML aliases expanding exponentially?)", self._pos(node),
                hints=("raise it with --limit max_items=N",))
        if depth > self.limits.max_depth:
            raise SpecError.single("limit", f"nesting deeper than {self.limits.max_depth} levels", self._pos(node))
        self.positions.setdefault(path, self._pos(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if node.tag not in _ALLOWED_SCALAR_TAGS:
            self.diagnostics.append(Diagnostic(
                "yaml-tag", f"YAML tag '{node.tag}' is not allowed in a spec", self._pos(node)))
            return None
        return _SCALARS.construct_object(node)

    def _mapping(self, node: yaml.MappingNode, path: DataPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _ALLOWED_SCALAR_TAGS:
                self.diagnostics.append(Diagnostic("syntax", "mapping keys must be plain text", self._pos(key_node)))
                continue
            key = str(_SCALARS.construct_object(key_node))
            if key in out:
                first = self.positions.get((*path, key))
                self.diagnostics.append(Diagnostic(
                    "duplicate-key", f"key '{key}' appears twice in the same mapping", self._pos(key_node),
                    hints=(f"first defined at line {first.line}",) if first else ()))
                continue
            self.positions[(*path, key)] = self._pos(key_node)
            out[key] = self.build(value_node, (*path, key), depth + 1)
        return out
