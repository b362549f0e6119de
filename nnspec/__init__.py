"""nnspec: declarative neural networks. The front door of the Python API.

    >>> import nnspec
    >>> spec = nnspec.load_spec("specs/lenet5.yaml", overrides={"num_classes": 10})
    >>> graph = nnspec.compile_graph(spec)       # networkx.MultiDiGraph, every node with shapes
    >>> model = nnspec.to_torch(spec)            # torch.fx GraphModule; state_dict keys are node ids
    >>> onnx_model = nnspec.to_onnx(spec, state_dict=model.state_dict())
    >>> nnspec.render(spec, "lenet5.svg")        # the suffix picks the format

The names come from two subpackages, `nnspec.builder` (spec to checked graph; no torch or onnx)
and `nnspec.backends` (PyTorch, ONNX, Graphviz): the repository's builder/ and backends/ folders,
linked here in a source tree and installed here by the wheel. Back-end names are imported on first use,
so `import nnspec` does not pay for torch or onnx.
"""

from __future__ import annotations

from importlib import metadata

from nnspec.backends import HOMES
from nnspec.backends._lazy import lazy_exports
from nnspec.builder import (
    Diagnostic,
    Limits,
    PluginError,
    ShapeError,
    Spec,
    SpecError,
    check_spec,
    compile_graph,
    graph_inputs,
    graph_outputs,
    load_plugins,
    load_spec,
    nodes,
    param_count,
    register_op,
)
from nnspec.builder.schema import json_schema
from nnspec.builder.summary import summary_rows

__all__ = [
    "Diagnostic", "Limits", "PluginError", "ShapeError", "Spec", "SpecError", "__version__", "check_spec",
    "compile_graph", "emit_python", "export_onnx", "generate", "generate_onnx", "graph_inputs", "graph_outputs",
    "json_schema", "load_plugins", "load_spec", "load_weights", "nodes", "param_count", "register_op", "render",
    "run_onnx", "save_weights", "summary_rows", "to_graphviz", "to_mermaid", "to_onnx", "to_torch",
]

try:
    __version__ = metadata.version("nnspec")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__getattr__ = lazy_exports(__name__, HOMES)


def __dir__() -> list[str]:
    return sorted(__all__)
