"""References for elementwise arithmetic, reductions, and tensor construction and indexing.

`REFERENCES` (for tests/test_torch_ops.py) computes each op independently of the lowering: a
formula in float64 or NumPy's own function (np.tile, np.take_along_axis). `semantics` (for
tests/test_onnx_ops.py) is the op's PyTorch definition, on the op's validated model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Ref = Callable[[torch.nn.Module, dict[str, Any], dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _y(fn: Callable[[dict[str, torch.Tensor], dict[str, Any], torch.nn.Module], torch.Tensor]) -> Ref:
    return lambda m, a, x: {"y": fn(x, a, m)}


def _operands(x: dict[str, torch.Tensor], a: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | float]:
    first = x["a"].double()
    return first, (x["b"].double() if "b" in x else float(a["value"]))


def _binary(fn: Callable[[torch.Tensor, Any], torch.Tensor]) -> Ref:
    return _y(lambda x, a, m: fn(*_operands(x, a)))


def _pick(a: torch.Tensor, b: torch.Tensor | float, smaller: bool) -> torch.Tensor:
    b = torch.as_tensor(b, dtype=torch.float64)
    return torch.where((a < b) if smaller else (a > b), a, b)


def _dims(a: dict[str, Any]) -> list[int]:
    return [a["dim"]] if isinstance(a["dim"], int) else list(a["dim"])


def _reduce(kind: str) -> Ref:
    """Sum, max or min over dims, from NumPy on float64."""
    def ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fn = {"sum": np.sum, "max": np.max, "min": np.min}[kind]
        t = x["x"].double().numpy()
        return {"y": torch.from_numpy(np.asarray(fn(t, axis=tuple(_dims(a)), keepdims=a.get("keepdim", False))))}

    return ref


def _masked_fill(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    t = x["x"].double().numpy().copy()
    t[np.broadcast_to(x["mask"].numpy(), t.shape)] = a["value"]
    return {"y": torch.from_numpy(t)}


def _squeeze(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    t = x["x"]
    axes = {d % t.dim() for d in _dims(a)}
    return {"y": t.reshape([s for i, s in enumerate(t.shape) if i not in axes])}


def _unsqueeze(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    t = x["x"]
    shape = list(t.shape)
    shape.insert(a["dim"] % (t.dim() + 1), 1)
    return {"y": t.reshape(shape)}


def _expand(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    t = x["x"].double()
    new = len(a["shape"]) - t.dim()
    shape = [t.shape[i - new] if s == -1 else s for i, s in enumerate(a["shape"])]
    return {"y": t * torch.ones(shape, dtype=torch.float64)}  # broadcasting by arithmetic


def _tile(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"y": torch.from_numpy(np.tile(x["x"].numpy(), a["repeats"]))}


def _stack(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    parts = [x[p] for p in sorted(x, key=int)]
    dim = a.get("dim", 0) % (parts[0].dim() + 1)
    return {"y": torch.cat([p.unsqueeze(dim) for p in parts], dim)}


def _gather(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    t, index = x["x"].numpy(), x["index"].numpy()
    t = t[tuple(slice(0, n) if i != a["dim"] % t.ndim else slice(None) for i, n in enumerate(index.shape))]
    return {"y": torch.from_numpy(np.take_along_axis(t, index, a["dim"]))}


def _constant(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    fill = a["fill"]
    if fill == "arange":
        return {"y": torch.from_numpy(np.arange(a.get("start", 0), a["end"], a.get("step", 1), dtype=np.float64))}
    value = {"zeros": 0.0, "ones": 1.0}.get(fill, a.get("value"))
    return {"y": torch.from_numpy(np.full(a["shape"], value, dtype=np.float64))}


REFERENCES: dict[str, Ref] = {
    "sub": _binary(lambda p, q: p - q),
    "div": _binary(lambda p, q: p / q),
    "pow": _binary(lambda p, q: torch.exp(torch.log(p) * q) if isinstance(q, torch.Tensor) else p ** q),
    "minimum": _binary(lambda p, q: _pick(p, q, smaller=True)),
    "maximum": _binary(lambda p, q: _pick(p, q, smaller=False)),
    "sqrt": _y(lambda x, a, m: x["x"].double() ** 0.5),
    "rsqrt": _y(lambda x, a, m: 1 / x["x"].double() ** 0.5),
    "exp": _y(lambda x, a, m: np.e ** x["x"].double()),
    "log": _y(lambda x, a, m: torch.from_numpy(np.log(x["x"].double().numpy()))),
    "neg": _y(lambda x, a, m: 0 - x["x"]),
    "abs": _y(lambda x, a, m: x["x"] * torch.sign(x["x"])),
    "where": _y(lambda x, a, m: x["condition"].double() * x["x"].double()
                + (1 - x["condition"].double()) * x["y"].double()),
    "masked_fill": _masked_fill,
    "sum": _reduce("sum"),
    "max": _reduce("max"),
    "min": _reduce("min"),
    "squeeze": _squeeze,
    "unsqueeze": _unsqueeze,
    "expand": _expand,
    "repeat": _tile,
    "tile": _tile,
    "stack": _stack,
    "gather": _gather,
    "index_select": _y(lambda x, a, m: torch.from_numpy(np.take(x["x"].numpy(), x["index"].numpy(), a["dim"]))),
    "constant": _constant,
    "parameter": _y(lambda x, a, m: m.get_submodule("n").weight),
}


def semantics(m: Any, x: dict[str, Any], w: dict[str, Any]) -> dict[str, Any] | None:
    """The op's PyTorch definition on inputs `x` (by port) and weights `w`; None for ops of other families."""
    op = m.op
    if op in ("sub", "div", "pow", "minimum", "maximum"):
        fn = {"sub": torch.sub, "div": torch.div, "pow": torch.pow, "minimum": torch.minimum,
              "maximum": torch.maximum}[op]
        other = x["b"] if "b" in x else torch.tensor(m.value, dtype=x["a"].dtype)
        return {"y": fn(x["a"], other)}
    unary = {"sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "exp": torch.exp, "log": torch.log, "neg": torch.neg,
             "abs": torch.abs}
    if op in unary:
        return {"y": unary[op](x["x"])}
    dims = getattr(m, "dim", None)
    simple: dict[str, Callable[[], Any]] = {
        "where": lambda: torch.where(x["condition"], x["x"], x["y"]),
        "masked_fill": lambda: x["x"].masked_fill(x["mask"], m.value),
        "sum": lambda: torch.sum(x["x"], dims if isinstance(dims, int) else tuple(dims or ()), keepdim=m.keepdim),
        "max": lambda: torch.amax(x["x"], dims, keepdim=m.keepdim),
        "min": lambda: torch.amin(x["x"], dims, keepdim=m.keepdim),
        "squeeze": lambda: x["x"].squeeze(dims if isinstance(dims, int) else tuple(dims or ())),
        "unsqueeze": lambda: x["x"].unsqueeze(dims),
        "expand": lambda: x["x"].expand(*m.shape),
        "repeat": lambda: x["x"].repeat(*m.repeats),
        "tile": lambda: torch.tile(x["x"], tuple(m.repeats)),
        "stack": lambda: torch.stack([x[p] for p in sorted(x, key=int)], dims),
        "gather": lambda: torch.gather(x["x"], dims, x["index"]),
        "index_select": lambda: torch.index_select(x["x"], dims, x["index"]),
        "parameter": lambda: w["weight"],
    }
    if op in simple:
        return {"y": simple[op]()}
    if op == "constant":
        dtype = getattr(torch, m.out_dtype())
        if m.fill == "arange":
            return {"y": torch.arange(m.start, m.end, m.step, dtype=dtype)}
        if m.fill == "full":
            return {"y": torch.full(m.shape, m.value, dtype=dtype)}
        return {"y": (torch.zeros if m.fill == "zeros" else torch.ones)(m.shape, dtype=dtype)}
    return None
