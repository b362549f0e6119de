"""The public entry points: `load_spec` and `check_spec` (`compile_graph` lives in `graph`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import ValidationError

from .errors import Diagnostic, SourcePos, SpecError
from .expr import Expressions
from .graph import Node, compile_graph, nodes, without_gc
from .limits import DEFAULT_LIMITS, Limits
from .params import resolve_params, substitute_tree
from .plugins import load_plugins
from .precheck import node_key_errors
from .source import Source, parse_text, read_source
from .spec import Spec, validation_diagnostics

__all__ = ["check_spec", "load_spec"]

SpecSource = str | Path | Mapping[str, Any]


def _looks_like_text(s: str) -> bool:
    return "\n" in s or s.lstrip().startswith(("{", "name:")) or (":" in s and not Path(s).suffix)


def load_spec(source: SpecSource | Spec, overrides: Mapping[str, Any] | None = None,
              limits: Limits | None = None) -> Spec:
    """Read and validate a spec's structure and evaluate its params.

    Args:
        source: a path to a .yaml/.yml/.json file, the spec's text, or a dict.
        overrides: param values replacing the spec's own (``{"d_model": 256}``).
        limits: resource limits; defaults to `DEFAULT_LIMITS`.

    Returns:
        The validated `Spec`. Node arguments are checked by `compile_graph`.

    Raises:
        SpecError: every problem found, each with file, line, column and node.
        PluginError: an installed plugin (or one named by ``NNSPEC_PLUGINS``) cannot be loaded;
            plugins load once, on the first call.
    """
    load_plugins()
    with without_gc():
        return _load_spec(source, overrides, limits or DEFAULT_LIMITS)


def _load_spec(source: SpecSource | Spec, overrides: Mapping[str, Any] | None, limits: Limits) -> Spec:
    if isinstance(source, Spec):
        if not overrides and limits is DEFAULT_LIMITS:
            return source
        data: Any = source.model_dump(by_alias=True, exclude_none=True)
        src = source.source
    elif isinstance(source, Mapping):
        try:  # a copy as plain JSON data, as if it had been read from a file
            data, src = json.loads(json.dumps(source)), Source("<dict>")
        except (TypeError, ValueError, RecursionError) as exc:
            raise SpecError.single("bad-value", f"the spec is not plain data (mappings, lists, numbers, text): {exc}",
                                   SourcePos("<dict>")) from None
    elif isinstance(source, Path) or not _looks_like_text(source):
        data, src = read_source(source, limits)
    else:
        data, src = parse_text(source, "<text>", limits=limits)
    if not isinstance(data, dict):
        raise SpecError.single("bad-value", f"a spec must be a mapping at the top level, got {type(data).__name__}",
                               src.pos(()))
    raw_params = data.get("params")
    params: dict[str, Any] = {}
    diags: list[Diagnostic] = []
    if isinstance(raw_params, dict):
        exprs = Expressions(limits.max_int_bits, limits.max_expr_chars)
        params, diags = resolve_params(raw_params, dict(overrides or {}), {}, src, ("params",), exprs,
                                       override_pos=SourcePos("--set"))
        data = _substitute_input_shapes(data, params, src, exprs, diags)
        if isinstance(data.get("init"), dict):  # initialiser arguments may use params
            data["init"] = substitute_tree(data["init"], params, ("init",), src, exprs, None, diags)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        reported = {d.pos for d in diags}  # a `${...}` that failed above is not also a bad value
        diags.extend(d for d in validation_diagnostics(exc, data, src, model=Spec) if d.pos not in reported)
        # the graph pass that checks each node's arguments will not run: report the keys no op takes now
        reported |= {d.pos for d in diags}
        diags.extend(d for d in node_key_errors(data, src) if d.pos not in reported)
    if diags:
        raise SpecError(diags)
    spec._source = src
    spec._resolved = params
    spec._limits = limits
    return spec


def _substitute_input_shapes(data: dict[str, Any], params: dict[str, Any], src: Source, exprs: Expressions,
                             diags: list[Diagnostic]) -> dict[str, Any]:
    """Evaluate ``${...}`` in the inputs of the main graph and of each signature (sizes may use params)."""
    data = dict(data)
    if isinstance(data.get("inputs"), dict):
        data["inputs"] = substitute_tree(data["inputs"], params, ("inputs",), src, exprs, None, diags)
    sigs = data.get("signatures")
    if isinstance(sigs, dict):
        data["signatures"] = {
            k: {**v, "inputs": substitute_tree(v["inputs"], params, ("signatures", k, "inputs"), src, exprs, None,
                                               diags)}
            if isinstance(v, dict) and "inputs" in v else v
            for k, v in sigs.items()}
    return data


def _same_weights(a: Node, b: Node) -> bool:
    """Whether two nodes of one id (in two signatures) hold the same weights, counting ties."""
    names = set(a.weights) | set(a.ties)
    if names != set(b.weights) | set(b.ties):
        return False
    return all(a.weights[k] == b.weights[k] for k in set(a.weights) & set(b.weights))


def check_spec(spec: Spec) -> tuple[dict[str | None, nx.MultiDiGraph], list[Diagnostic]]:
    """Compile the main graph and every signature; check that shared nodes agree on weights.

    Returns:
        The graphs by signature (None for the main graph) and the warnings.

    Raises:
        SpecError: every error found across all signatures.
    """
    warnings: list[Diagnostic] = []
    errors: list[Diagnostic] = []
    graphs: dict[str | None, nx.MultiDiGraph] = {}
    seen: set[Diagnostic] = set()  # signatures share nodes, and so errors
    with without_gc():
        for sig in (None, *spec.signatures):
            try:
                graphs[sig] = compile_graph(spec, sig, warnings=warnings)
            except SpecError as exc:
                errors.extend(d for d in exc.errors if d not in seen)
                seen.update(exc.errors)
    if None in graphs and spec.signatures:  # compare each signature with the main graph
        main = {n.id: n for n in nodes(graphs[None])}
        for sig, g in graphs.items():
            for n in nodes(g) if sig else ():
                other = main.get(n.id)
                if other is not None and other.op != "input" and not _same_weights(n, other):
                    errors.append(Diagnostic(
                        "signature-mismatch", f"weights differ from the main graph's node of that id in signature "
                        f"'{sig}': {n.weights} vs {other.weights}", n.pos, n.id))
    if errors:
        raise SpecError(errors + warnings)
    return graphs, warnings
