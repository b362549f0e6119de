"""The ONNX backend: the checked graph emitted directly as an ONNX model, and run in onnxruntime.

    >>> from nnspec.backends.onnx import export_onnx, run_onnx, save_onnx, to_onnx
    >>> model = to_onnx("specs/lenet5.yaml")             # weights initialised as PyTorch would
    >>> save_onnx(model, "lenet5.onnx")
    >>> run_onnx(model, {"image": x})["logits"].shape    # x: float32 (batch, 1, 32, 32)
    >>> export_onnx("specs/gpt.yaml", "gpt.onnx", state_dict)  # straight to a file, weights streamed

`generate_onnx` decodes greedily over exported signatures; `random_inputs` makes inputs.

torch is imported only when a state_dict holds torch tensors; onnx and onnxruntime on first use
of a name below, so that `nnspec export` refuses a bad spec without paying for their import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nnspec.backends._lazy import lazy_exports

if TYPE_CHECKING:
    from .export import lower_graph, to_onnx
    from .generate import generate_onnx
    from .lowering import EMITTED_OPS, LOWERINGS
    from .opsets import MIN_OPSET, OpsetError, default_opset
    from .runtime import InputError, random_inputs, run_onnx, session
    from .weights import WeightError
    from .writer import export_onnx, save_onnx

__all__ = [
    "EMITTED_OPS", "LOWERINGS", "MIN_OPSET", "InputError", "OpsetError", "WeightError", "default_opset", "export_onnx",
    "generate_onnx", "lower_graph", "random_inputs", "run_onnx", "save_onnx", "session", "to_onnx",
]

_HOME = {
    "lower_graph": ".export", "to_onnx": ".export", "generate_onnx": ".generate", "EMITTED_OPS": ".lowering",
    "LOWERINGS": ".lowering", "MIN_OPSET": ".opsets", "OpsetError": ".opsets", "default_opset": ".opsets",
    "InputError": ".runtime", "random_inputs": ".runtime", "run_onnx": ".runtime", "session": ".runtime",
    "WeightError": ".weights", "export_onnx": ".writer", "save_onnx": ".writer",
}


__getattr__ = lazy_exports(__name__, _HOME)
