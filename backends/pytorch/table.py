"""The lowering table: op name to the function that lowers a node of that op.

Registration is explicit (``@TABLE.register("linear")``); registering an op that `builder.OPS`
does not know, or one that is already registered, fails at import with a did-you-mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from builder.errors import did_you_mean

__all__ = ["LoweringTable"]

F = TypeVar("F", bound=Callable[..., object])


class LoweringTable(Generic[F]):
    """A table of lowering functions keyed by op name, checked against the op registry.

    Args:
        known: the op names that may be registered (normally ``builder.OPS``).
        backend: the backend's name, used in messages.
    """

    def __init__(self, known: Iterable[str], backend: str) -> None:
        self._known = frozenset(known)
        self._backend = backend
        self._fns: dict[str, F] = {}

    def register(self, op: str) -> Callable[[F], F]:
        """Decorator: register the decorated function as the lowering of `op`.

        Raises:
            ValueError: `op` is not a known op, or it already has a lowering.
        """
        if op not in self._known:
            hints = "".join(f"; {h}" for h in did_you_mean(op, self._known))
            raise ValueError(f"{self._backend} lowering for unknown op '{op}'{hints}")
        if op in self._fns:
            raise ValueError(f"op '{op}' has two {self._backend} lowerings")

        def add(fn: F) -> F:
            self._fns[op] = fn
            return fn

        return add

    def __getitem__(self, op: str) -> F:
        try:
            return self._fns[op]
        except KeyError:
            hints = "".join(f"; {h}" for h in did_you_mean(op, self._fns))
            raise KeyError(f"op '{op}' has no {self._backend} lowering{hints}") from None

    def __contains__(self, op: object) -> bool:
        return op in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._fns))

    def __len__(self) -> int:
        return len(self._fns)

    def missing(self) -> list[str]:
        """Known ops without a lowering, sorted."""
        return sorted(self._known - self._fns.keys())

    def unknown(self, ops: Iterable[str]) -> list[str]:
        """Registered ops that are not in `ops` (the registry may have lost one since import)."""
        current = set(ops)
        return sorted(op for op in self._fns if op not in current)
