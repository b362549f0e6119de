"""One JSON document per ``--json`` run, for every command: the result, or the errors.

Every document is an object with ``command``, ``ok``, ``exit_code`` and ``diagnostics`` (each
a `builder.Diagnostic` as JSON: severity, code, message, file, line, col, node, hints), plus the
command's own fields on success (``files`` for validate, ``nodes`` for summary, ``outputs`` for
run and check, ``wrote`` for the commands that write files, ...). A failure is the same object
with ``ok: false``, the exit status, and every error in ``diagnostics``; the errors also go to
stderr as text. The JSON Schema is `SCHEMA_PATH` (docs/cli-json.schema.json).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from nnspec.builder import Diagnostic

__all__ = ["SCHEMA_PATH", "active", "emit", "emit_parse_error", "json_output", "record", "record_error"]

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "cli-json.schema.json"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class _Run:
    command: str
    diagnostics: list[dict[str, object]] = field(default_factory=list)
    emitted: bool = False


_RUN: _Run | None = None
_EMITTED = False  # whether this process printed a document (a command's, or its error's)


def active() -> bool:
    """Whether the running command was given ``--json``."""
    return _RUN is not None


def record(diags: Iterable[Diagnostic]) -> None:
    """Keep diagnostics for the run's JSON document (nothing without ``--json``)."""
    if _RUN is not None:
        _RUN.diagnostics.extend(d.to_json() for d in diags)


def record_error(message: str, exit_code: int = 1) -> None:
    """Keep an error that is not about a spec line (a bad file, a usage error) for the JSON document."""
    if _RUN is not None:
        code = {2: "usage", 3: "internal"}.get(exit_code, "error")
        _RUN.diagnostics.append({"severity": "error", "code": code, "message": message, "file": None, "line": None,
                                 "col": None, "node": None, "hints": []})


def emit(fields: dict[str, Any], ok: bool = True, exit_code: int | None = None) -> None:
    """Print the run's one JSON document: `fields` with command, ok, exit_code and diagnostics."""
    global _EMITTED
    run = _RUN
    if run is None or run.emitted:
        return
    run.emitted = _EMITTED = True
    code = exit_code if exit_code is not None else (0 if ok else 1)
    doc = {"command": run.command, "ok": ok, "exit_code": code, **fields, "diagnostics": run.diagnostics}
    click.echo(json.dumps(doc, indent=2))


def json_output(fn: F) -> F:
    """The ``--json`` flag for a command, and the error document when the command fails.

    The command reads `as_json` and calls `emit` with its result; a failure (an exit status
    other than 0, a usage error, an unexpected exception) prints the error document instead.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _RUN
        if not kwargs.get("as_json"):
            return fn(*args, **kwargs)
        ctx = click.get_current_context(silent=True)
        _RUN = _Run(ctx.info_name if ctx is not None and ctx.info_name else fn.__name__)
        try:
            result = fn(*args, **kwargs)
            emit({})
            return result
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if code:
                emit({}, ok=False, exit_code=code)
            raise
        except click.ClickException as exc:
            record_error(exc.format_message(), exc.exit_code)
            emit({}, ok=False, exit_code=exc.exit_code)
            raise
        except (KeyboardInterrupt, click.exceptions.Abort):
            raise
        except Exception as exc:
            record_error(f"internal error: {type(exc).__name__}: {exc}", 3)
            emit({}, ok=False, exit_code=3)
            raise
        finally:
            _RUN = None
            sys.stdout.flush()

    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result, or the errors, as one JSON document on stdout.")(wrapper)  # type: ignore[return-value]


def emit_parse_error(exc: click.ClickException, argv: list[str], commands: Iterable[str]) -> None:
    """The JSON document of a usage error that click raised while parsing a command's arguments (an
    unknown option, a missing argument), before the command could print one itself: given ``--json``,
    the error is data too. Errors of the command group itself (no such command) have no document."""
    global _RUN
    ctx = getattr(exc, "ctx", None)
    command = ctx.info_name if ctx is not None else None
    if _EMITTED or "--json" not in argv or command not in set(commands):
        return
    _RUN = _Run(command)
    try:
        record_error(exc.format_message(), exc.exit_code)
        emit({}, ok=False, exit_code=exc.exit_code)
    finally:
        _RUN = None
