"""Params: overrides applied, ``${...}`` expressions evaluated in dependency order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from .errors import Diagnostic, SourcePos, SpecError, did_you_mean
from .expr import ExprError, Expressions, ExprLimitError
from .source import DataPath, Source, _plain_scalar
from .text import printable

__all__ = ["expr_limit_error", "has_expr", "parse_override", "resolve_params", "substitute_tree"]


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is typed as a plain scalar in a spec file is
    (``256``, ``0.1``, ``1e1``, ``true``), a quoted one is text, and anything else (``[1, 2]``)
    stays the text it is.

    Raises:
        ValueError: no ``=``, no key, or a number too long to read.
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected key=value, got '{printable(item[:60])}'")
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:
            loaded = yaml.safe_load(value)
        except (yaml.YAMLError, ValueError):
            loaded = None
        return key.strip(), loaded if isinstance(loaded, str) else text
    try:
        typed = _plain_scalar(value) if value else ""
    except ValueError:  # Python reads integers of at most 4300 digits
        raise ValueError(f"{key.strip()}: the number {value[:12]}... has {len(value):,} digits, too many to read") from None
    return key.strip(), text if typed is None else typed


CALL_KEYS = ("in", "repeat", "when", "doc")
"""The keys of a block call that are not params: a misspelt one (``repat``) is offered back."""


def resolve_params(declared: Mapping[str, Any], overrides: Mapping[str, Any], outer: Mapping[str, Any],
                   source: Source, base: DataPath, exprs: Expressions,
                   node: str | None = None, override_pos: SourcePos | None = None) -> tuple[dict[str, Any], list[Diagnostic]]:
    """Evaluate `declared` params (expressions may name each other and `outer` ones), with `overrides` applied.

    Returns the resolved params (outer ones included, own ones shadowing) and diagnostics.

    Raises:
        SpecError: the expressions went past their limit (`expr_limit_error`).
    """
    diags: list[Diagnostic] = []
    for key in overrides:
        if key not in declared:
            diags.append(Diagnostic(
                "unknown-param", f"there is no param '{key}' to set", override_pos or source.pos(base), node,
                (*did_you_mean(key, [*declared, *(CALL_KEYS if node else ())]),
                 f"params: {', '.join(declared) or '(none)'}")))
    pending = {k: overrides.get(k, v) for k, v in declared.items()}
    resolved: dict[str, Any] = dict(outer)
    for key in declared:
        resolved.pop(key, None)
    failed: set[str] = set()  # a param that uses one of these fails with it, reported once at the cause
    # Evaluate repeatedly: each pass resolves the params whose references are already known.
    while pending:
        progress = False
        for key, value in list(pending.items()):
            try:
                resolved[key] = exprs.substitute(value, resolved)
            except (ExprError, ExprLimitError) as exc:
                pos = override_pos if key in overrides and override_pos else source.pos((*base, key))
                if isinstance(exc, ExprLimitError):
                    raise expr_limit_error(exc, pos, node, diags) from None
                if exc.unknown is not None and exc.unknown in pending and exc.unknown != key:
                    continue  # depends on a param not evaluated yet
                if exc.unknown == key:
                    diags.append(Diagnostic("bad-expr", f"param '{key}' refers to itself", pos, node))
                elif exc.unknown not in failed:  # else it fails with a param reported already
                    hints = did_you_mean(exc.unknown, [*resolved, *pending]) if exc.unknown else ()
                    diags.append(Diagnostic("bad-expr", f"param '{key}': {exc}", pos, node, hints))
                failed.add(key)
            del pending[key]
            progress = True
        if not progress:
            cycle = ", ".join(pending)
            diags.append(Diagnostic("bad-expr", f"params refer to each other in a cycle: {cycle}",
                                    source.pos((*base, next(iter(pending)))), node))
            break
    return resolved, diags


def substitute_tree(value: Any, params: Mapping[str, Any], path: DataPath, source: Source, exprs: Expressions,
                    node: str | None, diags: list[Diagnostic]) -> Any:
    """Substitute ``${...}`` everywhere in a node's arguments, reporting each failure at its key.

    Raises:
        SpecError: the expressions went past their limit, with `diags` so far (`expr_limit_error`).
    """
    if isinstance(value, dict):
        if not has_expr(value):
            return value  # the common case: nothing to substitute
        return {k: substitute_tree(v, params, (*path, k), source, exprs, node, diags) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_tree(v, params, (*path, i), source, exprs, node, diags) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    try:
        return exprs.substitute(value, params)
    except ExprLimitError as exc:
        raise expr_limit_error(exc, source.pos(path), node, diags) from None
    except ExprError as exc:
        hints = did_you_mean(exc.unknown, params) if exc.unknown else ()
        code = "unknown-param" if exc.unknown else "bad-expr"
        diags.append(Diagnostic(code, str(exc), source.pos(path), node, hints))
        return value


def expr_limit_error(exc: ExprLimitError, pos: SourcePos, node: str | None, diags: list[Diagnostic]) -> SpecError:
    """The error that stops a load or an expansion whose expressions went past their limit, located at the
    expression that did, after the problems found so far."""
    return SpecError([*diags, Diagnostic("limit", str(exc), pos, node, ("raise it with --limit max_expr_chars=N",))])


def has_expr(value: Any) -> bool:
    """Whether a ``${...}`` appears anywhere in `value` (text, or a mapping or list holding some)."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return False
    for item in value:  # a loop rather than any(): this runs on every node's arguments
        if isinstance(item, str):
            if "${" in item:
                return True
        elif isinstance(item, dict | list) and has_expr(item):
            return True
    return False
