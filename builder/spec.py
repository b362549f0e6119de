"""The spec's top-level structure as pydantic models, and pydantic errors as diagnostics.

Node bodies stay plain mappings here: their arguments may hold ``${...}`` expressions over
params (a block's params are known only where it is called), so each node is validated
against its op's model during expansion (`nnspec.builder.resolve`).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic_core import ErrorDetails

from .errors import Diagnostic, did_you_mean
from .limits import DEFAULT_LIMITS, Limits
from .ops.base import OPS, InitText
from .source import DataPath, Source
from .tensor import DTYPES

__all__ = ["BlockSpec", "ImportSpec", "InputSpec", "SignatureSpec", "Spec", "check_identifier", "validation_diagnostics"]

# Attributes of torch.nn.Module: a submodule of that name cannot be registered, so no node may
# take one. Kept here as data so that builder never imports torch.
_MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile",
    "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer",
    "get_extra_state", "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia",
    "named_buffers", "named_children", "named_modules", "named_parameters", "parameters",
    "register_backward_hook", "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_", "set_extra_state",
    "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train", "training", "type", "xpu",
    "zero_grad",
})


def check_identifier(name: str) -> str:
    """A node, input, output, param or block name: an identifier, not a keyword or module attribute."""
    if not name.isidentifier() or not name.isascii():
        raise ValueError(f"'{name}' is not a valid name (letters, digits and _, not starting with a digit)")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ValueError(f"'{name}' is a Python keyword and cannot name anything")
    if name in _MODULE_ATTRIBUTES or name.startswith("__"):
        raise ValueError(f"'{name}' is reserved (an attribute of torch.nn.Module)")
    return name


Name = Annotated[str, AfterValidator(check_identifier)]
Dim = Annotated[str, AfterValidator(check_identifier)]


MAX_RANK = 64
"""The most dimensions a tensor may have (numpy's and PyTorch's limit)."""
MAX_SIZE = 2**63 - 1
"""The largest size of one dimension (ONNX and PyTorch hold sizes as int64)."""


def _not_bool(value: Any) -> Any:
    """A size must be a number: ``true`` would otherwise pass as 1."""
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is not a number; a size is an integer or a name")
    return value
"""A symbolic size (``batch``, ``seq``); fixed sizes are integers >= 1."""
Scalar = bool | int | float | str


def _block_name(name: str) -> str:
    """A block's name: a name, or ``namespace.name`` for a block imported with a namespace."""
    for part in name.split(".", 1):
        check_identifier(part)
    return name


BlockName = Annotated[str, AfterValidator(_block_name)]


def _known_op(name: str) -> str:
    if name not in OPS:
        hints = "".join(f"; {h}" for h in did_you_mean(name, OPS))
        raise ValueError(f"unknown op '{name}'{hints} (`nnspec ops` lists them)")
    return name


OpName = Annotated[str, AfterValidator(_known_op)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Model):
    """A graph input: its shape (fixed sizes and named symbolic sizes) and dtype."""

    shape: list[Annotated[int, BeforeValidator(_not_bool), Field(ge=1, le=MAX_SIZE)] | Dim] = Field(
        max_length=MAX_RANK, description="Sizes: integers, or names such as batch and seq that stay symbolic.")
    dtype: str = Field(default="float32", json_schema_extra={"enum": list(DTYPES)})
    doc: str | None = None

    def model_post_init(self, _: Any) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype '{self.dtype}' (known: {', '.join(DTYPES)})")


class BlockSpec(_Model):
    """A reusable sub-graph, called from a node as ``op: <block name>``."""

    doc: str | None = None
    params: dict[Name, Scalar | None] = Field(
        default_factory=dict, description="The block's params and their defaults; null marks a required one.")
    inputs: list[Name] = Field(min_length=1, description="Input names; the first is chained by repeat.")
    nodes: dict[Name, dict[str, Any]] = Field(min_length=1)
    outputs: dict[Name, str] = Field(min_length=1, description="Output name to ref; the first is chained by repeat.")
    checkpoint: bool = Field(
        default=False, description="Recompute the activations of this block's calls in backward instead of keeping "
        "them (activation checkpointing in PyTorch; ONNX and diagrams are unaffected).")


class SignatureSpec(_Model):
    """Another entry point over the same weights: nodes with an id from the main graph are that layer.

    A signature node with no ``op`` takes the main node's op and arguments and may re-wire
    its ``in``; one with an ``op`` replaces it. Main-graph nodes that the signature's
    outputs do not need are left out.
    """

    doc: str | None = None
    inputs: dict[Name, InputSpec] = Field(min_length=1)
    nodes: dict[Name, dict[str, Any]] = Field(default_factory=dict)
    outputs: dict[Name, str] = Field(min_length=1)


class ImportSpec(_Model):
    """A block library imported under a namespace: its blocks are called as ``<as>.<name>``."""

    path: str = Field(description="The file, relative to the importing one (and inside the top-level spec's directory).")
    as_: Name | None = Field(default=None, alias="as", description="The namespace its blocks are called under.")


class Spec(_Model):
    """A model spec: params, inputs, nodes, outputs, and optionally blocks and signatures."""

    name: Name
    doc: str | None = None
    params: dict[Name, Scalar] = Field(default_factory=dict, description="Named values, overridable with --set.")
    inputs: dict[Name, InputSpec] = Field(min_length=1)
    nodes: dict[Name, dict[str, Any]] = Field(min_length=1)
    outputs: dict[Name, str] = Field(min_length=1, description="Output name to the node (or node.port) it returns.")
    imports: list[str | ImportSpec] = Field(
        default_factory=list, description="Spec files whose blocks become available here (see `nnspec.builder.imports`).")
    blocks: dict[BlockName, BlockSpec] = Field(default_factory=dict)
    signatures: dict[Name, SignatureSpec] = Field(default_factory=dict)
    init: dict[OpName, dict[str, InitText]] = Field(
        default_factory=dict, description="Initialisers for every node of an op, by weight (a node's own init: wins): "
        "{linear: {weight: normal(std=0.02), bias: zeros}}.")

    _source: Source = PrivateAttr(default_factory=Source)
    _resolved: dict[str, Any] = PrivateAttr(default_factory=dict)
    _limits: Limits = PrivateAttr(default_factory=lambda: DEFAULT_LIMITS)  # a default is deep-copied per spec

    @property
    def source(self) -> Source:
        # Not `self._source`: pydantic finds a private attribute only after two AttributeErrors (microseconds).
        return self.__pydantic_private__["_source"]  # type: ignore[no-any-return,index]

    @property
    def resolved_params(self) -> dict[str, Any]:
        """Params after overrides and ``${...}`` evaluation."""
        return dict(self.__pydantic_private__["_resolved"])  # type: ignore[index]


_MODEL_TYPE = re.compile(r"a valid dictionary or instance of \w+")
_CODES = {
    "extra_forbidden": "unknown-key",
    "missing": "missing-key",
    "literal_error": "bad-value",
    "union_tag_invalid": "unknown-op",
}


def _data_path(loc: Sequence[str | int], data: Any, missing: bool = False) -> DataPath:
    """The part of a pydantic error location that names real keys of `data` (skips union tags such as
    ``list[int]``); a `missing` key ends the path, so that the error points at its mapping but names it."""
    path: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        found = (isinstance(cur, dict) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur))
        if found:
            cur = cur[part]
            path.append(part)
        elif missing and i == len(loc) - 1 and isinstance(cur, dict):
            path.append(part)
    return tuple(path)


_TYPE_WORDS = {
    "bool_type": "true/false", "bool_parsing": "true/false", "int_type": "an integer", "int_parsing": "an integer",
    "float_type": "a number", "float_parsing": "a number", "string_type": "text", "list_type": "a list",
    "tuple_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
}
"""Pydantic's type errors, as the words of a message for a value that matches no member of a union."""


def _per_value(errors: list[tuple[DataPath, ErrorDetails]]) -> dict[DataPath, list[ErrorDetails]]:
    """Group errors by value. A union reports one error per member: where one member matched and
    failed deeper inside the value (``in: [x, 5]``), only its errors are kept."""
    inner = {path[:i] for path, _ in errors for i in range(len(path))}  # values that hold another error
    out: dict[DataPath, list[ErrorDetails]] = {}
    for path, err in errors:
        if path not in inner:
            out.setdefault(path, []).append(err)
    return out


INFERRED_KEYS = frozenset({"in_channels", "in_features", "input_size", "num_features", "normalized_shape",
                           "embed_dim", "in_dim", "input_dim", "d_in", "kdim", "vdim", "num_channels"})
"""PyTorch's names for the input sizes of layers, which a spec never writes: a node that gives one
is told so, instead of being offered a similar key (``in_channels`` is not ``out_channels``)."""


def validation_diagnostics(exc: ValidationError, data: Any, source: Source, base: DataPath = (),
                           node: str | None = None, model: type[BaseModel] | None = None) -> list[Diagnostic]:
    """Turn a pydantic error into one diagnostic per offending value, positioned in the source."""
    out: list[Diagnostic] = []
    located = [(_data_path(e["loc"], data, missing=e["type"] == "missing"), e) for e in exc.errors(include_url=False)]
    for path, errs in _per_value(located).items():
        # A value error of the union member whose type matched says more than the others' type errors.
        err = next((e for e in errs if e["type"] not in _TYPE_WORDS), errs[0])
        kind = err["type"]
        code = _CODES.get(kind, "bad-arg" if node else "bad-value")
        field = ".".join(str(p) for p in path) or "spec"
        hints: tuple[str, ...] = ()
        if kind == "extra_forbidden":
            key = str(path[-1])
            known = _known_keys(model, path[:-1], data)
            msg = f"unknown key '{key}'"
            if key in INFERRED_KEYS and node:
                msg = f"unknown key '{key}': input sizes are inferred from the shapes, never written"
                hints = (f"remove '{key}'; nnspec reads it from the input's shape",)
            elif known:
                hints = (*did_you_mean(key, known), f"known keys here: {', '.join(known)}")
        elif kind == "missing":
            msg = f"missing required key '{err['loc'][-1]}'"
        else:
            text = err["msg"][0].lower() + err["msg"][1:]
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            wanted = [_TYPE_WORDS.get(e["type"]) for e in errs]
            if kind == "value_error":
                msg = f"{field}: {err['msg'].removeprefix('Value error, ')}"
            elif len(errs) > 1 and None not in wanted:
                words = list(dict.fromkeys(str(w) for w in wanted))
                msg = f"{field}: expected {', '.join(words[:-1])} or {words[-1]}, got {shown}"
            else:
                msg = f"{field}: {_MODEL_TYPE.sub('a mapping', text)}, got {shown}"
        pos = source.pos((*base, *path))
        out.append(Diagnostic(code, msg, pos, node, hints))
    return out


def _known_keys(model: type[BaseModel] | None, path: DataPath, data: Any) -> list[str]:
    """Field names of the model that `path` (within a validated mapping) lands in."""
    if model is None:
        return []
    cur: Any = model
    for part in path:
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            field = cur.model_fields.get(str(part))
            cur = field.annotation if field else None
            continue
        args = getattr(cur, "__args__", ())  # dict[K, V] / list[V] / Optional
        cur = next((a for a in reversed(args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if cur is None:
            return []
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return [f.alias or k for k, f in cur.model_fields.items()]
    args = getattr(cur, "__args__", ())
    sub = next((a for a in reversed(args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return [f.alias or k for k, f in sub.model_fields.items()] if sub else []
