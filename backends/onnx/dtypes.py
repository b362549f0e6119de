"""nnspec dtype names to ONNX element types and numpy dtypes."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

__all__ = ["DTYPES", "np_dtype"]

DTYPES: dict[str, int] = {
    "float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16,
    "float64": TensorProto.DOUBLE, "int64": TensorProto.INT64, "int32": TensorProto.INT32, "bool": TensorProto.BOOL,
}
"""nnspec dtype name to ONNX element type."""


def np_dtype(dtype: str) -> np.dtype[Any]:
    """The numpy dtype of an nnspec dtype name (bfloat16 through ml_dtypes, as onnx does)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)
