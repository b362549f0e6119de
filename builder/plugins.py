"""Op plugins: ops declared outside nnspec, in an installed package or a local module.

A plugin is a module that, when imported, registers its ops the way nnspec's own are
registered (`register_op`, the `Op` model with its arguments, shape rule, weights and doc)
and says where its backend lowerings live (`plugin_lowerings`)::

    from nnspec.builder import Op, plugin_lowerings, register_op

    @register_op
    class SquaredRelu(Op):
        ...

    plugin_lowerings(pytorch="my_ops.torch_lowering", onnx="my_ops.onnx_lowering",
                     shapes={"squared_relu": "box"})

The lowering modules register into the backend tables (``nnspec.backends.pytorch.TABLE.register``,
``nnspec.backends.onnx.LOWERINGS.register``); they are imported when that backend first looks an op up,
so that ``nnspec validate`` never imports torch or onnx for a plugin.

Plugins come from the entry-point group ``nnspec.ops`` of installed packages and from the
``NNSPEC_PLUGINS`` environment variable (comma-separated module names), both loaded once, on
the first `load_plugins` call (`load_spec`, the schema and the CLI make it), and from the CLI's
``--plugin MODULE`` (a module name, or a ``.py`` file).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from .ops.base import OPS, PLUGIN_OF, RegistryError, registering_for, unregister

__all__ = [
    "ENTRY_POINT_GROUP", "ENV_VAR", "PluginError", "import_lowerings", "load_plugin", "load_plugins", "plugin_lowerings",
    "plugin_of", "plugin_shape", "plugins",
]

ENTRY_POINT_GROUP = "nnspec.ops"
ENV_VAR = "NNSPEC_PLUGINS"

Target = str | Callable[[], object]
"""Where a backend's lowerings live: a module name to import, or a function to call once."""


class PluginError(Exception):
    """A plugin cannot be used: it fails to import, an op name clashes, or a lowering is missing.
    The message names the plugin."""


@dataclass
class _Plugin:
    name: str
    ops: list[str] = field(default_factory=list)
    lowerings: dict[str, Target] = field(default_factory=dict)  # backend -> target, until imported
    shapes: dict[str, str] = field(default_factory=dict)
    broken: dict[str, PluginError] = field(default_factory=dict)  # backend -> why its lowerings did not load


_LOADED: dict[str, _Plugin] = {}
_FAILED: dict[str, PluginError] = {}
_CURRENT: list[_Plugin] = []
_AUTO_DONE = False


def plugins() -> dict[str, list[str]]:
    """The loaded plugins and their ops."""
    return {name: list(p.ops) for name, p in _LOADED.items()}


def plugin_of(op: str) -> str | None:
    """The plugin that registered `op`; None for a built-in op."""
    return PLUGIN_OF.get(op)


def plugin_lowerings(*, pytorch: Target | None = None, onnx: Target | None = None,
                     shapes: dict[str, str] | None = None) -> None:
    """Declare, from a plugin module, where its lowerings are and how its ops are drawn.

    Args:
        pytorch: the module registering the plugin's ops into ``nnspec.backends.pytorch.TABLE``
            (or a function that does), imported when the PyTorch backend is first used.
        onnx: the same for ``nnspec.backends.onnx.LOWERINGS``.
        shapes: a Graphviz node shape per op (default: a rounded box, as for built-in layers).

    Raises:
        PluginError: called outside a plugin's import.
    """
    if not _CURRENT:
        raise PluginError("plugin_lowerings() is called from a plugin module while it is loaded "
                          "(an `nnspec.ops` entry point, --plugin or NNSPEC_PLUGINS)")
    plugin = _CURRENT[-1]
    plugin.lowerings.update({k: v for k, v in (("pytorch", pytorch), ("onnx", onnx)) if v is not None})
    plugin.shapes.update(shapes or {})


def plugin_shape(op: str) -> str | None:
    """The diagram shape a plugin gave `op`, if any."""
    plugin = _LOADED.get(PLUGIN_OF.get(op, ""))
    return plugin.shapes.get(op) if plugin else None


def import_lowerings(backend: str) -> None:
    """Import the lowerings every loaded plugin declared for `backend` (once each).

    Raises:
        PluginError: a lowering module fails to import.
    """
    for plugin in list(_LOADED.values()):
        if backend in plugin.broken:
            raise plugin.broken[backend]
        target = plugin.lowerings.pop(backend, None)
        if target is None:
            continue
        try:
            if isinstance(target, str):
                importlib.import_module(target)
            else:
                target()
        except Exception as exc:
            what = f"module '{target}'" if isinstance(target, str) else getattr(target, "__qualname__", repr(target))
            plugin.broken[backend] = PluginError(f"plugin '{plugin.name}': its {backend} lowerings ({what}) failed to "
                                                 f"load: {type(exc).__name__}: {exc}")
            raise plugin.broken[backend] from exc


def load_plugins(modules: Iterable[str] = ()) -> None:
    """Load the installed plugins and those named by ``NNSPEC_PLUGINS`` (on the first call), then `modules`.

    Raises:
        PluginError: a plugin fails to import, or registers an op whose name is taken (again on
            every later call: the registry would otherwise miss its ops without a word).
    """
    global _AUTO_DONE
    if not _AUTO_DONE:
        _AUTO_DONE = True
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            _load(ep.value, ep)
        for name in os.environ.get(ENV_VAR, "").split(","):
            if name.strip():
                _load(_plugin_name(name.strip()), None)
    for module in modules:
        load_plugin(module)
    if _FAILED:
        raise next(iter(_FAILED.values()))


def load_plugin(module: str) -> None:
    """Load one plugin: a module name (looked up on sys.path and in the working directory) or a ``.py`` file.

    Raises:
        PluginError: it fails to import, or registers an op whose name is taken.
    """
    module = _plugin_name(module)
    _load(module, None)
    if module in _FAILED:
        raise _FAILED[module]


def _plugin_name(name: str) -> str:
    """How a plugin is known: a module by its name, a ``.py`` file by its resolved path (so that
    ``x.py`` and ``./x.py`` are one plugin, not two that clash)."""
    return str(Path(name).resolve()) if name.endswith(".py") else name


def _load(name: str, ep: EntryPoint | None) -> None:
    if name in _LOADED or name in _FAILED:
        return
    plugin = _Plugin(name)
    before = set(OPS)
    _CURRENT.append(plugin)
    try:
        with registering_for(name):
            _import(name, ep)
    except RegistryError as exc:
        _FAILED[name] = PluginError(f"plugin '{name}': {exc}")
    except (Exception, SystemExit) as exc:  # anything the plugin's code raises, exit() included
        _FAILED[name] = PluginError(f"plugin '{name}' failed to import: {type(exc).__name__}: {exc}")
    finally:
        _CURRENT.pop()
        plugin.ops = sorted(set(OPS) - before)
    if name in _FAILED:
        for op in plugin.ops:  # a plugin is loaded whole or not at all
            unregister(op)
        return
    _LOADED[name] = plugin


def _import(name: str, ep: EntryPoint | None) -> None:
    """Import a plugin: an entry point (a module, or an object, called when it is a function), a .py
    file, or a module name, looked up in the working directory too (as ``python -m`` would)."""
    if ep is not None:
        obj = ep.load()
        if ep.attr and callable(obj) and not isinstance(obj, type):
            obj()
        return
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"no file '{name}'")
        # a private module name: a file called onnx.py or yaml.py must not stand in for the library
        private = f"_nnspec_plugin_{path.stem}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(private, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load '{name}' as a module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[private] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(private, None)
            raise
        return
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # kept: the plugin's lowering modules are imported later, from there too
    importlib.import_module(name)
