"""``imports:``: blocks read from other spec files (block libraries).

    imports:
      - blocks/resnet.yaml                    # its blocks keep their names: op: bottleneck
      - {path: blocks/vit.yaml, as: vit}      # its blocks are named vit.<name>: op: vit.encoder

A path is relative to the file that imports it and must stay inside the root: the directory
of the top-level spec file (the current directory for a spec given as text). A path that
leaves it (``..``, an absolute path, a symlink pointing out of it) and URLs are refused. Only
the imported file's ``blocks`` are taken (it may be a whole spec or a file of blocks alone);
its own imports are followed, and their blocks come with it. A file reached twice is read
once and does not clash with itself; a cycle of imports is an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import Diagnostic, SpecError
from .limits import Limits
from .source import DataPath, Source, read_file

__all__ = ["resolve_imports"]

_MAX_FILES = 256
"""Files one spec may import, counting every import of an import."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class _Block:
    """A block an imported file makes visible: its text, where it is written, and its first name."""

    raw: Any
    source: Source
    name: str  # its name in `source`
    origin: tuple[Path, str]  # the file that defines it and its name there: the same block reached twice
    via: str  # the import entry that brought it, for messages


@dataclass
class _Loader:
    root: Path  # as written (for `..` checks)
    real_root: Path  # with symlinks resolved
    limits: Limits
    diags: list[Diagnostic] = field(default_factory=list)
    done: dict[Path, dict[str, _Block]] = field(default_factory=dict)

    def error(self, code: str, message: str, src: Source, path: DataPath, hints: tuple[str, ...] = ()) -> None:
        self.diags.append(Diagnostic(code, message, src.pos(path), None, hints))

    def blocks_of(self, data: dict[str, Any], src: Source, chain: tuple[Path, ...]) -> dict[str, _Block]:
        """The blocks that the ``imports:`` of one file (`data`, read from `src`) make visible, by name."""
        entries = data.get("imports")
        if not isinstance(entries, list):
            self.error("bad-import", f"imports: expected a list of paths, got {type(entries).__name__}", src, ("imports",))
            return {}
        found: dict[str, _Block] = {}
        for i, entry in enumerate(entries):
            target = self.target(entry, src, ("imports", i))
            if target is None:
                continue
            shown, real, alias = target
            library = self.load(shown, real, src, ("imports", i), chain)
            for name, block in library.items():
                local = f"{alias}.{name}" if alias else name
                block = _renamed(block, alias, library) if alias else block
                other = found.get(local)
                if other is not None and other.origin != block.origin:
                    self.error("duplicate-block", f"imports: block '{local}' from '{shown}' is also imported from "
                               f"'{other.via}'", src, ("imports", i),
                               ("import one of them with a namespace: {path: ..., as: name}",))
                    continue
                found[local] = _Block(block.raw, block.source, block.name, block.origin, shown)
        return found

    def target(self, entry: Any, src: Source, at: DataPath) -> tuple[str, Path, str | None] | None:
        """The file an import entry names (as shown in messages, and resolved), and its namespace."""
        alias: Any = None
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"path", "as"})
            if unknown or not isinstance(entry.get("path"), str):
                self.error("bad-import", "an import is a path, or {path: <file>, as: <namespace>}"
                           + (f"; unknown key '{unknown[0]}'" if unknown else ""), src, at)
                return None
            alias = entry.get("as")
            if alias is not None and not (isinstance(alias, str) and alias.isidentifier() and alias.isascii()):
                self.error("bad-import", f"imports: the namespace must be a name, got {alias!r}", src, (*at, "as"))
                return None
            entry, at = entry["path"], (*at, "path")
        if not isinstance(entry, str) or not entry.strip():
            self.error("bad-import", f"imports: expected a path, got {entry!r}", src, at)
            return None
        if _URL.match(entry):
            self.error("bad-import", f"imports: '{entry}' is a URL; only files under the spec's directory are "
                       "imported", src, at, ("download it next to the spec and import it by path",))
            return None
        base = self.root if src.file.startswith("<") else Path(src.file).parent  # a spec given as text: the root
        written = Path(entry) if Path(entry).is_absolute() else base / entry
        shown = os.path.normpath(written)
        if not _inside(Path(os.path.abspath(written)), Path(os.path.abspath(self.root))):
            self.error("bad-import", f"imports: '{entry}' is outside the root directory '{self.root}'", src, at,
                       ("imports stay inside the directory of the top-level spec",))
            return None
        real = written.resolve()
        if not _inside(real, self.real_root):
            self.error("bad-import", f"imports: '{entry}' is a link to '{real}', outside the root directory "
                       f"'{self.root}'", src, at)
            return None
        if not real.is_file():
            self.error("bad-import", f"imports: no such file '{shown}'", src, at)
            return None
        return shown, real, alias

    def load(self, shown: str, real: Path, src: Source, at: DataPath, chain: tuple[Path, ...]) -> dict[str, _Block]:
        """The blocks file `real` makes visible: its own and those of its imports."""
        if real in chain:
            self.error("import-cycle", f"imports: '{shown}' imports the file that imports it", src, at)
            return {}
        if real in self.done:
            return self.done[real]
        if len(chain) >= self.limits.max_block_depth or len(self.done) >= _MAX_FILES:
            self.error("limit", f"imports: more than {_MAX_FILES} files, or nested deeper than "
                       f"{self.limits.max_block_depth}", src, at)
            return {}
        self.done[real] = {}  # so that a cycle back to it stops
        try:
            data, source = read_file(shown, self.limits)
        except SpecError as exc:
            self.diags.extend(exc.diagnostics)
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("blocks", {}), dict):
            self.error("bad-import", f"'{shown}' is no spec or block library (a mapping with `blocks:`)", source, ())
            return {}
        found = self.blocks_of(data, source, (*chain, real)) if "imports" in data else {}
        for name, raw in data.get("blocks", {}).items():
            if name in found:
                self.error("duplicate-block", f"block '{name}' is defined here and imported from '{found[name].via}'",
                           source, ("blocks", name))
            found[name] = _Block(raw, source, name, (real, name), shown)
        self.done[real] = found
        return found


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _renamed(block: _Block, alias: str, library: dict[str, _Block]) -> _Block:
    """A block under namespace `alias`: its calls of the blocks of its library take the namespace too."""
    raw = block.raw
    if isinstance(raw, dict) and isinstance(raw.get("nodes"), dict):
        nodes = {nid: {**node, "op": f"{alias}.{node['op']}"}
                 if isinstance(node, dict) and isinstance(node.get("op"), str) and node["op"] in library else node
                 for nid, node in raw["nodes"].items()}
        raw = {**raw, "nodes": nodes}
    return _Block(raw, block.source, block.name, block.origin, block.via)


def resolve_imports(data: dict[str, Any], src: Source, root: Path, limits: Limits) -> tuple[dict[str, Any], Source]:
    """Add the blocks of the spec's ``imports:`` to its own; `root` bounds where imports may be read.

    Raises:
        SpecError: every import that cannot be read, and every clash of block names.
    """
    loader = _Loader(root, root.resolve(), limits)
    chain = () if src.file.startswith("<") else (Path(src.file).resolve(),)
    found = loader.blocks_of(data, src, chain)
    written = data.get("blocks")
    local: dict[str, Any] = written if isinstance(written, dict) else {}
    for name in found.keys() & set(local):
        loader.error("duplicate-block", f"block '{name}' is defined here and imported from '{found[name].via}'",
                     src, ("blocks", name), ("rename it, or import the library with a namespace: {path: ..., as: name}",))
    if loader.diags:
        raise SpecError(loader.diags)
    src.imported = {name: (block.source, block.name) for name, block in found.items()}
    src.imports_resolved = True
    blocks = {name: block.raw for name, block in found.items()}
    return {**data, "blocks": {**blocks, **local}}, src
