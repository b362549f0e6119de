"""Conditionals: which nodes of a body exist. A node whose ``when:`` is false, or a block call
with ``repeat: 0``, is left out, and refs to it (or to its first port) stand for its first input.
An op (or block) may also be chosen by a param (``op: '${norm}'``).

`Conditionals` is the part of the block expander (`nnspec.builder.resolve`) that decides this; it
needs only the spec, the limits and the expander's `error`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .errors import Diagnostic, did_you_mean
from .expr import ExprError, Expressions, ExprLimitError
from .limits import Limits
from .ops import OPS, VARIADIC, Op
from .params import expr_limit_error, has_expr
from .source import DataPath
from .spec import Spec

if TYPE_CHECKING:
    from .resolve import TensorRef, _Result

__all__ = ["Conditionals"]


@dataclass
class _Entry:
    raw: dict[str, Any]
    path: DataPath  # where the node's arguments are written
    in_path: DataPath  # where its `in` is written (differs for re-wired signature nodes)
    warn_unused: bool = True


@dataclass(frozen=True)
class _Absent:
    """A node that does not exist in this body: why, and the ref written as its first input."""

    reason: str | None  # None: the condition itself failed (reported), so refs to the node fail silently
    first: str | None


class Conditionals:
    """Decides which nodes of a body exist, and what refs to an absent node stand for."""

    spec: Spec
    limits: Limits
    exprs: Expressions
    diags: list[Diagnostic]

    def substitute(self, value: Any, params: Mapping[str, Any], path: DataPath, node: str | None) -> Any:
        """`value` with ``${...}`` substituted; past the expressions' limit the expansion stops, located at `path`.

        Raises:
            ExprError: a bad expression, for the caller to report.
            SpecError: the limit (`expr_limit_error`).
        """
        try:
            return self.exprs.substitute(value, params)
        except ExprLimitError as exc:
            raise expr_limit_error(exc, self.spec.source.pos(path), node, self.diags) from None

    def error(self, code: str, message: str, path: DataPath, node: str | None, hints: tuple[str, ...] = ()) -> None:
        raise NotImplementedError  # the expander reports located diagnostics

    def through(self, name: str, port: str, result: _Result, path: DataPath, node: str | None) -> TensorRef | None:
        """A ref to an absent node: its first input, for the node itself or its first port."""
        if port and port not in result.ports[:1]:
            first = f" (only '{name}' or '{name}.{result.ports[0]}' pass its first input on)" if result.ports else ""
            self.error("absent-port", f"'{name}.{port}' names a port of node '{name}', which is left out "
                       f"({result.absent}){first}", path, node)
            return None
        if not result.has_input:
            self.error("absent-port", f"'{name}' is left out ({result.absent}) and has no input to pass on", path, node)
            return None
        return result.through


    def absent_nodes(self, entries: dict[str, _Entry], params: Mapping[str, Any], prefix: str) -> dict[str, _Absent]:
        """The nodes of a body that do not exist: ``when:`` false, or a block call repeated 0 times.

        Both are decided by params alone (and the sizes of the body's inputs), so before any node
        is expanded; a `when` that is not true or false is reported and the node left out.
        """
        absent: dict[str, _Absent] = {}
        for nid, entry in entries.items():
            raw = entry.raw
            if "when" in raw:
                when = self.condition(raw["when"], params, entry, prefix + nid)
                if when is not True:
                    absent[nid] = _Absent("when: false" if when is False else None, self.first_ref(entry, params))
                    continue
            repeat = raw.get("repeat")
            zero = isinstance(repeat, str) and self.zero(repeat, params, (*entry.path, "repeat"), prefix + nid)
            if (type(repeat) is int and repeat == 0) or zero:
                op = self.op_name(entry, params, None)
                block = self.spec.blocks.get(op) if isinstance(op, str) else None
                if block is None:
                    continue  # `repeat` on an op: refused where the node is validated
                if len(block.outputs) > 1:
                    self.error("bad-arg", f"repeat: 0 passes the call's first input on as its output, but block "
                               f"'{op}' has {len(block.outputs)} outputs ({', '.join(block.outputs)})",
                               (*entry.path, "repeat"), prefix + nid)
                    absent[nid] = _Absent(None, None)
                else:
                    absent[nid] = _Absent("repeat: 0", self.first_ref(entry, params))
        return absent

    def condition(self, value: Any, params: Mapping[str, Any], entry: _Entry, node: str) -> bool | None:
        """A node's `when`: true or false, written so or computed by ``${...}``; None (reported) otherwise."""
        path = (*entry.path, "when")
        if isinstance(value, str) and "${" in value:
            try:
                value = self.substitute(value, params, path, node)
            except ExprError as exc:
                self.error("unknown-param" if exc.unknown else "bad-expr", f"when: {exc}", path, node,
                           did_you_mean(exc.unknown, params) if exc.unknown else ())
                return None
        if not isinstance(value, bool):
            self.error("bad-arg", f"when: expected true or false, got {value!r}", path, node)
            return None
        return value

    def zero(self, text: str, params: Mapping[str, Any], path: DataPath, node: str) -> bool:
        """Whether a `repeat` expression is 0 (its errors are reported where the call is expanded)."""
        if "${" not in text:
            return False
        try:
            value = self.substitute(text, params, path, node)
            return type(value) is int and value == 0
        except ExprError:
            return False

    def op_name(self, entry: _Entry, params: Mapping[str, Any], node: str | None) -> Any:
        """The node's `op`, with ``${...}`` substituted (an op or block chosen by a param)."""
        op = entry.raw.get("op")
        if not (isinstance(op, str) and "${" in op):
            return op
        try:
            chosen = self.substitute(op, params, (*entry.path, "op"), node)
        except ExprError as exc:
            if node is not None:
                self.error("unknown-param" if exc.unknown else "bad-expr", f"op: {exc}", (*entry.path, "op"), node,
                           did_you_mean(exc.unknown, params) if exc.unknown else ())
            return None
        # inside a block imported under a namespace (`blocks.L.two`), a block of its own library is `L.<name>`,
        # as the import renamed the literal calls
        block = entry.path[1] if len(entry.path) > 1 and entry.path[0] == "blocks" else ""
        namespace = str(block).rpartition(".")[0]
        if namespace and isinstance(chosen, str) and f"{namespace}.{chosen}" in self.spec.blocks:
            return f"{namespace}.{chosen}"
        return chosen

    def input_ports(self, op: Any) -> tuple[str, ...]:
        if isinstance(op, str) and op in OPS:
            return OPS[op].INPUTS
        if isinstance(op, str) and op in self.spec.blocks:
            return tuple(self.spec.blocks[op].inputs)
        return ()

    def first_ref(self, entry: _Entry, params: Mapping[str, Any]) -> str | None:
        """The ref written as a node's first input (its first port's), or None when it has none."""
        value = entry.raw.get("in")
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return value[0] if value and isinstance(value[0], str) else None
        if isinstance(value, dict) and value:
            ports = self.input_ports(self.op_name(entry, params, None))
            first = value.get(ports[0]) if ports and ports != (VARIADIC,) else next(iter(value.values()))
            return first if isinstance(first, str) else None
        return None

    def first_port(self, entry: _Entry, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The first output port of an absent node (the one that passes its input on), as a 1-tuple."""
        op = self.op_name(entry, params, None)
        if isinstance(op, str) and op in OPS and OPS[op].output_ports is Op.output_ports:
            return OPS[op].OUTPUTS[:1]  # ports fixed by the op, not its arguments: no need to validate them
        if isinstance(op, str) and op in OPS:
            data = {k: v for k, v in entry.raw.items() if k != "when"}
            if not has_expr(data):  # ports may depend on the arguments (split's 0, 1, ...)
                try:
                    return OPS[op].model_validate(data).output_ports()[:1]
                except ValidationError:
                    pass
            return OPS[op].OUTPUTS[:1]
        if isinstance(op, str) and op in self.spec.blocks:
            return tuple(self.spec.blocks[op].outputs)[:1]
        return ()
