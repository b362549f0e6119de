"""The ONNX backend's lowering table: every op of `builder.OPS` to a function emitting ONNX nodes.

The table lives in `nnspec.backends.onnx.table`; the ``ops_*`` modules register into it explicitly
(``@LOWERINGS.register("linear")``), and importing this module imports all of them.
"""

from __future__ import annotations

from . import ops_attention, ops_elementwise, ops_layers, ops_nonlinear, ops_recurrent, ops_spatial, ops_tensor
from .table import LOWERINGS, Emitter, Lowering, Options

__all__ = ["EMITTED_OPS", "LOWERINGS", "Emitter", "Lowering", "Options"]

# imported for their registrations
_ = (ops_attention, ops_elementwise, ops_layers, ops_nonlinear, ops_recurrent, ops_spatial, ops_tensor)

EMITTED_OPS: frozenset[str] = frozenset({
    "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Conv", "ConvTranspose", "Cos",
    "DepthToSpace", "Div", "Elu", "Erf", "Exp", "Expand", "Flatten", "GRU", "Gather", "GatherElements", "Gemm",
    "GlobalAveragePool", "GlobalMaxPool", "Greater", "HardSigmoid", "Identity", "InstanceNormalization", "LSTM",
    "LayerNormalization", "LeakyRelu", "Log", "LogSoftmax", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Or",
    "PRelu", "Pad", "Pow", "RNN", "Range", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum",
    "Relu", "Reshape", "Resize", "Shape", "Sigmoid", "Sin", "Slice", "Softmax", "Softplus", "SpaceToDepth", "Split",
    "Sqrt", "Squeeze", "Sub", "Tanh", "Tile", "Transpose", "Unsqueeze", "Where",
})
"""Every ai.onnx op type the default lowerings emit; the default opset is the highest whose
versions of all of them onnxruntime runs on CPU. A test checks emitted models against it."""

OPTIONAL_OPS: dict[str, frozenset[str]] = {
    "native_gelu": frozenset({"Gelu"}),
    "native_attention": frozenset({"Attention", "Not"}),
}
"""Op types emitted only with an `Options` flag set."""
