"""The PyTorch backend: a checked spec becomes a trainable `torch.nn.Module` (a torch.fx GraphModule).

    >>> from backends.pytorch import to_torch
    >>> model = to_torch("specs/lenet5.yaml")
    >>> logits = model(torch.randn(8, 1, 32, 32))     # (8, 10)

`emit_python` writes the same module as standalone source; `save_weights` and `load_weights`
move weights through safetensors files; `generate` decodes greedily.
"""

from .codegen import emit_python
from .emitter import LoweringError
from .generate import generate
from .lowering import TABLE
from .module import SpecModule, to_torch
from .weights import WeightsError, load_weights, save_weights

__all__ = [
    "TABLE", "LoweringError", "SpecModule", "WeightsError", "emit_python", "generate", "load_weights", "save_weights",
    "to_torch",
]
