"""A weights file checked before either backend reads it, and what both say when they cast one.

Both backends load weights with the safetensors library, which trusts the file: a header that
claims more data than the file holds, a dtype numpy has no type for (F8), or a device given as
the file give errors that say nothing of the file. `check_safetensors` reads only the header and
checks every tensor's dtype, shape and byte range against the file, so that every bad weights
file is one `WeightsFileError` naming the file (exit 1).

A PyTorch state_dict (``.pt``/``.bin``, written by ``torch.save``) is told apart by its first
bytes (`weights_format`) and read only through ``torch.load(weights_only=True)``
(`read_torch_weights`), the reader ``import-weights`` uses: no arbitrary object is unpickled.
Weights of another floating-point dtype than the model's are cast with a `WeightDtypeWarning`
never silently; the CLI prints it as a note.

`SafetensorsFile` is a checked file as a mapping that reads one tensor when it is asked for
(a seek and one read into its array): an export holds one weight of the file at a time, never the
whole file. A ``torch.save`` file is a pickle and is read whole.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nnspec.builder.text import printable

from .outputs import InputFileError, regular_file_size

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DTYPE_BYTES", "FLOAT_DTYPES", "TORCH_SUFFIXES", "SafetensorsFile", "TensorInfo", "WeightDtypeWarning",
           "WeightsFileError", "check_safetensors", "numpy_dtype", "read_torch_weights", "weights_format"]

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
               "I64": 8, "U64": 8, "F64": 8}
"""Bytes per value of each safetensors dtype nnspec reads (F8 kinds are refused: numpy has none)."""

FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
"""The dtypes a floating-point weight may be stored in."""

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
"""Weights files written with ``torch.save`` (a plain state_dict) rather than safetensors."""

MAX_HEADER_BYTES = 100 * 2**20
"""safetensors' own bound on the JSON header."""


class WeightsFileError(InputFileError):
    """A weights file that is missing, not a regular file, or not a well-formed safetensors file."""


class WeightDtypeWarning(UserWarning):
    """Floating-point weights of another dtype than the model's were cast to the model's.

    Attributes:
        given: the file's dtypes that were cast.
        model: the dtypes they were cast to.
    """

    def __init__(self, given: Iterable[str], model: Iterable[str], what: str = "model", keep: str | None = None):
        self.given, self.model, self.what = tuple(sorted(set(given))), tuple(sorted(set(model))), what
        super().__init__(self.note(keep))

    @property
    def half(self) -> bool:
        """Whether a half-precision file (float16, bfloat16) was cast up."""
        return any(d in ("float16", "bfloat16") for d in self.given)

    def note(self, keep: str | None = None) -> str:
        """The one wording of a cast, for both backends and the CLI; `keep` says how to keep the file's dtype."""
        return (f"the weights are {'/'.join(self.given)}; they are cast to the {self.what}'s {'/'.join(self.model)}"
                + (f" ({keep})" if keep else ""))


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file, as its header describes it.

    Attributes:
        dtype: its safetensors dtype (``F32``, ``BF16``, ...).
        shape: its shape.
        offset: where its bytes start in the file (after the header).
    """

    dtype: str
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def _q(path: str | Path) -> str:
    return f"'{printable(str(path))}'"


def _header(path: Path, size: int) -> tuple[dict[str, object], int]:
    """The JSON header and the number of bytes after it (its data)."""
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


def _tensor(path: Path, key: str, entry: object, data_start: int, data_bytes: int) -> TensorInfo:
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
    return TensorInfo(str(dtype), tuple(shape), data_start + offsets[0])


def check_safetensors(path: str | Path) -> dict[str, TensorInfo]:
    """The tensors of a safetensors file, each checked against the file's size.

    Raises:
        WeightsFileError: a missing file, a device or folder, a truncated or malformed file, or a
            dtype nnspec does not read.
    """
    file = Path(path)
    size = regular_file_size(file, "weights file", WeightsFileError)
    header, data_bytes = _header(file, size)
    start = size - data_bytes
    return {key: _tensor(file, key, entry, start, data_bytes) for key, entry in header.items() if key != "__metadata__"}


_NUMPY_DTYPES = {"BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "F16": "<f2", "I32": "<i4",
                 "U32": "<u4", "F32": "<f4", "I64": "<i8", "U64": "<u8", "F64": "<f8"}


def numpy_dtype(dtype: str) -> np.dtype[Any]:
    """The numpy dtype of a safetensors dtype (little-endian, as the file stores it; BF16 is ml_dtypes')."""
    import numpy as np

    if dtype == "BF16":
        import ml_dtypes  # numpy has no bfloat16; onnx depends on ml_dtypes for it

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(_NUMPY_DTYPES[dtype])


class SafetensorsFile(Mapping[str, "np.ndarray"]):
    """The tensors of a safetensors file, each read from the file when it is asked for and not kept.

    The header is read and checked once (`check_safetensors`), so the keys, shapes and dtypes
    (`info`) are known without reading any data. A tensor is then one seek and one read straight
    into its numpy array: no memory map, whose pages would stay resident until the whole file had
    been read, and no copy. Reading a tensor again reads it again.

    Raises:
        WeightsFileError: on construction, a file `check_safetensors` refuses; on reading a
            tensor, a file that was cut short or cannot be read any more.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tensors = check_safetensors(self.path)

    def info(self, key: str) -> TensorInfo:
        """The dtype, shape and place of tensor `key`, from the header."""
        return self.tensors[key]

    def __getitem__(self, key: str) -> np.ndarray:
        import numpy as np

        info = self.tensors[key]
        raw = np.empty(info.nbytes, dtype=np.uint8)  # bytes, viewed as the dtype after (a bfloat16 has no buffer format)
        try:
            with open(self.path, "rb") as f:
                f.seek(info.offset)
                got = f.readinto(raw.data)
        except OSError as exc:
            raise WeightsFileError(f"cannot read tensor '{printable(key)}' of weights file {_q(self.path)}: "
                                   f"{exc.strerror or exc}") from None
        if got != info.nbytes:
            raise WeightsFileError(f"weights file {_q(self.path)} ended inside tensor '{printable(key)}' "
                                   f"({got:,} of its {info.nbytes:,} bytes): it changed after it was checked")
        return raw.view(numpy_dtype(info.dtype)).reshape(info.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __contains__(self, key: object) -> bool:
        return key in self.tensors


def weights_format(path: str | Path) -> Literal["safetensors", "torch"]:
    """How a weights file is stored, by its first bytes: a ``torch.save`` file (a zip archive,
    or a legacy pickle) or, anything else, safetensors (which `check_safetensors` then checks).

    Raises:
        WeightsFileError: a missing file, or a device or folder.
    """
    file = Path(path)
    regular_file_size(file, "weights file", WeightsFileError)  # a pipe or a device is never opened to be sniffed
    with open(file, "rb") as f:
        head = f.read(2)
    return "torch" if head.startswith(b"PK") or head[:1] == b"\x80" else "safetensors"


def read_torch_weights(path: str | Path) -> dict[str, Any]:
    """The tensors of a PyTorch state_dict file, by name, as saved (torch tensors).

    Read through ``torch.load(weights_only=True)`` only; a state_dict nested under
    ``state_dict``/``model`` in a training checkpoint is found there (see `read_checkpoint`).

    Raises:
        WeightsFileError: a pickle that holds anything but names and tensors, or that needs
            more than tensors to load (a whole pickled module), naming the file.
    """
    from .weightmap.checkpoint import CheckpointError, read_torch_state_dict

    try:
        return read_torch_state_dict(Path(path))
    except CheckpointError as exc:
        raise WeightsFileError(str(exc)) from None
