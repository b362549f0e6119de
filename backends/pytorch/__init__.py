"""The PyTorch backend: a checked spec becomes a trainable `torch.nn.Module` (a torch.fx GraphModule).

    >>> from nnspec.backends.pytorch import to_torch
    >>> model = to_torch("specs/lenet5.yaml")
    >>> logits = model(torch.randn(8, 1, 32, 32))     # (8, 10)

`emit_python` writes the same module as standalone source; `save_weights` and `load_weights`
move weights through safetensors files; `generate` decodes greedily.

torch is imported on first use of a name below, so that `nnspec build` checks a spec (and
refuses a bad one) before paying for the import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nnspec.backends._lazy import lazy_exports

if TYPE_CHECKING:
    from .codegen import emit_python
    from .decoding import generate
    from .emitter import LoweringError
    from .lowering import TABLE
    from .module import SpecModule, register_fsdp_methods, to_torch
    from .weights import WeightsError, load_weights, save_weights

__all__ = [
    "TABLE", "LoweringError", "SpecModule", "WeightsError", "emit_python", "generate", "load_weights",
    "register_fsdp_methods", "save_weights", "to_torch",
]

_HOME = {
    "TABLE": ".lowering", "LoweringError": ".emitter", "SpecModule": ".module", "WeightsError": ".weights",
    "emit_python": ".codegen", "generate": ".decoding", "load_weights": ".weights",
    "register_fsdp_methods": ".module", "save_weights": ".weights",
    "to_torch": ".module",
}


__getattr__ = lazy_exports(__name__, _HOME)
