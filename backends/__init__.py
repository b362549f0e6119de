"""nnspec's back ends: the checked graph lowered to PyTorch, ONNX and Graphviz.

Each back end is a table keyed by op name (see `builder.OPS`); torch and onnx are imported
only when their back end is used.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__all__ = [
    "HOMES", "emit_python", "export_onnx", "generate", "generate_onnx", "load_weights", "render", "run_onnx",
    "save_weights", "to_graphviz", "to_mermaid", "to_onnx", "to_torch",
]

HOMES = {
    "to_torch": "nnspec.backends.pytorch",
    "generate": "nnspec.backends.pytorch",
    "emit_python": "nnspec.backends.pytorch",
    "save_weights": "nnspec.backends.pytorch",
    "load_weights": "nnspec.backends.pytorch",
    "to_onnx": "nnspec.backends.onnx",
    "export_onnx": "nnspec.backends.onnx",
    "run_onnx": "nnspec.backends.onnx",
    "generate_onnx": "nnspec.backends.onnx",
    "to_graphviz": "nnspec.backends.graphviz",
    "to_mermaid": "nnspec.backends.graphviz",
    "render": "nnspec.backends.graphviz",
}
"""Each public back-end name -> the module that defines it, imported on first use (`nnspec` too)."""

__getattr__ = lazy_exports(__name__, HOMES)
