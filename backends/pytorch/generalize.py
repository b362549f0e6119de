"""One class per block definition: the classes written for the calls of one block (each with its own
constants) merged into one class whose constructor takes what differs between the calls.

The source of each call's class is compared token by token. A literal that differs between calls
(a channel count, a stride, a kernel size, a repeat's count, a constant in ``forward``) becomes a
constructor argument, named after the block's param with those values (``${out_c}`` -> ``out_c``),
a simple expression of one (``out_c * 4``, ``blocks - 1``, ``in_channels * t``) or of the width of
the block's input (``in_channels``), else after the layer argument it sets (``stride``). A method
reads such an argument as ``self.<name>``.

A node that only some calls have (the spec's ``when:``) becomes a flag: its layer is ``None`` where
the flag is off, and the method runs its lines under ``if``, the value it stands for taking the
value the node passes through when absent (``downsample = x``, then ``if self.downsample is not None:``).
Calls whose classes differ beyond that are not merged: `generalize` returns one class per set of
calls that merge.

The merge is exact by construction: each argument's values are those of the literals it replaces in
every call, so that each call's constructor arguments rebuild that call's class line for line.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .layout import WIDTH, split_comment
from .methods import TAKEN
from .tokens import Line, callee_at, literal_value, parse_line, repeat_count, stands_alone

__all__ = ["BlockClass", "Instance", "Param", "generalize"]

_ABSENT: Any = type("_Absent", (), {"__repr__": lambda self: "<absent>"})()
"""A slot's value in a call whose class lacks the slot's line."""
_MULTIPLIERS = range(2, 17)
_OFFSETS = (1, 2)


@dataclass(frozen=True)
class Instance:
    """The class written for one call of a block.

    Attributes:
        path: the call's path.
        lines: the class's logical lines (`methods.MethodWriter`'s), the class name a placeholder.
        known: named values of the call that an argument may take its name from, in order: the
            block's params as the call sets them, then its inputs' widths (``in_channels``).
    """

    path: str
    lines: list[str]
    known: dict[str, Any]


@dataclass
class Param:
    """One constructor argument of a merged class.

    Attributes:
        name: the argument's name.
        values: its value in each merged call (in `BlockClass.paths` order).
        kind: ``value`` (positional), ``flag`` (``name: bool = False``: whether the call has an
            optional node) or ``optional`` (``name: T | None = None``: a value only some calls use).
        stored: a method reads it (``self.name = name`` in ``__init__``).
    """

    name: str
    values: list[Any]
    kind: str = "value"
    stored: bool = False
    source: str = ""  # the known value it is (a block param, an input width), if any

    def annotation(self) -> str:
        present = [v for v in self.values if v is not None]
        kinds = {type(v) for v in present}
        text = "bool" if kinds == {bool} else "int" if kinds == {int} else "float" if kinds <= {int, float} else \
            "str" if kinds == {str} else "object"
        if self.kind == "flag":
            return "bool = False"
        return f"{text} | None = None" if self.kind == "optional" else text

    def argument(self, index: int) -> str:
        value = self.values[index]
        text = _literal(value)
        return text if self.kind == "value" else f"{self.name}={text}"


@dataclass
class BlockClass:
    """A class that serves one or more calls of a block.

    Attributes:
        lines: its logical lines (the class name a placeholder), constructor arguments in place.
        params: its constructor's arguments, in order.
        paths: the calls it serves.
    """

    lines: list[str]
    params: list[Param]
    paths: list[str]

    def arguments(self, path: str) -> str:
        """The constructor arguments for the call at `path` (flags and optional values by keyword)."""
        index = self.paths.index(path)
        return ", ".join(p.argument(index) for p in self.params)

    def defaults(self) -> dict[str, str]:
        """Keyword arguments that may be left out of a call: ``flag=False``, ``value=None``."""
        return {p.name: "False" if p.kind == "flag" else "None" for p in self.params if p.kind != "value"}


def _literal(value: Any) -> str:
    return repr(value)


# --- merging -----------------------------------------------------------------------------

@dataclass
class _Row:
    """One line of the merged class: the calls' lines aligned to it (absent in some calls: optional)."""

    at: list[Line | None]

    def present(self) -> tuple[bool, ...]:
        return tuple(line is not None for line in self.at)

    def first(self) -> Line:
        return next(line for line in self.at if line is not None)


@dataclass
class _Slot:
    """A literal position of a row: its value in each call (`_ABSENT` where the row is absent)."""

    row: int
    tok: int
    values: list[Any]
    name: str  # the argument of the call it sets (``stride``), a fallback name for a new param
    owner: str  # what the line assigns (``conv2``), to tell apart two params of one name
    in_method: bool


class _Merge:
    """Merges the classes of some calls of one block (see the module doc); `run` gives None when
    they differ beyond literals and optional nodes."""

    def __init__(self, instances: Sequence[Instance], signatures: Callable[[str], list[str] | None]) -> None:
        self.instances = list(instances)
        self.signatures = signatures
        self.rows: list[_Row] = []
        self.alias: dict[str, str] = {}  # an optional value -> what stands for it where absent
        self.params: list[Param] = []
        self.exprs: dict[tuple[int, int], str] = {}  # (row, tok) -> what the merged line writes there
        self.children: set[str] = set()
        self.renamed: dict[tuple[int, int], str] = {}  # (row, tok) -> the optional value's name written there

    def run(self) -> BlockClass | None:
        if not self._align() or not self._names():
            return None
        groups = self._groups()
        if groups is None:
            return None
        if not self._flags(groups):
            return None
        self._slots()
        return BlockClass(self._render(groups), self.params, [i.path for i in self.instances])

    # --- alignment ---------------------------------------------------------------------

    def _align(self) -> bool:
        n = len(self.instances)
        parsed = [[parse_line(t) for t in inst.lines] for inst in self.instances]
        self.rows = [_Row([line] + [None] * (n - 1)) for line in parsed[0]]
        for k in range(1, n):
            anchors = [row.first().anchor for row in self.rows]
            mine = [line.anchor for line in parsed[k]]
            merged: list[_Row] = []
            for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, anchors, mine, autojunk=False).get_opcodes():
                if tag == "replace":
                    return False
                if tag in ("equal", "delete"):
                    for d, row in enumerate(self.rows[i1:i2]):
                        if tag == "equal":
                            row.at[k] = parsed[k][j1 + d]
                        merged.append(row)
                else:
                    merged.extend(_Row([None] * k + [line] + [None] * (n - k - 1)) for line in parsed[k][j1:j2])
            self.rows = merged
        self.children = {a[len("self."):] for row in self.rows for a in row.first().assigned() if a.startswith("self.")}
        return True

    def _names(self) -> bool:
        """Rows agree but for literals, and names of optional values where those are absent."""
        defined: dict[str, tuple[bool, ...]] = {}
        for row in self.rows:
            if not all(row.present()):
                for name in row.first().assigned():
                    defined.setdefault(name, row.present())
        for r, row in enumerate(self.rows):
            lines = [line for line in row.at if line is not None]
            if len({line.key() for line in lines}) == 1:
                continue
            if len({len(line.toks) for line in lines}) != 1:
                return False
            for j in range(len(lines[0].toks)):
                texts = [None if line is None else line.toks[j].text for line in row.at]
                kinds = {line.toks[j].kind for line in lines}
                if kinds == {"lit"} or len({t for t in texts if t is not None}) == 1:
                    continue
                if kinds != {"name"}:
                    return False
                optional = {t for t in texts if t in defined}
                if len(optional) != 1:
                    return False
                (name,) = optional
                self.renamed[(r, j)] = name
                for k, t in enumerate(texts):
                    if t is None or t == name:
                        continue
                    if defined[name][k] or self.alias.setdefault(name, t) != t:
                        return False
        return True

    def _groups(self) -> list[tuple[int, int, str]] | None:
        """Runs of optional rows with one presence pattern: (first row, end row, what they make)."""
        groups = []
        i = 0
        while i < len(self.rows):
            present = self.rows[i].present()
            if all(present):
                i += 1
                continue
            j = i
            while j < len(self.rows) and self.rows[j].present() == present:
                j += 1
            assigned = [a for row in self.rows[i:j] for a in row.first().assigned()]
            head = self.rows[i].first().assigned()
            if head and head[0].startswith("self."):
                made = head[0]
            elif assigned and len(self.rows[j - 1].first().assigned()) == 1:
                made = self.rows[j - 1].first().assigned()[0]
                inner = set(assigned) - {made}
                if any(t.text in inner for row in self.rows[:i] + self.rows[j:] for line in row.at if line
                       for t in line.toks if t.kind == "name"):
                    return None  # a value made inside the optional lines is read outside them
            else:
                return None
            groups.append((i, j, made))
            i = j
        return groups

    def _flags(self, groups: list[tuple[int, int, str]]) -> bool:
        """A condition for each group of optional lines; False where a group cannot have one.

        A repeat that some calls lack (``repeat: 0``) needs none: its list of copies is empty there
        (``range(0)``) and its loop runs no time, passing its input through.
        """
        self.conditions: dict[int, str] = {}  # first row of a group -> its condition ("": none)
        self.counts: set[int] = set()  # rows of a repeat's list whose count is 0 where they are absent
        layers = {made[len("self."):]: self.rows[i].present() for i, _, made in groups if made.startswith("self.")}
        empty = set()
        for i, j, made in groups:
            present = list(self.rows[i].present())
            if made.startswith("self."):
                name = made[len("self."):]
                if j == i + 1 and repeat_count(self.rows[i].first()) is not None:
                    empty.add(name)
                    self.counts.add(i)
                    self.conditions[i] = ""
                    continue
                self.params.append(Param(name if name not in TAKEN else f"{name}_", present, "flag"))
                self.conditions[i] = self.params[-1].name
                continue
            calls = {line.toks[k + 2].text for row in self.rows[i:j] for line in [row.first()]
                     for k in range(len(line.toks) - 2)
                     if line.toks[k].text == "self" and line.toks[k + 1].text == "."}
            layer = next((c for c in sorted(calls) if layers.get(c) == tuple(present)), None)
            if layer in empty:  # a loop over the copies: ``rest = first`` then ``for layer in self.rest:``
                head = self.rows[i].first()
                if [t.text for t in head.toks] != [made, "=", self.alias.get(made, "")] or \
                        any(line.toks[k + 3].text == "[" for row in self.rows[i:j] for line in [row.first()]
                            for k in range(len(line.toks) - 3) if line.toks[k + 2].text == layer):
                    return False
                self.conditions[i] = ""
            elif layer is not None:
                self.conditions[i] = f"self.{layer} is not None"
            else:
                flag = self._free(f"use_{made}")
                self.params.append(Param(flag, present, "flag", stored=True))
                self.conditions[i] = f"self.{flag}"
        return True

    # --- literals become arguments ---------------------------------------------------------

    def _slots(self) -> None:
        slots: list[_Slot] = []
        in_method = False
        for r, row in enumerate(self.rows):
            line = row.first()
            if line.toks and line.toks[0].text == "def":
                in_method = len(line.toks) > 1 and line.toks[1].text != "__init__"
            names = _argument_names(line, self.signatures)
            owner = next(iter(line.assigned()), "").removeprefix("self.")
            count = repeat_count(line) if r in self.counts else None
            for t, tok in enumerate(line.toks):
                if tok.kind == "lit":
                    absent = 0 if t == count else _ABSENT
                    values = [absent if x is None else literal_value(x.toks[t].text) for x in row.at]
                    slots.append(_Slot(r, t, values, names.get(t, "value"), owner, in_method))
        known = self._known()
        def definite(slot: _Slot) -> bool:  # a value in every call
            return not any(v is _ABSENT or v is Ellipsis for v in slot.values)

        for slot in sorted(slots, key=lambda s: not definite(s)):  # stable: the definite ones first
            expr = self._express(slot, known)
            if expr is not None:
                self.exprs[(slot.row, slot.tok)] = expr

    def _known(self) -> list[tuple[str, list[Any]]]:
        """The calls' named values that differ between them, as candidate arguments."""
        names = list(dict.fromkeys(k for inst in self.instances for k in inst.known))
        out = []
        for name in names:
            values = [inst.known.get(name, _ABSENT) for inst in self.instances]
            if _ABSENT in values or not all(type(v) in (int, float, bool) for v in values):
                continue
            if len({(type(v), v) for v in values}) > 1:
                out.append((name, values))
        return out

    def _express(self, slot: _Slot, known: list[tuple[str, list[Any]]]) -> str | None:
        """What a merged line writes in place of a literal: None (the literal: the same in every
        call), an argument, or an expression of arguments (``self.`` in a method)."""
        at = [k for k, v in enumerate(slot.values) if v is not _ABSENT and v is not Ellipsis]
        values = [slot.values[k] for k in at]

        def same(candidate: Sequence[Any]) -> bool:
            return all(type(candidate[k]) is type(v) and candidate[k] == v for k, v in zip(at, values))

        if len({(type(v), v) for v in values}) == 1:  # the same wherever the line is, or matters
            if len(at) == len(slot.values):
                return None
            # some calls lack the line (or do not use the value): an argument the others agree with
            param = next((p for p in self.params if p.kind == "value" and p.name == slot.name and same(p.values)),
                         None) or next((p for p in self.params if p.kind == "value" and same(p.values)
                                        and not isinstance(values[0], bool)), None)
            return self._use(param, slot) if param is not None else _literal(values[0])
        if not values:
            return None

        named = sorted(known, key=lambda item: item[0] != slot.name)  # the argument's own name first
        made = sorted(self.params, key=lambda p: p.name != slot.name)
        for param in made:  # an argument made already
            if param.kind != "flag" and same(param.values):
                return self._use(param, slot)
        for name, vector in named:  # a param of the block, or its input's width
            if same(vector):
                return self._use(self._param(name, vector), slot)
        relation = _relation(values, [(n, [v[k] for k in at]) for n, v in known])
        if relation is not None:
            text, used = relation
            for name in used:
                self._use(self._param(name, dict(known)[name]), slot)
            prefix = "self." if slot.in_method else ""
            for name in used:
                text = text.replace(f"{{{name}}}", f"{prefix}{self._param(name, dict(known)[name]).name}")
            return f"({text})"
        name = slot.name if slot.name.isidentifier() else "value"
        if name in {p.name for p in self.params} and slot.owner:
            name = f"{slot.owner}_{name}"  # another layer's argument of that name took it
        full = _ABSENT not in slot.values
        values = [None if v is _ABSENT or v is Ellipsis else v for v in slot.values]
        param = Param(self._free(name, values), values, "value" if full else "optional")
        self._insert(param)
        return self._use(param, slot)

    def _param(self, name: str, vector: list[Any]) -> Param:
        for param in self.params:
            if param.source == name:
                return param
        param = Param(self._free(name, vector), list(vector), source=name)
        self._insert(param)
        return param

    def _insert(self, param: Param) -> None:
        """Arguments in order: values, then optional values, then flags."""
        order = {"value": 0, "optional": 1, "flag": 2}
        at = next((i for i, p in enumerate(self.params) if order[p.kind] > order[param.kind]), len(self.params))
        self.params.insert(at, param)

    def _use(self, param: Param, slot: _Slot) -> str:
        if slot.in_method:
            param.stored = True
            return f"self.{param.name}"
        return param.name

    def _free(self, base: str, values: Sequence[Any] = ()) -> str:
        """`base`, or a name made from it that the generated code does not use: not a layer's
        (``convs`` for the count of the layers ``self.convs``: ``num_convs``), not a builtin's."""
        name = base if base.isidentifier() else "value"
        taken = {p.name for p in self.params}
        if name in self.children:
            kinds = {type(v) for v in values if v is not None}
            name = f"num_{name}" if kinds == {int} else f"use_{name}" if kinds == {bool} else name
        while name in TAKEN or name in self.children or name in taken or name == "self":
            name += "_"
        return name

    # --- the merged lines --------------------------------------------------------------------

    def _render(self, groups: list[tuple[int, int, str]]) -> list[str]:
        starts = {i: (j, made) for i, j, made in groups if self.conditions[i]}
        out: list[str] = []
        r = 0
        while r < len(self.rows):
            row = self.rows[r]
            if r in starts:
                end, made = starts[r]
                out.extend(self._optional(r, end, made))
                r = end
                continue
            out.append(self._line(r))
            if row.first().toks[:3] and [t.text for t in row.first().toks[:2]] == ["def", "__init__"]:
                out[-1] = self._header(row.first())
            elif row.first().code.strip() == "super().__init__()":
                out.extend(f"        self.{p.name} = {p.name}" for p in self.params if p.stored)
            r += 1
        return out

    def _header(self, line: Line) -> str:
        args = "".join(f", {p.name}: {p.annotation()}" for p in self.params)
        return line.text.replace("(self)", f"(self{args})", 1)

    def _optional(self, start: int, end: int, made: str) -> list[str]:
        lines = [self._line(r) for r in range(start, end)]
        indent = " " * self.rows[start].first().indent
        condition = self.conditions[start]
        if made.startswith("self."):  # a layer only some calls have: None in the others
            code, comment = split_comment(lines[0])
            if len(lines) == 1 and len(code) + len(comment) + len(condition) + 14 <= WIDTH:
                return [f"{code} if {condition} else None{comment}"]
            return [f"{indent}{made} = None", f"{indent}if {condition}:", *(f"    {line}" for line in lines)]
        before = [f"{indent}{made} = {self.alias[made]}"] if made in self.alias else []
        return [*before, f"{indent}if {condition}:", *(f"    {line}" for line in lines)]

    def _line(self, r: int) -> str:
        """Row `r` written once for every call: literals that differ replaced by their arguments, an
        optional value's name where some calls read what stands for it."""
        line = self.rows[r].first()
        code = line.code
        for t in reversed(range(len(line.toks))):
            tok = line.toks[t]
            expr = self.exprs.get((r, t), self.renamed.get((r, t)))
            if expr is not None:
                expr = expr[1:-1] if expr.startswith("(") and stands_alone(line.toks, t) else expr
                code = code[:tok.start] + expr + code[tok.end:]
        return code + self._comment(r)

    def _comment(self, r: int) -> str:
        """The shape comment where every call has one: dims that differ named after an argument with
        those values; none where some dim has no such argument."""
        comments = [None if line is None else line.comment for line in self.rows[r].at]
        present = [c for c in comments if c is not None]
        if not all(present):
            return ""
        if len(set(present)) == 1:
            return present[0]
        dims = [c.strip().removeprefix("# (").removesuffix(")").split(", ") for c in present]
        if len({len(d) for d in dims}) != 1:
            return ""
        index = [k for k, c in enumerate(comments) if c is not None]
        out = []
        for column in zip(*dims, strict=True):
            if len(set(column)) == 1:
                out.append(column[0])
                continue
            values = [literal_value(c) for c in column]
            param = next((p for p in self.params if p.kind != "flag" and [p.values[k] for k in index] == values), None)
            if param is None:
                return ""
            out.append(param.name)
        return f"  # ({', '.join(out)})"


def _relation(values: list[Any], known: list[tuple[str, list[Any]]]) -> tuple[str, list[str]] | None:
    """``{p} * 4``, ``{p} // 2``, ``{p} - 1`` or ``{p} * {q}`` where that gives `values` from the
    known values; None where nothing simple does."""
    if not all(type(v) is int for v in values):
        return None
    ints = [(n, v) for n, v in known if all(type(x) is int for x in v)]
    for (a, va), (b, vb) in itertools.combinations(ints, 2):
        if [x * y for x, y in zip(va, vb)] == values:
            return f"{{{a}}} * {{{b}}}", [a, b]
    for name, vector in ints:
        for k in _MULTIPLIERS:
            if [x * k for x in vector] == values:
                return f"{{{name}}} * {k}", [name]
            if [x // k for x in vector] == values:
                return f"{{{name}}} // {k}", [name]
        for k in _OFFSETS:
            if [x - k for x in vector] == values:
                return f"{{{name}}} - {k}", [name]
            if [x + k for x in vector] == values:
                return f"{{{name}}} + {k}", [name]
    return None


def _argument_names(line: Line, signatures: Callable[[str], list[str] | None]) -> dict[int, str]:
    """For each literal of `line`, the name of the call argument it is (``stride=2``: stride; the
    second positional argument of ``torch.nn.Conv2d``: out_channels)."""
    names: dict[int, str] = {}
    stack: list[list[Any]] = []  # per open bracket: [callee, positional index, keyword]
    toks = line.toks
    for t, tok in enumerate(toks):
        if tok.text in ("(", "[", "{"):
            callee = callee_at(toks, t) if tok.text == "(" else None
            stack.append([callee, 0, None])
        elif tok.text in (")", "]", "}"):
            if stack:
                stack.pop()
        elif tok.text == "," and stack:
            stack[-1][1] += 1
            stack[-1][2] = None
        elif tok.kind == "name" and t + 1 < len(toks) and toks[t + 1].text == "=" and stack:
            stack[-1][2] = tok.text
        elif tok.kind == "lit":
            frame = next((f for f in reversed(stack) if f[0] is not None), None)
            if frame is None:
                continue
            callee, index, keyword = frame
            if keyword is not None:
                names[t] = keyword
            elif callee == "range":
                names[t] = f"num_{line.assigned()[0].removeprefix('self.')}" if line.assigned() else "count"
            else:
                params = signatures(callee) or []
                if index < len(params):
                    names[t] = params[index]
    return names


def generalize(instances: Sequence[Instance], signatures: Callable[[str], list[str] | None]) -> list[BlockClass]:
    """The fewest classes (as `_Merge` finds them) that serve the calls of one block: one where they
    all merge, else one per set of calls that do, in the order of their first calls.

    Args:
        instances: the class of each call, in graph order.
        signatures: the positional argument names of a callable named in the source (a torch
            layer, or a class written before), for naming arguments.
    """
    by_shape: dict[tuple[tuple[str, ...], ...], list[Instance]] = {}
    for inst in instances:
        by_shape.setdefault(tuple(parse_line(line).key() for line in inst.lines), []).append(inst)
    merged: list[list[Instance]] = []
    for same in by_shape.values():  # calls of one shape always merge; then shapes where they can
        for group in merged:
            if _Merge([*group, *same], signatures).run() is not None:
                group.extend(same)
                break
        else:
            merged.append(list(same))
    out = []
    for group in merged:
        group.sort(key=instances.index)
        made = _Merge(group, signatures).run()
        assert made is not None  # merged above, or one shape
        out.append(made)
    return out
