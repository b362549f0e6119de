"""The lowering table every backend uses: op name to the function that lowers a node of that op.

Registration is explicit (``@TABLE.register("linear")``). Op names are checked against the live
registry, `builder.OPS`, when a lowering is registered and when one is looked up, never against a
copy taken at import: plugin ops registered later are as good as built-in ones. Registering an
unknown op or a second lowering fails with a did-you-mean; looking up an op that has none raises
`MissingLoweringError`, naming the op and the plugin it comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from nnspec.builder import OPS
from nnspec.builder.errors import did_you_mean
from nnspec.builder.plugins import import_lowerings, plugin_of

__all__ = ["BACKEND_NAMES", "LoweringError", "LoweringTable", "MissingLoweringError"]

F = TypeVar("F", bound=Callable[..., object])

BACKEND_NAMES = {"pytorch": "PyTorch", "onnx": "ONNX"}
"""How each backend is named in messages, by its key (the key plugins declare lowerings under)."""


class LoweringError(ValueError):
    """A checked spec that a backend cannot express as written; the message names the node (and,
    where there is one, the fix). A bad input, not a bug: the CLI reports it with exit status 1.
    Each backend raises its own subclass."""


class MissingLoweringError(KeyError):
    """An op has no lowering in the backend asked for; the message names the op (and its plugin).

    A KeyError, as a missing key of the table; the CLI reports it as a user's error (exit 1).
    """

    def __str__(self) -> str:
        return str(self.args[0])


class LoweringTable(Generic[F]):
    """A table of lowering functions keyed by op name, checked against the live op registry.

    Args:
        backend: the backend's key (``pytorch``, ``onnx``): plugins' lowerings for it are imported
            on first use, and messages name it (``PyTorch``, ``ONNX``).
        known: the op registry to check names against (default: `builder.OPS`, read live).
    """

    def __init__(self, backend: str, known: Mapping[str, Any] | None = None) -> None:
        self.backend = backend
        self.name = BACKEND_NAMES.get(backend, backend)
        self._known: Mapping[str, Any] = OPS if known is None else known
        self._fns: dict[str, F] = {}

    def register(self, *ops: str) -> Callable[[F], F]:
        """Decorator: register the decorated function as the lowering of each of `ops`.

        Raises:
            ValueError: an op is not registered in `builder.OPS`, or it already has a lowering.
        """
        for op in ops:
            if op not in self._known:
                hints = "".join(f"; {h}" for h in did_you_mean(op, self._known))
                raise ValueError(f"{self.name} lowering for unknown op '{op}'{hints}")
            if op in self._fns:
                raise ValueError(f"op '{op}' has two {self.name} lowerings "
                                 f"({getattr(self._fns[op], '__qualname__', '?')} and another)")

        def add(fn: F) -> F:
            for op in ops:
                self._fns[op] = fn
            return fn

        return add

    def __getitem__(self, op: str) -> F:
        fn = self._fns.get(op)  # the hot path: one lookup per node
        if fn is None:
            import_lowerings(self.backend)
            fn = self._fns.get(op)
        if fn is None or op not in self._known:
            raise MissingLoweringError(self._missing_message(op))
        return fn

    def _missing_message(self, op: str) -> str:
        if op not in self._known:
            hints = "".join(f"; {h}" for h in did_you_mean(op, self._known))
            return f"unknown op '{op}' has no {self.name} lowering{hints}"
        plugin = plugin_of(op)
        if plugin is not None:
            return (f"op '{op}' (from plugin '{plugin}') has no {self.name} lowering: the plugin registers none; "
                    f"it needs @{'TABLE' if self.backend == 'pytorch' else 'LOWERINGS'}.register('{op}') in a module "
                    f"named by plugin_lowerings({self.backend}=...)")
        return f"op '{op}' has no {self.name} lowering"

    def __contains__(self, op: object) -> bool:
        import_lowerings(self.backend)
        return op in self._fns and op in self._known

    def __iter__(self) -> Iterator[str]:
        import_lowerings(self.backend)
        return iter(sorted(op for op in self._fns if op in self._known))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def missing(self) -> list[str]:
        """Registered ops without a lowering, sorted."""
        import_lowerings(self.backend)
        return sorted(op for op in self._known if op not in self._fns)

    def unknown(self, ops: Iterable[str] | None = None) -> list[str]:
        """Ops with a lowering that are not in `ops` (default: the registry); the registry may have lost one."""
        current = set(self._known if ops is None else ops)
        return sorted(op for op in self._fns if op not in current)
