"""The `Op` base class: one pydantic model per op, carrying its arguments, ports, shape
rule, weight shapes and doc, plus the registry every backend is checked against."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, ClassVar, get_args

import sympy
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, field_validator

from ..errors import did_you_mean
from ..initialisers import Init, parse_init
from ..tensor import ShapeError, TensorType, fmt_dim, same_dim

__all__ = [
    "FAMILIES", "OPS", "PLUGIN_OF", "VARIADIC", "InitText", "Int2", "IntN", "Op", "Ref", "RegistryError", "WeightShapes",
    "broadcast", "conv_len", "expect_float", "expect_rank", "last_dim", "numel", "pair", "register", "registering_for",
    "unregister",
]

Ref = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)?$")]
"""A tensor reference: ``node`` (its first output) or ``node.port``."""
NodeInputs = Ref | list[Ref] | dict[str, Ref]
WeightShapes = dict[str, tuple[int, ...]]
Int2 = PositiveInt | Annotated[tuple[PositiveInt, PositiveInt], Field()]
IntN = PositiveInt | list[PositiveInt]


def _valid_init(text: str) -> str:
    parse_init(text)
    return text


InitText = Annotated[str, AfterValidator(_valid_init), Field(
    description="A torch.nn.init function and its arguments: normal(std=0.02), zeros, xavier_uniform(gain=1).")]
"""An initialiser call, checked (see `nnspec.builder.initialisers`)."""

VARIADIC = "*"
"""`Op.INPUTS` value for ops that take any number of positional inputs (ports 0, 1, ...)."""

FAMILIES = ("input", "conv", "pool", "linear", "embedding", "norm", "activation", "attention",
            "recurrent", "regularization", "tensor")

OPS: dict[str, type[Op]] = {}
"""Every op, by name: the one live registry. Backends, the schema, `nnspec ops` and the diagram
styles read it when they need it, never a copy taken at import, so that plugin ops count too."""

PLUGIN_OF: dict[str, str] = {}
"""The plugin that registered each plugin op, by op name (built-in ops are not here)."""

_LOADING: list[str] = []
"""The plugins being imported, innermost last: `register` credits new ops to the last one."""


class Op(BaseModel):
    """Base of every op model: a node of the spec, its arguments validated.

    Subclasses narrow `op` to a Literal, add typed argument fields, and implement `infer`
    (the shape rule) and, when the op has weights, `weights`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    op: str
    in_: NodeInputs | None = Field(default=None, alias="in", description="Input tensor(s): a ref, a list, or port: ref.")
    doc: str | None = Field(default=None, description="A note on this node, shown in diagrams.")
    tie: str | dict[str, str] | None = Field(
        default=None, description="Share weights with another node: 'node' ties `weight`, or {weight: node.weight}.")
    init: dict[str, InitText] | None = Field(
        default=None, description="Initialise weights other than PyTorch's way: {weight: normal(std=0.02), bias: zeros}.")

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic would read `out_features: true` as 1: a flag is accepted only where the op takes one.
        if not isinstance(value, bool):  # the common case, before the (slow) model_fields lookup
            return value
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and not _takes(field.annotation, bool):
            wanted = "a number" if _takes(field.annotation, int) or _takes(field.annotation, float) else "text"
            raise ValueError(f"expected {wanted}, got {str(value).lower()}")
        return value

    INPUTS: ClassVar[tuple[str, ...]] = ("x",)
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    MIN_INPUTS: ClassVar[int] = 1
    OUTPUTS: ClassVar[tuple[str, ...]] = ("y",)
    FAMILY: ClassVar[str] = "tensor"

    @classmethod
    def name(cls) -> str:
        return str(get_args(cls.model_fields["op"].annotation)[0])

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]

    @classmethod
    def arg_fields(cls) -> dict[str, Any]:
        return {k: f for k, f in cls.model_fields.items() if k not in Op.model_fields}

    def args(self) -> dict[str, Any]:
        """The op's own arguments (not op, in, doc, tie, init), all of them, defaults included."""
        return {k: getattr(self, k) for k in self.arg_fields()}

    def output_ports(self) -> tuple[str, ...]:
        return self.OUTPUTS

    def infer(self, ins: dict[str, TensorType]) -> dict[str, TensorType]:
        """The shape rule: input types by port to output types by port."""
        raise NotImplementedError(f"op '{self.op}' has no shape rule")

    def weights(self, ins: dict[str, TensorType]) -> WeightShapes:
        """Weight names (as in the PyTorch layer's state_dict) and concrete shapes."""
        return {}

    def buffers(self, ins: dict[str, TensorType]) -> WeightShapes:
        """Large fixed tensors a backend builds (not trained), so that their memory is checked too."""
        return {}

    def label(self) -> str:
        """Key arguments in a few characters, for diagrams (``6@5x5``, ``→ 84``)."""
        return ""

    def zero_rows(self) -> dict[str, int]:
        """Weight rows that stay zero however the weight is initialised, by weight name."""
        return {}

    def tied(self) -> dict[str, str]:
        """Tied weights: own weight name to ``node.weight`` of the node that owns it."""
        if self.tie is None:
            return {}
        if isinstance(self.tie, str):
            return {"weight": self.tie if "." in self.tie else f"{self.tie}.weight"}
        return dict(self.tie)

    def inits(self) -> dict[str, Init]:
        """The initialisers this node asks for, by weight name."""
        return {name: parse_init(text) for name, text in (self.init or {}).items()}


def _takes(annotation: Any, kind: type) -> bool:
    """Whether a field's type accepts `kind` (looking into unions, lists and Annotated)."""
    return annotation is kind or any(_takes(a, kind) for a in get_args(annotation))


class RegistryError(ValueError):
    """An op cannot be registered: its name is taken, or its declaration is incomplete."""


def register(cls: type[Op]) -> type[Op]:
    """Add an op class to `OPS` under the name in its `op` Literal; duplicates fail at import.

    Built-in ops and plugin ops register the same way (plugins call it as `nnspec.builder.register_op`);
    an op registered while a plugin is being imported is credited to that plugin.
    """
    name = cls.name()
    if name in OPS:
        old = OPS[name]
        raise RegistryError(f"op '{name}' is registered twice: by {_owner(name)} ({old.__module__}.{old.__qualname__}) "
                            f"and by {_owner(None)} ({cls.__module__}.{cls.__qualname__})")
    if cls.FAMILY not in FAMILIES:
        raise RegistryError(f"op '{name}': unknown family '{cls.FAMILY}'" + "".join(
            f"; {h}" for h in did_you_mean(cls.FAMILY, FAMILIES)) + f" (families: {', '.join(FAMILIES)})")
    if not cls.__doc__:
        raise RegistryError(f"op '{name}' needs a docstring")
    OPS[name] = cls
    if _LOADING:
        PLUGIN_OF[name] = _LOADING[-1]
    return cls


def _owner(op: str | None) -> str:
    """Who registers an op, in words: the built-in op set, or a plugin (`op` None: the caller)."""
    plugin = PLUGIN_OF.get(op) if op is not None else (_LOADING[-1] if _LOADING else None)
    return f"plugin '{plugin}'" if plugin else "nnspec's built-in ops"


def unregister(name: str) -> None:
    """Remove an op from the registry (a plugin that failed half-way through its registrations)."""
    OPS.pop(name, None)
    PLUGIN_OF.pop(name, None)


@contextlib.contextmanager
def registering_for(plugin: str) -> Iterator[None]:
    """Credit the ops registered inside the block to `plugin`."""
    _LOADING.append(plugin)
    try:
        yield
    finally:
        _LOADING.pop()


# --- helpers for shape rules -------------------------------------------------------------

def pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def expect_rank(t: TensorType, ranks: int | Sequence[int], port: str, what: str) -> None:
    allowed = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    if t.rank not in allowed:
        want = " or ".join(str(r) for r in allowed)
        raise ShapeError(f"expected a rank-{want} input ({what}), got rank {t.rank} [{t}]", port)


def expect_float(t: TensorType, port: str) -> None:
    if not t.dtype.startswith(("float", "bfloat")):
        raise ShapeError(f"expected a floating-point tensor, got {t.dtype}", port)


def last_dim(t: TensorType, port: str, what: str = "feature size") -> int:
    """The last dim, which must be a concrete size because a weight depends on it."""
    if not t.shape:
        raise ShapeError("expected at least one dimension, got a scalar", port)
    d = t.shape[-1]
    if not d.is_Integer:
        raise ShapeError(f"the {what} (last dim) must be a fixed size, got '{fmt_dim(d)}' in [{t}]", port)
    return int(d)


def conv_len(size: sympy.Expr, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> sympy.Expr:
    """Output length of a convolution or pooling window: floor((L + 2p - d(k-1) - 1)/s) + 1."""
    if size.is_Integer:  # in plain integers: each sympy operation takes microseconds
        n = int(size) + 2 * p - d * (k - 1) - 1
        out = (-(-n // s) if ceil else n // s) + 1
        if ceil and (out - 1) * s >= int(size) + p:
            out -= 1  # as PyTorch: the last window may not start in the right padding
        if n < 0 or out <= 0:
            raise ShapeError(f"window {k} (dilation {d}, padding {p}) does not fit an input of size {fmt_dim(size)}")
        return sympy.Integer(out)
    num = size + 2 * p - d * (k - 1) - 1
    return (sympy.ceiling(num / s) if ceil else sympy.floor(num / s)) + 1


def broadcast(types: Sequence[TensorType], ports: Sequence[str]) -> TensorType:
    """NumPy broadcasting of several inputs; the dtype of the first."""
    rank = max(t.rank for t in types)
    out: list[sympy.Expr] = []
    for i in range(rank):
        size: sympy.Expr = sympy.Integer(1)
        src = None
        for t, port in zip(types, ports, strict=True):
            j = i - (rank - t.rank)
            if j < 0 or t.shape[j] == 1:
                continue
            if size == 1:
                size, src = t.shape[j], port
            elif not same_dim(size, t.shape[j]):
                raise ShapeError(
                    f"cannot broadcast dim {i - rank} of size {fmt_dim(t.shape[j])} against "
                    f"{fmt_dim(size)} from input {src} (shapes: {', '.join(f'[{t}]' for t in types)})", port)
        out.append(size)
    return TensorType(tuple(out), types[0].dtype)


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape)

