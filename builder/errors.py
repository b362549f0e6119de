"""Diagnostics: every problem in a spec is a `Diagnostic` naming file, line, column and node.

A diagnostic renders as one header line plus optional hint lines::

    specs/lenet5.yaml:12:3: error[unknown-op]: node 'c3': unknown op 'conv3d'
      hint: did you mean 'conv2d'?

Independent problems are collected and raised together as `SpecError`, so an author can
fix a spec in one pass.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from .text import printable

__all__ = ["Diagnostic", "SourcePos", "SpecError", "did_you_mean"]


@dataclass(frozen=True, order=True)
class SourcePos:
    """A position in a spec file; line and column are 1-based (0 means unknown)."""

    file: str = "<spec>"
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec.

    Attributes:
        code: stable machine-readable class, e.g. ``unknown-op`` or ``shape-mismatch``.
        message: what was expected and what arrived.
        pos: where in the source the problem is.
        node: the node id the problem belongs to, when there is one.
        hints: extra lines, e.g. a did-you-mean suggestion.
        severity: ``error`` stops compilation; ``warning`` does not.
    """

    code: str
    message: str
    pos: SourcePos = SourcePos()
    node: str | None = None
    hints: tuple[str, ...] = ()
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"node '{self.node}': " if self.node else ""
        head = printable(f"{self.pos}: {self.severity}[{self.code}]: {where}{self.message}")
        return "\n".join([head, *(f"  hint: {printable(h)}" for h in self.hints)])

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": self.pos.file,
            "line": self.pos.line,
            "col": self.pos.col,
            "node": self.node,
            "hints": list(self.hints),
        }


@dataclass
class SpecError(Exception):
    """One or more errors that make a spec unusable (warnings may ride along)."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)

    @classmethod
    def single(cls, code: str, message: str, pos: SourcePos = SourcePos(), node: str | None = None,
               hints: Iterable[str] = ()) -> SpecError:
        return cls([Diagnostic(code, message, pos, node, tuple(hints))])


_MANY = 500
"""Above this many choices, a hint compares only those of about the word's length (difflib costs
tens of microseconds per comparison, and a spec may hold thousands of names)."""

OP_ALIASES: dict[str, tuple[str, ...]] = {
    # activations
    "swish": ("silu",), "sigmoidlinearunit": ("silu",), "hswish": ("hardswish",), "hardswish": ("hardswish",),
    "hsigmoid": ("hardsigmoid",), "lrelu": ("leaky_relu",), "leakyrelu": ("leaky_relu",), "relu6": ("relu6",),
    "gelunew": ("gelu",), "gelutanh": ("gelu",), "logsoftmax": ("log_softmax",), "clip": ("clamp",),
    # convolution and resampling
    "deconv": ("conv_transpose2d", "conv_transpose1d"), "convtranspose": ("conv_transpose2d", "conv_transpose1d"),
    "transposedconv": ("conv_transpose2d", "conv_transpose1d"), "transposeconv": ("conv_transpose2d", "conv_transpose1d"),
    "interpolate": ("upsample",), "interp": ("upsample",), "resize": ("upsample",), "upsampling": ("upsample",),
    "upsamplenearest": ("upsample",), "upsamplebilinear": ("upsample",), "pixelshuffle": ("pixel_shuffle",),
    "avgpool": ("avg_pool2d", "avg_pool1d"), "maxpool": ("max_pool2d", "max_pool1d"),
    "globalavgpool": ("adaptive_avg_pool2d", "global_avg_pool2d", "mean"), "gap": ("adaptive_avg_pool2d", "mean"),
    "adaptiveavgpool": ("adaptive_avg_pool2d", "adaptive_avg_pool1d"),
    # normalisation
    "rmsnorm": ("rms_norm",), "groupnorm": ("group_norm",), "instancenorm": ("instance_norm",),
    "layernorm": ("layer_norm",), "ln": ("layer_norm",), "batchnorm": ("batch_norm",), "bn": ("batch_norm",),
    # layers and attention
    "dense": ("linear",), "fc": ("linear",), "fullyconnected": ("linear",), "embed": ("embedding",),
    "mha": ("multi_head_attention",), "multiheadattention": ("multi_head_attention",),
    "selfattention": ("multi_head_attention",), "sdpa": ("attention",), "scaleddotproductattention": ("attention",),
    "positionalembedding": ("position_embedding",), "posembedding": ("position_embedding",),
    "positionalencoding": ("sinusoidal_position",), "sinusoidal": ("sinusoidal_position",),
    # tensor construction and shaping
    "tile": ("repeat",), "zeros": ("constant",), "ones": ("constant",), "full": ("constant",),
    "arange": ("arange", "constant"), "fill": ("constant",), "cat": ("concat",), "concatenate": ("concat",),
    "view": ("reshape",), "expanddims": ("unsqueeze",), "swapaxes": ("transpose",),
}
"""Names other libraries give our ops (keys without ``_``, lower case), each to the ops it may mean,
best first. Only ops in the choices at the time are suggested, so the table may name ops that are
not registered (yet)."""

OP_FAMILY_WORDS: dict[str, tuple[str, ...]] = {
    "conv": ("conv",), "pool": ("pool",), "norm": ("norm",), "relu": ("relu", "elu", "gelu", "silu"),
    "sigmoid": ("sigmoid",), "softmax": ("softmax",), "attn": ("attention",),
    "attention": ("attention",), "lstm": ("lstm", "gru", "rnn"), "gru": ("lstm", "gru", "rnn"),
    "rnn": ("lstm", "gru", "rnn"), "embed": ("embedding", "position"), "position": ("position",),
    "sample": ("upsample", "pool"), "drop": ("dropout",), "pad": ("pad",),
}
"""A word in an unknown name to the words of the op names in its family (``myconv`` -> the conv ops)."""

_DIM_SUFFIXES = ("1d", "2d", "3d")
_FAMILY_SHOWN = 6


def _key(name: str) -> str:
    """A name as an alias-table key: lower case, without ``_``, ``-`` or spaces."""
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def _by_alias(word: str, names: set[str], near: set[str]) -> tuple[bool, str | None]:
    """Whether `word` is a known spelling, and the choice it names (``swish`` -> ``silu``), if any;
    the same name spelt differently is looked for among `near` (the names of about its length)."""
    key = _key(word)
    same = [n for n in near if _key(n) == key]  # LayerNorm, relu_6, Conv2D
    if same:
        return True, min(same)
    suffix = next((s for s in _DIM_SUFFIXES if key.endswith(s)), "")
    targets = OP_ALIASES.get(key) or OP_ALIASES.get(key.removesuffix(suffix) if suffix else key) or ()
    ranked = sorted(targets, key=lambda t: not (suffix and t.endswith(suffix)))  # stable: the table's order after
    return bool(targets), next((t for t in ranked if t in names), None)


def _family(word: str, names: set[str], best: str | None) -> tuple[str, ...]:
    """Choices of the family a word in `word` points to (``deconv3d`` -> every conv op)."""
    key = word.lower()
    words = next((w for k, w in OP_FAMILY_WORDS.items() if k in key), None)
    if words is None:
        return ()
    return tuple(sorted(n for n in names if n != best and any(w in n for w in words)))[:_FAMILY_SHOWN]


def did_you_mean(word: str, choices: Iterable[str]) -> tuple[str, ...]:
    """Hints naming what `word` probably meant among `choices`, or nothing when nothing is close.

    Asks, in order: the same name spelt differently (``LayerNorm``, ``relu_6``), another library's
    name for it (`OP_ALIASES`: ``swish`` -> ``silu``), then difflib's closest spelling. A word of an
    op family (`OP_FAMILY_WORDS`: conv, pool, norm, ...) adds a line naming that family's choices.
    Only names in `choices` are ever suggested.
    """
    names = set(choices)
    near = {c for c in names if abs(len(c) - len(word)) <= 2} if len(names) > _MANY else names
    known, best = _by_alias(word, names, near)
    if known:  # a sure answer, or an op that is not registered: a spelling guess would mislead
        return (f"did you mean '{best}'?",) if best else ()
    close = difflib.get_close_matches(word, sorted(near)[:_MANY], n=1, cutoff=0.5)
    best = close[0] if close else None
    hints = [f"did you mean '{best}'?"] if best else []
    family = _family(word, names, best) if len(names) <= _MANY else ()  # an op registry, not a huge spec's ids
    if family:
        hints.append(f"{'related' if best else 'did you mean one of'}: {', '.join(family)}")
    return tuple(hints)
