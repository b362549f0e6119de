"""Weight initialisers that a spec can ask for (``init: {weight: normal(std=0.02)}``).

The names and arguments are torch.nn.init's, without the trailing underscore, so that a spec
reads like the PyTorch code it replaces. Text is parsed here (a call of literals, never
evaluated); each backend draws the numbers its own way.
"""

from __future__ import annotations

import ast
import math
from functools import lru_cache
from typing import NamedTuple

from .errors import did_you_mean

__all__ = ["INITIALISERS", "NEEDS_2D", "NONLINEARITIES", "Distribution", "Init", "distribution", "fans", "gain",
           "parse_init"]

Arg = float | str

INITIALISERS: dict[str, dict[str, Arg | None]] = {
    "zeros": {},
    "ones": {},
    "constant": {"val": None},
    "uniform": {"a": 0.0, "b": 1.0},
    "normal": {"mean": 0.0, "std": 1.0},
    "trunc_normal": {"mean": 0.0, "std": 1.0, "a": -2.0, "b": 2.0},
    "xavier_uniform": {"gain": 1.0},
    "xavier_normal": {"gain": 1.0},
    "kaiming_uniform": {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"},
    "kaiming_normal": {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"},
    "orthogonal": {"gain": 1.0},
}
"""torch.nn.init functions by name (no trailing underscore): their arguments and defaults (None: required)."""

NEEDS_2D = frozenset({"xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"})
"""Initialisers that read fan-in and fan-out, so they need a weight of rank 2 or more."""

NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu")
"""torch.nn.init.calculate_gain's nonlinearities."""


class Init(NamedTuple):
    """One initialiser call with every argument filled in.

    Attributes:
        fn: the torch.nn.init name without its underscore (``normal``).
        args: keyword arguments in torch.nn.init's order, defaults included.
    """

    fn: str
    args: tuple[tuple[str, Arg], ...] = ()

    @property
    def kwargs(self) -> dict[str, Arg]:
        return dict(self.args)

    def __str__(self) -> str:
        return f"{self.fn}({', '.join(f'{k}={v!r}' for k, v in self.args)})" if self.args else self.fn


@lru_cache(maxsize=1024)
def parse_init(text: str) -> Init:
    """Parse ``normal(std=0.02)``, ``zeros``, ``uniform(-0.1, 0.1)``, ``kaiming_normal(mode='fan_out')``.

    Raises:
        ValueError: not a call of a known initialiser with literal arguments that fit it.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError(f"'{text}' is not an initialiser call such as normal(std=0.02)") from None
    call = tree if isinstance(tree, ast.Call) else None
    func = call.func if call is not None else tree
    if not isinstance(func, ast.Name):
        raise ValueError(f"'{text}' is not an initialiser call such as normal(std=0.02)")
    name = func.id.removesuffix("_")
    if name not in INITIALISERS:
        hints = "".join(f"; {h}" for h in did_you_mean(name, INITIALISERS))
        raise ValueError(f"unknown initialiser '{func.id}'{hints} (known: {', '.join(INITIALISERS)})")
    spec = INITIALISERS[name]
    given: dict[str, Arg] = {}
    positional = call.args if call is not None else []
    if len(positional) > len(spec):
        raise ValueError(f"{name}() takes at most {len(spec)} argument(s), got {len(positional)}")
    for key, node in zip(spec, positional, strict=False):
        given[key] = _literal(node, name, key)
    for kw in call.keywords if call is not None else []:
        if kw.arg is None or kw.arg not in spec:
            hints = "".join(f"; {h}" for h in did_you_mean(kw.arg or "**", spec))
            raise ValueError(f"{name}() has no argument '{kw.arg}'{hints} (arguments: {', '.join(spec) or 'none'})")
        if kw.arg in given:
            raise ValueError(f"{name}() got argument '{kw.arg}' twice")
        given[kw.arg] = _literal(kw.value, name, kw.arg)
    args: dict[str, Arg] = {}
    for key, default in spec.items():
        value = given.get(key, default)
        if value is None:
            raise ValueError(f"{name}() needs argument '{key}'")
        args[key] = value
    _check(name, args)
    return Init(name, tuple(args.items()))


def _literal(node: ast.expr, fn: str, key: str) -> Arg:
    """A number (a leading minus allowed) or, for mode and nonlinearity, a name or quoted text."""
    want_text = key in ("mode", "nonlinearity")
    if want_text and isinstance(node, ast.Name):
        return node.id
    sign = 1.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        node = node.operand
    if isinstance(node, ast.Constant):
        value = node.value
        if want_text and isinstance(value, str) and sign == 1.0:
            return value
        if not want_text and isinstance(value, int | float) and not isinstance(value, bool):
            result = sign * float(value)
            if result != result or result in (float("inf"), float("-inf")):
                raise ValueError(f"{fn}(): argument '{key}' must be finite")
            return result
    wanted = "a name such as fan_in or relu" if want_text else "a number"
    raise ValueError(f"{fn}(): argument '{key}' must be {wanted}, got '{ast.unparse(node)}'")


def _check(fn: str, args: dict[str, Arg]) -> None:
    """The argument ranges torch.nn.init would reject later, or silently misuse."""
    for key in ("std", "gain"):
        if key in args and float(args[key]) < 0:
            raise ValueError(f"{fn}(): {key} must be >= 0, got {args[key]}")
    if fn in ("uniform", "trunc_normal") and not float(args["a"]) < float(args["b"]):
        raise ValueError(f"{fn}(): a must be below b, got a={args['a']}, b={args['b']}")
    if "mode" in args and args["mode"] not in ("fan_in", "fan_out"):
        raise ValueError(f"{fn}(): mode must be fan_in or fan_out, got '{args['mode']}'")
    if "nonlinearity" in args and args["nonlinearity"] not in NONLINEARITIES:
        hints = "".join(f"; {h}" for h in did_you_mean(str(args["nonlinearity"]), NONLINEARITIES))
        raise ValueError(f"{fn}(): unknown nonlinearity '{args['nonlinearity']}'{hints}")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) as torch.nn.init computes them: dims 1 and 0 times the receptive field."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def gain(nonlinearity: str, param: float | None = None) -> float:
    """torch.nn.init.calculate_gain."""
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    return 1.0


class Distribution(NamedTuple):
    """What an initialiser draws for a tensor of a given shape, for backends that draw it themselves.

    Attributes:
        kind: ``constant`` (value `a`), ``uniform`` on [a, b], ``normal`` (mean a, std b),
            ``trunc_normal`` (mean, std, and the cut-offs low, high) or ``orthogonal`` (gain a).
    """

    kind: str
    a: float = 0.0
    b: float = 0.0
    low: float = 0.0
    high: float = 0.0


def distribution(init: Init, shape: tuple[int, ...]) -> Distribution:
    """The distribution torch.nn.init draws from for `init` on a tensor of `shape`."""
    kw = init.kwargs
    fn = init.fn
    if fn in ("zeros", "ones", "constant"):
        return Distribution("constant", {"zeros": 0.0, "ones": 1.0}.get(fn, float(kw.get("val", 0.0))))
    if fn == "uniform":
        return Distribution("uniform", float(kw["a"]), float(kw["b"]))
    if fn == "normal":
        return Distribution("normal", float(kw["mean"]), float(kw["std"]))
    if fn == "trunc_normal":
        return Distribution("trunc_normal", float(kw["mean"]), float(kw["std"]), float(kw["a"]), float(kw["b"]))
    if fn == "orthogonal":
        return Distribution("orthogonal", float(kw["gain"]))
    fan_in, fan_out = fans(shape)
    if fn.startswith("xavier"):
        std = float(kw["gain"]) * math.sqrt(2.0 / (fan_in + fan_out))
    else:  # kaiming
        std = gain(str(kw["nonlinearity"]), float(kw["a"])) / math.sqrt(fan_in if kw["mode"] == "fan_in" else fan_out)
    if fn.endswith("uniform"):
        bound = math.sqrt(3.0) * std
        return Distribution("uniform", -bound, bound)
    return Distribution("normal", 0.0, std)
