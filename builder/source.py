"""Reading spec text (YAML or JSON) into plain data plus a map from data paths to positions.

YAML is composed with the C-accelerated safe composer and turned into data by our own walk,
which allows only the standard scalar, sequence and mapping tags (no tag ever builds a
Python object), reports duplicate keys, and counts every value it builds so that alias
expansion ("billion laughs") and deep nesting stop at a limit with a clear error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from .errors import Diagnostic, SourcePos, SpecError
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["DataPath", "Source", "parse_text", "read_file", "read_source"]

DataPath = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_PARSER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
_DEFAULT_TAGS: dict[type[yaml.Node], str] = {yaml.ScalarNode: _STR, yaml.SequenceNode: _SEQ, yaml.MappingNode: _MAP}


class _Composer(_PARSER):  # type: ignore[misc,valid-type]  # a base chosen at import
    """The C parser with no implicit tag resolution: plain scalars are typed by `_plain_scalar`
    (the YAML 1.2 core schema, so `no` and `on` stay strings), which is also much faster than
    PyYAML's regex resolver on large specs.

    The composer calls the resolver for every node: `resolve` for the tag of one written without
    one (or with the non-specific ``!``), and the path hooks around it. `BaseResolver` has no
    implicit or path resolvers, so its answer is always the standard tag of the node's kind;
    answering that directly, with no-op hooks, makes those calls cheap. Nodes with an explicit tag
    never reach `resolve`; `_Builder` checks every tag against `_ALLOWED_TAGS`.
    """

    def descend_resolver(self, current_node: yaml.Node | None, current_index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type[yaml.Node], value: object, implicit: object) -> str:
        return _DEFAULT_TAGS[kind]


_ALLOWED_TAGS = {_STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                 "tag:yaml.org,2002:null", _MAP, _SEQ}
_INT = re.compile(r"^[-+]?([0-9][0-9_]*|0x[0-9a-fA-F][0-9a-fA-F_]*|0o[0-7][0-7_]*)$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
_WORDS: dict[str, bool | None] = {"": None, "~": None, "null": None, "Null": None, "NULL": None, "true": True, "True": True,
                                  "TRUE": True, "false": False, "False": False, "FALSE": False}
"""Plain scalars that are null or a boolean."""


def _plain_scalar(text: str) -> Any:
    """Type a plain (unquoted) scalar by the YAML 1.2 core schema."""
    if text in _WORDS:
        return _WORDS[text]
    if text.isdigit() and text.isascii():  # the common number: a plain decimal integer
        return int(text)
    first = text[0]
    if first.isdigit() or first in "+-.":
        if _INT.match(text):
            digits = text.replace("_", "").lstrip("+-")
            base = 16 if digits.startswith("0x") else 8 if digits.startswith("0o") else 10
            value = int(digits[2:] if base != 10 else digits, base)
            return -value if text.startswith("-") else value
        if _FLOAT.match(text):
            return float(text.replace("_", ""))
        if text.lower() in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[text.lower()]
    return text


@dataclass
class Source:
    """Where a spec came from: a file name for messages and positions of its values."""

    file: str = "<spec>"
    positions: dict[DataPath, tuple[int, int]] = field(default_factory=dict)
    """(line, column) of each value; a mapping entry is placed at its key."""
    imported: dict[str, tuple[Source, str]] = field(default_factory=dict)
    """Blocks taken from imported files: local name to the file's source and the block's name there."""
    imports_resolved: bool = False
    """Whether the spec's ``imports:`` were read (not so for a spec given as a dict)."""

    def pos(self, path: DataPath) -> SourcePos:
        """The position of `path`, or of its nearest enclosing value that has one."""
        if self.imported and len(path) > 1 and path[0] == "blocks" and path[1] in self.imported:
            source, name = self.imported[str(path[1])]
            return source.pos(("blocks", name, *path[2:]))
        while path:
            found = self.positions.get(path)
            if found is not None:
                return SourcePos(self.file, *found)
            path = path[:-1]
        line, col = self.positions.get((), (0, 0))
        return SourcePos(self.file, line, col)


def read_source(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, Source]:
    """Read and parse the spec file at `path`, with the blocks of its ``imports:`` (found next to it)."""
    data, src = read_file(path, limits)
    return _with_imports(data, src, Path(path).parent, limits)


MODEL_SUFFIXES = {".onnx": "an ONNX model", ".safetensors": "a weights file (safetensors)",
                  ".pt": "a PyTorch checkpoint", ".pth": "a PyTorch checkpoint", ".npy": "a NumPy array"}
"""Files that users hand to a command by mistake, by suffix, with what they are."""

MODEL_HINTS = ("commands read a spec (YAML or JSON); `nnspec run MODEL.onnx` runs an ONNX model, "
               "`--weights FILE` takes weights, `--input NAME=FILE.npy` an input",)


def read_file(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, Source]:
    """Read and parse the spec file at `path` as it is (its ``imports:`` not followed)."""
    name = str(path)
    p = Path(path)
    if p.suffix.lower() in MODEL_SUFFIXES:
        raise SpecError.single("not-a-spec", f"this is {MODEL_SUFFIXES[p.suffix.lower()]}, not a spec", SourcePos(name),
                               hints=MODEL_HINTS)
    try:
        with p.open("rb") as f:  # one byte past the limit at most: /dev/zero or a pipe has no size to check first
            raw = _read_at_most(f, limits.max_file_bytes + 1)
    except OSError as exc:
        raise SpecError.single("io", f"cannot read file: {exc.strerror or exc}", SourcePos(name)) from None
    if len(raw) > limits.max_file_bytes:
        raise SpecError.single("limit", f"file is larger than the limit of {limits.max_file_bytes} bytes",
                               SourcePos(name), hints=("raise it with --limit max_file_bytes=N",))
    text = _decode(raw, name)
    return _parse_text(text, name, json_only=p.suffix.lower() == ".json", limits=limits)


_CHUNK = 2**16


def _read_at_most(f: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes of `f`, read in chunks: `f.read(size)` would allocate all of `size` (16 MiB by
    default) first, which takes longer than parsing a small spec."""
    chunks = []
    while size > 0:
        want = min(size, _CHUNK)
        chunk = f.read(want)
        chunks.append(chunk)
        size -= len(chunk)
        if len(chunk) < want:  # a buffered read returns less only at the end of the file
            break
    return b"".join(chunks)


_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
               (b"\xfe\xff", "UTF-16"))
"""Byte-order marks of encodings other than UTF-8 (UTF-32's first: it starts like UTF-16's)."""


def _decode(raw: bytes, name: str) -> str:
    for bom, encoding in _WIDE_BOMS:
        if raw.startswith(bom):
            raise SpecError.single("encoding", f"the file is {encoding} text; specs are read as UTF-8",
                                   SourcePos(name, 1, 1), hints=("save the file as UTF-8",))
    if b"\x00" in raw[:8192]:
        raise SpecError.single("encoding", "this is a binary file, not YAML or JSON text", SourcePos(name, 1, 1),
                               hints=("if it is text (UTF-16 without a byte-order mark?), save it as UTF-8",))
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
    """Parse YAML (or strict JSON when `json_only`) text into data and value positions; the
    ``imports:`` of a spec given as text are found from the current directory."""
    data, src = _parse_text(text, file, json_only=json_only, limits=limits)
    return _with_imports(data, src, Path.cwd(), limits)


def _with_imports(data: Any, src: Source, root: Path, limits: Limits) -> tuple[Any, Source]:
    if not isinstance(data, dict) or "imports" not in data:
        return data, src
    from .imports import resolve_imports  # a cycle otherwise: imports reads files with this module

    return resolve_imports(data, src, root, limits)


def _parse_text(text: str, file: str = "<spec>", *, json_only: bool = False,
                limits: Limits = DEFAULT_LIMITS) -> tuple[Any, Source]:
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise SpecError.single("empty", "the spec is empty", SourcePos(file, 1, 1))
    if len(text) > limits.max_file_bytes:
        raise SpecError.single("limit", f"spec text is over the limit of {limits.max_file_bytes} bytes",
                               SourcePos(file))
    if json_only:
        _check_json(text, file)
    try:
        if len(text) > limits.max_items:  # so long that it may hold too many values: count them first
            _count_values(text, file, limits)
        root = yaml.compose(text, Loader=_Composer)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = SourcePos(file, mark.line + 1, mark.column + 1) if mark else SourcePos(file)
        if json_only:  # valid JSON (checked above) that the YAML reader behind positions cannot take
            raise SpecError.single("limit", _json_beyond_yaml(text), pos) from None
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise SpecError.single("syntax", f"invalid YAML: {problem}", pos) from None
    except yaml.reader.ReaderError as exc:
        raise SpecError.single("syntax", f"invalid YAML: {exc.reason} (character #x{exc.character:04x})",
                               _offset_pos(text, exc.position, file)) from None
    except yaml.YAMLError as exc:
        raise SpecError.single("syntax", f"invalid YAML: {exc}", SourcePos(file)) from None
    except RecursionError:
        raise SpecError.single("limit", "nesting too deep to parse", SourcePos(file)) from None
    if root is None:
        raise SpecError.single("empty", "the spec is empty", SourcePos(file, 1, 1))
    builder = _Builder(file, limits)
    # Only an anchor (`&name`) lets an alias reach a node twice; without one no node needs remembering.
    expanded = _expanded_size(root, {} if "&" in text else None, 0, limits.max_depth, file)
    if expanded > limits.max_items:
        raise SpecError.single(
            "limit", f"the spec expands to {expanded:,} values, more than {limits.max_items:,} "
            "(YAML aliases expanding exponentially?)", SourcePos(file, root.start_mark.line + 1, 1),
            hints=("raise it with --limit max_items=N",))
    data = builder.build(root, (), 0)
    if builder.diagnostics:
        raise SpecError(builder.diagnostics)
    if data is None:  # a document of only `---`, `~` or `null`
        raise SpecError.single("empty", "the spec is empty", SourcePos(file, 1, 1))
    return data, Source(file, builder.positions)


def _count_values(text: str, file: str, limits: Limits) -> None:
    """Stop at the value past `max_items` while parsing, before any is built: composing a 16 MB list
    of numbers would take a minute and gigabytes (aliases are counted with their expansion later)."""
    count = 0
    for event in yaml.parse(text, Loader=_Composer):
        if isinstance(event, yaml.NodeEvent):
            count += 1
            if count > limits.max_items:
                mark = event.start_mark
                raise SpecError.single("limit", f"the spec holds more than {limits.max_items:,} values",
                                       SourcePos(file, mark.line + 1, mark.column + 1) if mark else SourcePos(file),
                                       hints=("raise it with --limit max_items=N",))


def _offset_pos(text: str, offset: int, file: str) -> SourcePos:
    """The line and column of a parser's offset, which the C parser counts in UTF-8 bytes."""
    if _PARSER is yaml.BaseLoader:  # the pure-Python parser counts characters
        before = text[:offset]
    else:
        before = text.encode("utf-8")[:offset].decode("utf-8", "replace")
    return SourcePos(file, before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1)


_YAML_KEY_CHARS = 1024
"""YAML reads a key written inline (as JSON writes every key) of at most this many characters."""


def _json_beyond_yaml(text: str) -> str:
    """Why valid JSON text could not be read with positions: a key too long, as far as can be told."""
    longest = max((len(k) for k in re.findall(r'"((?:[^"\\]|\\.)*)"\s*:', text)), default=0)
    if longest > _YAML_KEY_CHARS:
        return (f"a key of {longest:,} characters: nnspec reads keys of at most {_YAML_KEY_CHARS:,} "
                "(ids and names are meant to be short)")
    return "this JSON is valid but nnspec's reader (YAML 1.2, which holds JSON) cannot take it"


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
    except ValueError:
        pass  # an integer too long to read: reported with its position by the YAML walk
    except RecursionError:
        raise SpecError.single("limit", "nesting too deep to parse", SourcePos(file)) from None


def _expanded_size(node: yaml.Node, memo: dict[int, int] | None, depth: int, max_depth: int, file: str) -> int:
    """How many values `node` becomes once every alias is expanded, without expanding any.

    `memo` holds the size of each node counted so far, which an alias may reach again. Without
    anchors (None) every node is reached once, and a scalar within the depth limit counts one
    without a call.
    """
    if memo is not None:
        known = memo.get(id(node))
        if known is not None:
            return known
    if depth > max_depth:
        raise SpecError.single("limit", f"nesting deeper than {max_depth} levels",
                               SourcePos(file, node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        children = [v for _, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    leaves = memo is None and depth < max_depth
    size = 1
    for child in children:
        if leaves and isinstance(child, yaml.ScalarNode):
            size += 1
        else:
            size += _expanded_size(child, memo, depth + 1, max_depth, file)
    if memo is not None:
        memo[id(node)] = size
    return size


class _DuplicateKey(Exception):
    pass


class _Builder:
    """Walks a composed YAML node tree into plain data, recording positions."""

    def __init__(self, file: str, limits: Limits) -> None:
        self.file = file
        self.limits = limits
        self.items = 0
        self.positions: dict[DataPath, tuple[int, int]] = {}
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
        if path not in self.positions:  # a mapping's value is already placed at its key
            mark = node.start_mark
            self.positions[path] = (mark.line + 1, mark.column + 1)
        if node.tag not in _ALLOWED_TAGS:
            self.diagnostics.append(Diagnostic(
                "yaml-tag", f"YAML tag '{node.tag}' is not allowed in a spec (no tag constructs objects)",
                self._pos(node)))
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        if getattr(node, "style", None):  # quoted or block text (plain is None or "", by parser)
            return node.value
        try:
            return _plain_scalar(node.value)
        except ValueError:  # Python reads integers of at most 4300 digits
            self.diagnostics.append(Diagnostic(
                "limit", f"the number {node.value[:12]}... has {len(node.value)} digits, too many to read",
                self._pos(node)))
            return None

    def _mapping(self, node: yaml.MappingNode, path: DataPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in self._entries(node, depth):
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _ALLOWED_TAGS:
                self.diagnostics.append(Diagnostic("syntax", "mapping keys must be plain text", self._pos(key_node)))
                continue
            key = key_node.value
            sub = (*path, key)
            if key in out:
                first = self.positions.get(sub)
                self.diagnostics.append(Diagnostic(
                    "duplicate-key", f"key '{key}' appears twice in the same mapping", self._pos(key_node),
                    hints=(f"first defined at line {first[0]}",) if first else ()))
                continue
            mark = key_node.start_mark
            self.positions[sub] = (mark.line + 1, mark.column + 1)
            out[key] = self.build(value_node, sub, depth + 1)
        return out

    def _entries(self, node: yaml.MappingNode, depth: int) -> list[tuple[yaml.Node, yaml.Node]]:
        """The mapping's key and value nodes, YAML merge keys (``<<: *base``, ``<<: [*a, *b]``) expanded:
        its own keys come first and win, then those of each merged mapping in turn."""
        if all(key_node.value != "<<" for key_node, _ in node.value):
            return node.value  # the common case: no merge key
        own: list[tuple[yaml.Node, yaml.Node]] = []
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<" and not key_node.style):
                own.append((key_node, value_node))
                continue
            if depth > self.limits.max_depth:
                raise SpecError.single("limit", f"merge keys (<<) nest deeper than {self.limits.max_depth} levels",
                                       self._pos(key_node))
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if isinstance(source, yaml.MappingNode):
                    merged.extend(self._entries(source, depth + 1))
                else:
                    self.diagnostics.append(Diagnostic(
                        "syntax", "a merge key (<<) takes a mapping or a list of mappings", self._pos(source)))
        seen = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
        for key_node, value_node in merged:
            if not isinstance(key_node, yaml.ScalarNode):
                own.append((key_node, value_node))  # reported by `_mapping`
            elif key_node.value not in seen:
                seen.add(key_node.value)
                own.append((key_node, value_node))
        return own
