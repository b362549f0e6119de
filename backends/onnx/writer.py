"""Writing models to disk: `save_onnx` for a ModelProto, and `export_onnx`, which streams the
weights from their arrays straight into the file.

`export_onnx` never copies a weight into a protobuf: it serialises the model without
initializers, and writes each initializer's wire encoding by hand around it (a TensorProto
is its small header, fields 1, 2 and 8, then field 9, ``raw_data``, the array's bytes). The
pieces are written in field-number order, so the file is byte-for-byte what
``to_onnx(...).SerializeToString()`` gives, at the cost of one write of the weights: the
same work safetensors does. The file's layout is planned from each weight's shape and dtype
alone, and a weight is made only when its bytes are written (`InitialWeights`), so an export
holds the model without its weights and one weight at a time, never all of them.

Protobuf cannot serialise more than 2 GiB; above that (or when asked) the weights go to a
``<model>.onnx.data`` file beside the model (ONNX external data, page-aligned).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import onnx
from google.protobuf.message import Message

from .export import GraphSource, Lowered, light_model, little_endian, prepare
from .weights import StateDict, weight_bytes, weight_layout

__all__ = ["PROTOBUF_LIMIT", "export_onnx", "needs_external", "save_onnx", "write_prepared"]

PROTOBUF_LIMIT = 2**31 - 2**20
"""A serialised protobuf cannot exceed 2 GiB; above this, weights are written as external data."""
EXTERNAL_THRESHOLD = 1024
"""Tensors smaller than this (bytes) stay in the model file even with external data."""
ALIGN = 4096

# wire keys: (field number << 3) | 2 (length-delimited)
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int) -> bytes:
    return _varint(field << 3 | 2)


def _split(message: Message, field: int) -> tuple[bytes, bytes]:
    """`message` serialised as the fields numbered below `field` and those above (omitting `field`).

    `field` is never read: reading a bytes field (a tensor's raw_data) copies it.
    """
    before, after = type(message)(), type(message)()
    for desc in message.DESCRIPTOR.fields:
        if desc.number == field:
            continue
        target = before if desc.number < field else after
        if desc.is_repeated:
            getattr(target, desc.name).extend(getattr(message, desc.name))
        elif not message.HasField(desc.name):
            continue
        elif desc.message_type is not None:
            getattr(target, desc.name).CopyFrom(getattr(message, desc.name))
        else:
            setattr(target, desc.name, getattr(message, desc.name))
    return before.SerializeToString(), after.SerializeToString()


_ELEMENT_BYTES: dict[int, int] = {
    onnx.TensorProto.FLOAT: 4, onnx.TensorProto.UINT8: 1, onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT16: 2,
    onnx.TensorProto.INT16: 2, onnx.TensorProto.INT32: 4, onnx.TensorProto.INT64: 8, onnx.TensorProto.BOOL: 1,
    onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.DOUBLE: 8, onnx.TensorProto.UINT32: 4, onnx.TensorProto.UINT64: 8,
    onnx.TensorProto.COMPLEX64: 8, onnx.TensorProto.COMPLEX128: 16, onnx.TensorProto.BFLOAT16: 2,
}
"""Bytes per element of the element types whose raw_data length follows from the dims alone."""


class _RawDataError(ValueError):
    """A tensor's raw_data does not hold the bytes its dims and data_type say."""


class _Tensor(NamedTuple):
    """An initializer to write: its layout, known before its data, and how to make its data."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    make: Callable[[], np.ndarray]

    @staticmethod
    def of(name: str, arr: np.ndarray) -> _Tensor:
        return _Tensor(name, tuple(arr.shape), arr.dtype, lambda: arr)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def data(self) -> memoryview:
        """The tensor's bytes, little-endian and C-ordered, made now."""
        arr = little_endian(self.make())
        if arr.shape != self.shape or arr.dtype != self.dtype.newbyteorder("<"):  # pragma: no cover - a bug
            raise AssertionError(f"initializer '{self.name}' is {arr.dtype}{list(arr.shape)}, planned as "
                                 f"{self.dtype}{list(self.shape)}")
        return arr.reshape(-1).data.cast("B")


class _Plan:
    """The initializers of one model as (encoded entry head, data, its bytes), data written after its head.

    Data is an array's memory, or a TensorProto whose raw_data is read only when it is written:
    protobuf hands out a copy, and one tensor's copy at a time is enough.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, memoryview | onnx.TensorProto | _Tensor | None, int]] = []
        self.size = 0

    def inline(self, t: _Tensor) -> None:
        """A tensor whose data is made when it is written."""
        head = onnx.TensorProto(name=t.name, dims=t.shape, data_type=_tensor_type(t.dtype)).SerializeToString()
        tensor = head + _key(_TENSOR_RAW_DATA) + _varint(t.nbytes)
        self._add(_key(_GRAPH_INITIALIZER) + _varint(len(tensor) + t.nbytes) + tensor, t, t.nbytes)

    def proto(self, t: onnx.TensorProto) -> None:
        """A tensor of a model as it is; its raw_data is copied out when written (see `write`)."""
        if not t.HasField("raw_data"):
            body = t.SerializeToString()
            self._add(_key(_GRAPH_INITIALIZER) + _varint(len(body)) + body, None, 0)
            return
        before, after = _split(t, _TENSOR_RAW_DATA)
        data: memoryview | onnx.TensorProto = t
        size = _ELEMENT_BYTES.get(t.data_type)
        if size is None:  # packed or unknown element type: copy the data now to measure it
            data = memoryview(t.raw_data)
            nbytes = data.nbytes
        else:
            nbytes = math.prod(t.dims) * size
        head = before + _key(_TENSOR_RAW_DATA) + _varint(nbytes)
        self._add(_key(_GRAPH_INITIALIZER) + _varint(len(head) + nbytes + len(after)) + head, data, nbytes)
        if after:  # fields numbered above raw_data (doc_string, data_location, ...)
            self._add(after, None, 0)

    def external(self, t: _Tensor, location: str, offset: int) -> None:
        proto = onnx.TensorProto(name=t.name, dims=t.shape, data_type=_tensor_type(t.dtype),
                                 data_location=onnx.TensorProto.EXTERNAL)
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(t.nbytes))):
            proto.external_data.add(key=k, value=v)
        body = proto.SerializeToString()
        self._add(_key(_GRAPH_INITIALIZER) + _varint(len(body)) + body, None, 0)

    def _add(self, head: bytes, data: memoryview | onnx.TensorProto | _Tensor | None, nbytes: int) -> None:
        self.entries.append((head, data, nbytes))
        self.size += len(head) + nbytes

    def write(self, f: BinaryIO) -> None:
        """Write every entry; raises _RawDataError where a tensor's raw_data is not as long as its dims say."""
        for head, data, nbytes in self.entries:
            f.write(head)
            if isinstance(data, onnx.TensorProto):
                raw = data.raw_data  # the one copy of this tensor's data
                if len(raw) != nbytes:
                    raise _RawDataError(f"initializer '{data.name}': raw_data holds {len(raw)} bytes, "
                                        f"its dims need {nbytes}")
                f.write(raw)
            elif isinstance(data, _Tensor):
                f.write(data.data())  # made now, dropped after
            elif data is not None:
                f.write(data)


def _write(model: onnx.ModelProto, tensors: Sequence[_Tensor], path: Path, external: bool,
           location: str | None = None, data_path: Path | None = None) -> list[Path]:
    """Write `model` (without initializers) and `tensors` as its initializers, in wire order, making
    each tensor's data only as it is written.

    With `external`, tensors of 1 KiB and more go to `data_path` (default: beside the model,
    named `location`, default ``<model file name>.data``), recorded in the model as `location`.
    """
    location = location or path.name + ".data"
    data_path = data_path or path.with_name(location)
    plan, blobs, offset = _Plan(), [], 0
    for t in tensors:
        if external and t.nbytes >= EXTERNAL_THRESHOLD:
            offset += -offset % ALIGN  # page-aligned, so onnxruntime can map tensors directly
            plan.external(t, location, offset)
            blobs.append((offset, t))
            offset += t.nbytes
        else:
            plan.inline(t)
    _write_model(path, model, plan)
    if not external:
        return [path]
    with open(data_path, "wb") as f:
        for at, t in blobs:
            f.write(b"\0" * (at - f.tell()))
            f.write(t.data())
    return [path, data_path]


def _tensor_type(dtype: np.dtype[Any]) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(dtype)


def _write_model(path: Path, model: onnx.ModelProto, plan: _Plan) -> None:
    """Write `model` (without initializers) with `plan` as its initializers, in wire order."""
    model_head, model_tail = _split(model, _MODEL_GRAPH)
    graph_head, graph_tail = _split(model.graph, _GRAPH_INITIALIZER)
    graph_size = len(graph_head) + plan.size + len(graph_tail)
    with open(path, "wb") as f:
        f.write(model_head + _key(_MODEL_GRAPH) + _varint(graph_size) + graph_head)
        plan.write(f)
        f.write(graph_tail + model_tail)


def export_onnx(spec_or_graph: GraphSource, path: str | Path, state_dict: StateDict | None = None,
                opset: int | None = None, signature: str | None = None, *, external_data: bool | None = None,
                seed: int = 0, native_gelu: bool = False, native_attention: bool = False,
                fused_attention: bool = False) -> list[Path]:
    """`to_onnx` straight to a file, the weights written from their arrays (no copy in memory).

    Takes the arguments of `to_onnx`; `external_data` forces (True) or forbids (False)
    external weights, which by default are used above 2 GiB.

    Returns:
        The files written: the model, and ``<path>.data`` with external data.
    """
    lowered, arrays = prepare(spec_or_graph, state_dict, opset, signature, seed=seed, native_gelu=native_gelu,
                              native_attention=native_attention, fused_attention=fused_attention)
    return write_prepared(lowered, arrays, Path(path), external_data)


def needs_external(lowered: Lowered, arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether the model would exceed protobuf's 2 GiB limit with its weights inside."""
    return weight_bytes(arrays) + 64 * len(arrays) + len(lowered.nodes) * 64 > PROTOBUF_LIMIT


def write_prepared(lowered: Lowered, arrays: Mapping[str, np.ndarray], path: Path, external_data: bool | None = None,
                   location: str | None = None, data_path: Path | None = None) -> list[Path]:
    """Write what `prepare` returned, each weight read from `arrays` as it is written (initial weights are
    made then: see `InitialWeights`); see `_write` for `location` and `data_path`."""
    if external_data is None:
        external_data = needs_external(lowered, arrays)
    tensors = [_Tensor(name, *weight_layout(arrays, name), partial(arrays.__getitem__, name)) for name in lowered.weights]
    tensors += [_Tensor.of(name, arr) for name, arr in lowered.consts.items()]  # as `initializers` orders them
    return _write(light_model(lowered), tensors, path, external_data, location, data_path)


def save_onnx(model: onnx.ModelProto, path: str | Path, external_data: bool | None = None,
              location: str | None = None) -> list[Path]:
    """Write `model` to `path`; its weights go to ``<path>.data`` when it is over 2 GiB (or when asked).

    The model is not modified. The file holds what ``model.SerializeToString()`` gives, written
    as `export_onnx` writes: the model without initializers serialised, then each initializer's
    header and raw_data, copied out of the model one tensor at a time (protobuf would
    serialise the whole model into one buffer, about as slow as writing the file).

    Returns:
        The files written.
    """
    path = Path(path)
    if not model.HasField("graph"):
        path.write_bytes(model.SerializeToString())
        return [path]
    light = _without_initializers(model)
    if not external_data and _save_inline(model, light, path, external_data is None):
        return [path]
    tensors = [_Tensor.of(t.name, onnx.numpy_helper.to_array(t)) for t in model.graph.initializer]
    return _write(light, tensors, path, True, location)


def _save_inline(model: onnx.ModelProto, light: onnx.ModelProto, path: Path, check_size: bool) -> bool:
    """Write `model` with its weights inside, unless `check_size` and it is over protobuf's limit."""
    plan = _Plan()
    for t in model.graph.initializer:
        plan.proto(t)
    if check_size and light.ByteSize() + plan.size > PROTOBUF_LIMIT:
        return False
    try:
        _write_model(path, light, plan)
    except _RawDataError:  # an ill-formed tensor: written as it is, as protobuf writes it
        path.write_bytes(model.SerializeToString())
    return True


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    head, tail = _split(model, _MODEL_GRAPH)
    light = onnx.ModelProto.FromString(head + tail)
    graph_head, graph_tail = _split(model.graph, _GRAPH_INITIALIZER)
    light.graph.ParseFromString(graph_head + graph_tail)
    return light
