"""Files that `nnspec run` reads and writes besides specs: ONNX models, ``.npy`` inputs and outputs.

Each of them may be hostile or broken. Every way they can be wrong is a `FileError` that names
the file and says what is wrong (exit 1), never onnxruntime's or protobuf's internals:

- a model that is empty, truncated, text or another format; has inputs that are not tensors
  (sequences, maps); uses an operator domain onnxruntime does not know; or whose external data
  is missing, outside the model's folder, or from another export;
- a ``.npy`` file that is not one (pickles, text, ``.npz``), whose header claims more values
  than the file holds or than the limits allow, or whose dtype is an object.

Outputs are saved under names made safe (`nnspec.backends.outputs.file_in`): an output called
``../escaped`` or ``/etc/x`` stays inside the folder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.lib.format as npy_format

from nnspec.backends.outputs import InputFileError, OutputError, atomic_output, file_in, regular_file_size
from nnspec.builder.text import printable

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

__all__ = ["DATA_DIGEST_KEY", "FileError", "check_data_digest", "load_model_file", "model_session", "read_npy",
           "save_outputs", "stamp_data_digest", "tensor_bytes"]

DATA_DIGEST_KEY = "nnspec.external_data.sha256"
"""Model metadata: the SHA-256 of the external-data file written with it, so that a model and a
data file from two different exports (two writers racing to the same path) are told apart."""

_NPY_MAGIC = b"\x93NUMPY"
_ONNX_TYPES = ("tensor_type", "sequence_type", "map_type", "optional_type", "sparse_tensor_type")


class FileError(InputFileError):
    """A model or array file that cannot be used, with the file's name and what is wrong."""


def _q(path: str | Path) -> str:
    return f"'{printable(str(path))}'"


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return printable(text if len(text) <= limit else text[:limit] + " ...")


def tensor_bytes(shape: Sequence[int], itemsize: int) -> int:
    """Bytes of an array of `shape` (exact, with no overflow)."""
    return math.prod(int(d) for d in shape) * itemsize


def read_npy(path: str | Path, max_bytes: int, name: str = "") -> np.ndarray:
    """An array from a ``.npy`` file, its header checked before anything is allocated.

    Raises:
        FileError: not a ``.npy`` file, an object dtype, more bytes than `max_bytes`, or fewer
            bytes in the file than its header claims.
    """
    file = Path(path)
    label = f"input '{printable(name)}': " if name else ""
    size = regular_file_size(file, f"{label}array file", FileError)
    try:
        with open(file, "rb") as f:
            if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                raise FileError(f"{label}{_q(file)} is not a .npy file (it does not start with numpy's magic bytes)")
            f.seek(0)
            version = npy_format.read_magic(f)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, _, dtype = read_header(f, max_header_size=10_000)
            if dtype.hasobject:
                raise FileError(f"{label}{_q(file)} holds Python objects (dtype {dtype}); only numeric arrays are read")
            need = tensor_bytes(shape, dtype.itemsize)
            if need > max_bytes:
                raise FileError(f"{label}{_q(file)} claims {need:,} bytes {list(shape)}; the limit is {max_bytes:,} "
                                "(--limit max_tensor_bytes)")
            if size - f.tell() < need:
                raise FileError(f"{label}{_q(file)} is truncated: its header claims {need:,} bytes of data, "
                                f"it holds {size - f.tell():,}")
            f.seek(0)
            return npy_format.read_array(f, allow_pickle=False)
    except FileError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # numpy parses the header with ast and tokenize: any of their errors
        raise FileError(f"{label}cannot read {_q(file)}: {_short(exc)}") from None


def load_model_file(path: str | Path) -> onnx.ModelProto:
    """The graph of an ONNX file (external data is left on disk), checked to be one.

    Raises:
        FileError: missing, empty, not an ONNX model, without a graph, or with inputs that are not tensors.
    """
    import onnx
    from google.protobuf.message import DecodeError

    file = Path(path)
    size = regular_file_size(file, "model file", FileError)
    if size == 0:
        raise FileError(f"model file {_q(file)} is empty")
    try:
        model = onnx.load(str(file), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise FileError(f"{_q(file)} is not an ONNX model (protobuf: {_short(exc, 120)})") from None
    if not model.HasField("graph") or not model.graph.output:
        raise FileError(f"{_q(file)} is not an ONNX model: it has no graph, or a graph without outputs")
    for vi in model.graph.input:
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            what = kind.replace("_type", "") if kind else "untyped"
            raise FileError(f"{_q(file)}: input '{printable(vi.name)}' is a {what}; nnspec run feeds tensors only")
    check_data_digest(model, file)
    return model


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def stamp_data_digest(model_path: Path, data_path: Path) -> None:
    """Record `data_path`'s digest in the model at `model_path` (both still temporary files)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    entry = next((p for p in model.metadata_props if p.key == DATA_DIGEST_KEY), None) or model.metadata_props.add()
    entry.key, entry.value = DATA_DIGEST_KEY, _sha256(data_path)
    onnx.save(model, str(model_path))


def check_data_digest(model: onnx.ModelProto, path: str | Path) -> None:
    """Refuse a model whose external-data file is not the one exported with it.

    Raises:
        FileError: the data file's digest differs from the one the model records.
    """
    want = next((p.value for p in model.metadata_props if p.key == DATA_DIGEST_KEY), None)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    if want is None or len(locations) != 1:
        return
    data = Path(path).parent / locations.pop()
    if data.is_file() and _sha256(data) != want:
        raise FileError(f"{_q(data)} does not belong to {_q(path)}: it comes from another export (two exports "
                        "to the same path at once?); export again")


def model_session(source: onnx.ModelProto | str | Path, user_file: bool) -> ort.InferenceSession:
    """An onnxruntime session for `source`; a model file onnxruntime refuses is a `FileError`.

    Args:
        source: a path, or a model built in memory.
        user_file: `source` came from the user (its faults are theirs); else a refusal is a bug and propagates.
    """
    from .runtime import session

    if not user_file:
        return session(source)
    try:
        return session(source)
    except UnicodeDecodeError:  # onnxruntime's message quoted bytes of a corrupt model
        raise FileError(f"onnxruntime cannot load {_q(source)}: the model is corrupt") from None
    except Exception as exc:  # onnxruntime's own error types (Fail, InvalidGraph, NotImplemented, ...)
        if type(exc).__module__.startswith("onnxruntime"):
            raise FileError(f"onnxruntime cannot load {_q(source)}: {_short(exc)}") from None
        raise


def run_session(sess: ort.InferenceSession, feed: Mapping[str, Any], source: str | Path) -> dict[str, np.ndarray]:
    """`runtime.run_onnx` on a user's model; onnxruntime's failure while running it is a `FileError`."""
    from .runtime import run_onnx

    try:
        return run_onnx(sess, feed)
    except MemoryError:
        raise FileError(f"running {_q(source)} needs more memory than this machine has") from None
    except Exception as exc:
        if type(exc).__module__.startswith("onnxruntime"):
            raise FileError(f"onnxruntime failed running {_q(source)}: {_short(exc)}") from None
        raise


def save_outputs(folder: str | Path, outputs: Mapping[str, np.ndarray], inputs: Sequence[str | Path | None] = ()
                 ) -> dict[str, Path]:
    """Save each output as a ``.npy`` file inside `folder` (created if missing), named after it,
    made safe. Returns name to file.

    Raises:
        OutputError: the folder cannot be made or written, or a name lands on an input.
    """
    root = Path(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"--output-dir {_q(root)} is a file, not a directory") from None
    except OSError as exc:
        raise OutputError(f"cannot make --output-dir {_q(root)}: {exc.strerror or exc}") from None
    if not root.is_dir():
        raise OutputError(f"--output-dir {_q(root)} is not a directory")
    files = file_in(root, list(outputs), ".npy")
    for path in files.values():
        if path.is_symlink():  # a link would carry the write out of the folder
            raise OutputError(f"{_q(path)} is a symbolic link; nnspec writes only files inside --output-dir")
    for name, arr in outputs.items():
        with atomic_output(files[name], (".npy",), inputs, "output file") as tmp, open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    return files
