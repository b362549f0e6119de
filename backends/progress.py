"""Progress on long work, for people at a terminal: a rich bar of the bytes written to a file
(the weights of ``export`` and ``build --weights``) and a spinner while weights are initialised.

Shown on stderr only when it is a terminal and the command is not giving ``--json``; never when
piped. ``NNSPEC_PROGRESS=always`` or ``never`` overrides the terminal test (tests, CI logs).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["MIN_BYTES", "enabled", "initialising", "writing"]

MIN_BYTES = 8 * 2**20
"""Below this many bytes the work is too short to show progress for."""


def enabled(as_json: bool = False) -> bool:
    """Whether to show progress: stderr is a terminal (or NNSPEC_PROGRESS=always), and no --json."""
    mode = os.environ.get("NNSPEC_PROGRESS", "auto").lower()
    if as_json or mode == "never":
        return False
    return mode == "always" or sys.stderr.isatty()


def _console() -> object:
    from rich.console import Console

    return Console(stderr=True, force_terminal=os.environ.get("NNSPEC_PROGRESS", "").lower() == "always" or None)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def writing(path: str | Path, total: int, label: str, show: bool) -> Iterator[None]:
    """A bar of the bytes of `path` (polled) against `total` while the body writes it."""
    if not show or total < MIN_BYTES:
        yield
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    target = Path(path)
    columns = (TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_console(), transient=False) as bar:  # type: ignore[arg-type]
        task = bar.add_task(label, total=total)
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.1):
                bar.update(task, completed=min(_size(target), total))

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        bar.update(task, completed=total)


@contextlib.contextmanager
def initialising(total: int, show: bool) -> Iterator[None]:
    """A spinner while `total` bytes of weights are initialised (the initialisers report no steps)."""
    if not show or total < MIN_BYTES:
        yield
        return
    with _console().status(f"initialising {total / 1e6:,.1f} MB of weights"):  # type: ignore[attr-defined]
        yield
