"""The one output-path policy of every command that writes a file.

- A regular file (or a new name in an existing directory) is written atomically: the bytes go
  to a hidden temporary file beside it, which replaces the target only once it is complete.
  A symbolic link to a regular file keeps the link; the file it points to is replaced.
- A character device (``/dev/null``), a pipe, a socket or ``-`` (standard output) is written
  through: the complete bytes are copied into it, and nothing is ever renamed over it.
- Nothing is written over an input of the command (the spec, a weights file), nor under a
  name whose suffix does not say what it holds, nor outside the folder a command writes into
  (`file_in`: names that come from a model, such as ONNX output names, stay inside).
- Every temporary file is registered while it lives: an exception, SIGINT, SIGTERM or SIGHUP
  removes it (`install_signal_cleanup`).

A refusal is an `OutputError` with the exit status it deserves (1, or 2 for a usage error).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from nnspec.builder.text import printable

__all__ = [
    "STDOUT", "InputFileError", "OutputError", "OutputTarget", "atomic_output", "file_in", "install_signal_cleanup",
    "regular_file_size", "resolve_output",
    "remove_temporaries", "safe_file_name", "temporary_beside", "temporary_folder", "write_text_atomic",
]

STDOUT = "-"
"""The output name that means standard output."""

WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES,
                          errno.EPERM, errno.ENAMETOOLONG})
"""Errors of writing a file that are the place's fault (a full disk, no permission), not nnspec's."""

_LIVE: set[Path] = set()
"""Temporary files and folders that exist right now; removed on every way out."""


class OutputError(Exception):
    """An output path the policy refuses, or a write that the file system refused.

    Attributes:
        exit_code: 1, or 2 when the command line itself is wrong (a suffix, a directory given as a file).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InputFileError(ValueError):
    """A file given to a command (a model, an array, weights) that cannot be used: the user's fault,
    exit 1. Backends subclass it; the command line reports any of them as an error, not a bug."""


def regular_file_size(path: Path, what: str, error: type[InputFileError] = InputFileError) -> int:
    """The size of `path`, a regular file that exists and can be read (a pipe or a device is never
    opened), else `error` naming the file as `what` (``weights file``)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{what} {_quoted(path)} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {what} {_quoted(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {_quoted(path)} is not a regular file")
    return st.st_size


@dataclass(frozen=True)
class OutputTarget:
    """Where a command's bytes end up.

    Attributes:
        shown: the name as the user gave it (for messages).
        path: the file replaced (symbolic links resolved); for a write-through target, the path opened.
        through: a device, a pipe, a socket or standard output: copied into, never renamed over.
    """

    shown: str
    path: Path
    through: bool

    @property
    def stdout(self) -> bool:
        return self.shown == STDOUT


def _quoted(path: str | Path) -> str:
    return f"'{printable(str(path))}'"


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise OutputError(f"cannot write {_quoted(path)}: a part of the path is a file, not a directory") from None
    except OSError as exc:
        raise OutputError(f"cannot write {_quoted(path)}: {exc.strerror or exc}") from None


def _refuse_inputs(target: Path, st: os.stat_result, inputs: Iterable[str | Path | None]) -> None:
    for given in inputs:
        if given is None or str(given) == STDOUT:
            continue
        try:
            if _same_file(st, Path(given).stat()):
                raise OutputError(f"{_quoted(target)} is also an input of this command ({_quoted(given)}); "
                                  "write to another file", 2)
        except OSError:
            continue


def _check_suffix(path: Path, suffixes: Sequence[str], what: str) -> None:
    if suffixes and not any(path.name.lower().endswith(s) for s in suffixes):
        want = " or ".join(suffixes)
        raise OutputError(f"{what} {_quoted(path)} must end in {want}", 2)


def resolve_output(path: str | Path, suffixes: Sequence[str] = (), inputs: Iterable[str | Path | None] = (),
                   what: str = "output") -> OutputTarget:
    """Decide how `path` is written, or refuse it.

    Args:
        path: the name the user gave; ``-`` is standard output.
        suffixes: the endings a regular file must have (``.onnx``); devices and pipes are exempt.
        inputs: the command's input files, which are never written over.
        what: the name of the option, for messages.

    Raises:
        OutputError: a directory, a missing directory, a dangling link, a block device, an input,
            or a wrong suffix.
    """
    shown = str(path)
    if shown == STDOUT:
        return OutputTarget(shown, Path(STDOUT), True)
    if "\0" in shown:
        raise OutputError(f"{what} {_quoted(shown)} holds a NUL character", 2)
    given = Path(path)
    st = _stat(given)
    if st is None:
        if given.is_symlink():
            raise OutputError(f"{_quoted(given)} is a link to nothing ({_quoted(os.readlink(given))}); "
                              "remove it or give another name")
        parent = given.parent
        pst = _stat(parent)
        if pst is None:
            raise OutputError(f"directory {_quoted(parent)} does not exist")
        if not stat.S_ISDIR(pst.st_mode):
            raise OutputError(f"cannot write {_quoted(given)}: {_quoted(parent)} is not a directory")
        _check_suffix(given, suffixes, what)
        return OutputTarget(shown, given, False)
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{_quoted(given)} is a directory; give a file name", 2)
    if stat.S_ISREG(st.st_mode):
        _refuse_inputs(given, st, inputs)
        _check_suffix(given, suffixes, what)
        return OutputTarget(shown, given.resolve(), False)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
        return OutputTarget(shown, given, True)
    raise OutputError(f"{_quoted(given)} is neither a regular file nor a character device or pipe; refusing to write it")


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@,-]+")


def safe_file_name(name: str, fallback: str = "output") -> str:
    """`name` (which came from a model or a spec) as one plain file name: no folder separators,
    no ``..``, no leading dot, no control characters, at most 200 characters."""
    text = _UNSAFE.sub("_", name).lstrip(".")[:200]
    return text if text.strip("_") else fallback


def file_in(folder: str | Path, names: Sequence[str], suffix: str) -> dict[str, Path]:
    """A file inside `folder` for each of `names` (which may be hostile): made safe, kept distinct.

    Returns:
        Name to path; every path's parent is `folder` itself.
    """
    out: dict[str, Path] = {}
    taken: set[str] = set()
    for name in names:
        base = safe_file_name(name)
        stem, n = base, 2
        while stem.lower() in taken:
            stem, n = f"{base}_{n}", n + 1
        taken.add(stem.lower())
        out[name] = Path(folder) / f"{stem}{suffix}"
    return out


_held = 0
"""How deep the current code is in sections that a signal must not cut (creating and registering a file)."""
_pending: int | None = None
"""A signal that arrived during such a section, handled when it ends."""
_ending: int | None = None
"""The signal that is ending the process, once handled. Its SystemExit can be swallowed by library
code it lands in (a bare ``except`` in an extension module's import), so nothing is renamed into
place after it (`_still_running`)."""


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer the cleanup signals until the block is done. (A signal mask would not do: the kernel
    hands a blocked signal to another thread, and Python then runs the handler in this one.)"""
    global _held, _pending
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if _held == 0 and _pending is not None:
            signum, _pending = _pending, None
            _on_signal(signum, None)


def _register(path: Path) -> None:
    _LIVE.add(path)


def _forget(path: Path) -> None:
    with _signals_held():  # removed, then unregistered: never unregistered and left
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        _LIVE.discard(path)


@contextlib.contextmanager
def temporary_beside(target: Path) -> Iterator[Path]:
    """A new hidden temporary file in `target`'s folder, removed on the way out unless it was renamed."""
    tmp: Path | None = None
    try:
        with _signals_held():  # a signal between creating and registering it would leave it behind
            try:
                fd, name = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=".tmp", dir=target.parent)
            except OSError as exc:  # no permission, a read-only or full file system
                raise OutputError(f"cannot write {_quoted(target)}: {exc.strerror or exc}") from None
            tmp = Path(name)
            _register(tmp)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        yield tmp
    finally:
        if tmp is not None:
            _forget(tmp)


@contextlib.contextmanager
def temporary_folder() -> Iterator[Path]:
    """A new private folder in the system's temporary place, removed with all it holds on the way out."""
    folder: Path | None = None
    try:
        with _signals_held():
            folder = Path(tempfile.mkdtemp(prefix=".nnspec-"))
            _register(folder)
        yield folder
    finally:
        if folder is not None:
            _forget(folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _copy_through(tmp: Path, target: OutputTarget) -> None:
    with open(tmp, "rb") as src:
        if target.stdout:
            sys.stdout.flush()
            shutil.copyfileobj(src, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with open(target.path, "wb") as dst:
                shutil.copyfileobj(src, dst)


@contextlib.contextmanager
def _write_errors(target: OutputTarget) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise OutputError(f"cannot write {_quoted(target.shown)}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def atomic_output(path: str | Path, suffixes: Sequence[str] = (), inputs: Iterable[str | Path | None] = (),
                  what: str = "output") -> Iterator[Path]:
    """Yield a temporary path to write; on success its bytes become `path` under the policy above.

    On any failure the temporary file is removed and `path` keeps what it held. A write that
    the file system refuses (a full disk, a read-only place) is an `OutputError`.

    >>> with atomic_output("model.onnx", (".onnx",), inputs=[spec_path]) as tmp:
    ...     onnx.save(model, tmp)
    """
    target = resolve_output(path, suffixes, inputs, what)
    if target.through:
        with temporary_folder() as folder, _write_errors(target):
            tmp = folder / safe_file_name(target.path.name, "out")
            yield tmp
            _still_running()
            _copy_through(tmp, target)
        return
    with temporary_beside(target.path) as tmp, _write_errors(target):
        yield tmp
        _still_running()
        os.replace(tmp, target.path)


def write_text_atomic(path: str | Path, text: str, suffixes: Sequence[str] = (),
                      inputs: Iterable[str | Path | None] = ()) -> None:
    """Write `text` (UTF-8) to `path` under the policy above."""
    with atomic_output(path, suffixes, inputs) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_temporaries() -> None:
    """Remove every temporary file and folder that is still alive (a signal is ending the process)."""
    global _held
    _held += 1  # a second signal meanwhile waits; the process is ending anyway
    try:
        for path in list(_LIVE):
            _forget(path)
    finally:
        _held -= 1


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _pending, _ending
    if _held:
        _pending = signum
        return
    _ending = signum
    remove_temporaries()
    raise SystemExit(128 + signum)


def _still_running() -> None:
    """Raise the SystemExit of a signal handled already, if code it landed in swallowed it."""
    if _ending is not None:
        raise SystemExit(128 + _ending)


def install_signal_cleanup(signals: Iterable[int] = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)) -> None:
    """Make each of `signals` end the process with its temporaries removed: exit 128 + signal.

    Call it from the main thread of a command-line program (never from a library)."""
    for signum in signals:
        with contextlib.suppress(ValueError, OSError):  # not the main thread, or no such signal here
            signal.signal(signum, _on_signal)
