"""Lazy package exports (PEP 562): a name is imported from its module on first use, so that
importing a package (and starting the CLI) does not pay for torch or onnx."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for `package`: name -> the module that defines it (``.export``
    relative to `package`, or absolute). The value is kept on the package after the first use."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(home, package), name)
        setattr(sys.modules[package], name, value)  # later reads skip this hook
        return value

    return __getattr__
