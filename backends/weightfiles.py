"""A safetensors file checked before either backend reads it.

Both backends load weights with the safetensors library, which trusts the file: a header that
claims more data than the file holds, a dtype numpy has no type for (F8), or a device given as
the file give errors that say nothing of the file. `check_safetensors` reads only the header and
checks every tensor's dtype, shape and byte range against the file, so that every bad weights
file is one `WeightsFileError` naming the file (exit 1).
"""

from __future__ import annotations

import json
import math
import stat
from dataclasses import dataclass
from pathlib import Path

from nnspec.builder.text import printable

from .outputs import InputFileError

__all__ = ["DTYPE_BYTES", "FLOAT_DTYPES", "TensorInfo", "WeightsFileError", "check_safetensors"]

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
               "I64": 8, "U64": 8, "F64": 8}
"""Bytes per value of each safetensors dtype nnspec reads (F8 kinds are refused: numpy has none)."""

FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
"""The dtypes a floating-point weight may be stored in."""

MAX_HEADER_BYTES = 100 * 2**20
"""safetensors' own bound on the JSON header."""


class WeightsFileError(InputFileError):
    """A weights file that is missing, not a regular file, or not a well-formed safetensors file."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file, as its header describes it."""

    dtype: str
    shape: tuple[int, ...]


def _q(path: str | Path) -> str:
    return f"'{printable(str(path))}'"


def _file_size(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise WeightsFileError(f"weights file {_q(path)} does not exist") from None
    except OSError as exc:
        raise WeightsFileError(f"cannot read weights file {_q(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise WeightsFileError(f"weights file {_q(path)} is not a regular file")
    return st.st_size


def _header(path: Path, size: int) -> tuple[dict[str, object], int]:
    """The JSON header and the number of bytes after it."""
    bad = f"{_q(path)} is not a readable safetensors file"
    if size < 8:
        raise WeightsFileError(f"{bad} (it has {size} bytes)")
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise WeightsFileError(f"{bad} (its header claims {length:,} bytes, the file has {size:,})")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WeightsFileError(f"{bad} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise WeightsFileError(f"{bad} (its header is not a JSON object)")
    return header, size - 8 - length


def _tensor(path: Path, key: str, entry: object, data_bytes: int) -> TensorInfo:
    where = f"{_q(path)}: tensor '{printable(key)}'"
    if not isinstance(entry, dict):
        raise WeightsFileError(f"{where} has no dtype, shape and offsets")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        known = ", ".join(DTYPE_BYTES)
        raise WeightsFileError(f"{where} has dtype {printable(str(dtype))}, which nnspec does not read (it reads {known})")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise WeightsFileError(f"{where} has a malformed shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_bytes):
        raise WeightsFileError(f"{where} lies outside the file (offsets {printable(str(offsets))[:60]}, "
                               f"{data_bytes:,} bytes of data)")
    need = math.prod(shape) * DTYPE_BYTES[str(dtype)]
    if offsets[1] - offsets[0] != need:
        raise WeightsFileError(f"{where}: {dtype} {shape} needs {need:,} bytes, the file gives it "
                               f"{offsets[1] - offsets[0]:,}")
    return TensorInfo(str(dtype), tuple(shape))


def check_safetensors(path: str | Path) -> dict[str, TensorInfo]:
    """The tensors of a safetensors file, each checked against the file's size.

    Raises:
        WeightsFileError: a missing file, a device or folder, a truncated or malformed file, or a
            dtype nnspec does not read.
    """
    file = Path(path)
    size = _file_size(file)
    header, data_bytes = _header(file, size)
    return {key: _tensor(file, key, entry, data_bytes) for key, entry in header.items() if key != "__metadata__"}
