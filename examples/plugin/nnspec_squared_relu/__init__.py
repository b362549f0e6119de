"""An example nnspec op plugin: `squared_relu` (weightless) and `swiglu` (a layer with weights).

Importing this module registers the two op models; the lowerings live in `lower_torch` and
`lower_onnx`, which nnspec imports only when the PyTorch or the ONNX backend is used.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import sympy
from pydantic import PositiveInt

from nnspec.builder import Op, TensorType, plugin_lowerings, register_op
from nnspec.builder.ops.base import WeightShapes, expect_float, last_dim

__all__ = ["SquaredRelu", "SwiGLU"]


@register_op
class SquaredRelu(Op):
    """Squared ReLU of Primer (So et al., 2021).

    y = max(x, 0)^2

    Input shape: any. Output shape: same as the input.
    """

    op: Literal["squared_relu"]
    FAMILY: ClassVar[str] = "activation"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        expect_float(ins["x"], "x")
        return {"y": ins["x"]}


@register_op
class SwiGLU(Op):
    """Gated feed-forward layer of Llama (Shazeer, 2020): a SiLU-gated linear unit, then a projection.

    y = W2 (silu(x W1^T + b1) * (x W3^T + b3)) + b2, with weights w1, w3 (hidden, in) and w2 (out, hidden)

    Input shape: (*, in_features). Output shape: (*, out_features), in_features by default.
    """

    op: Literal["swiglu"]
    hidden_features: PositiveInt
    out_features: PositiveInt | None = None
    bias: bool = False
    FAMILY: ClassVar[str] = "linear"

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        x = ins["x"]
        expect_float(x, "x")
        out = self.out_features or last_dim(x, "x", "in_features")
        return {"y": x.with_shape((*x.shape[:-1], sympy.Integer(out)))}

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        d = last_dim(ins["x"], "x", "in_features")
        h, out = self.hidden_features, self.out_features or d
        w: WeightShapes = {"w1.weight": (h, d), "w3.weight": (h, d), "w2.weight": (out, h)}
        if self.bias:
            w.update({"w1.bias": (h,), "w3.bias": (h,), "w2.bias": (out,)})
        return w

    def label(self) -> str:
        return f"↔ {self.hidden_features}"


plugin_lowerings(pytorch=f"{__name__}.lower_torch", onnx=f"{__name__}.lower_onnx", shapes={"swiglu": "component"})
