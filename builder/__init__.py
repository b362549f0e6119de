"""nnspec's front end: spec text to a checked, shape-annotated graph. Imports neither torch nor onnx.

    >>> from nnspec.builder import load_spec, compile_graph
    >>> spec = load_spec("specs/lenet5.yaml", overrides={"num_classes": 10})
    >>> graph = compile_graph(spec)            # networkx.MultiDiGraph of `Node` payloads
"""

from .api import check_spec, load_spec
from .errors import Diagnostic, SourcePos, SpecError
from .graph import INPUT, Node, compile_graph, graph_inputs, graph_outputs, nodes, param_count
from .limits import DEFAULT_LIMITS, Limits
from .ops import FAMILIES, OPS, Op
from .ops.base import register as register_op
from .plugins import PluginError, load_plugins, plugin_lowerings, plugin_of
from .resolve import Frame, TensorRef
from .spec import Spec
from .tensor import ShapeError, TensorType, symbol

__all__ = [
    "DEFAULT_LIMITS", "FAMILIES", "INPUT", "OPS", "Diagnostic", "Frame", "Limits", "Node", "Op", "PluginError",
    "ShapeError", "SourcePos", "Spec", "SpecError", "TensorRef", "TensorType", "check_spec", "compile_graph",
    "graph_inputs", "graph_outputs", "load_plugins", "load_spec", "nodes", "param_count", "plugin_lowerings",
    "plugin_of", "register_op", "symbol",
]
