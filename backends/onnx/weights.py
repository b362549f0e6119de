"""Weights for the exported model: taken from a state_dict (numpy arrays, torch tensors, or a
safetensors file or ``torch.save`` state_dict keyed like the PyTorch module's state_dict), or
initialised in numpy the way PyTorch initialises the same layers (kaiming-uniform bounds,
N(0, 1) embeddings, ...).

Torch is imported here only to read a ``torch.save`` file: a torch tensor is recognised by its
type's module and converted through its own methods.

Weights are taken when the writer asks for them, one at a time (`InitialWeights`,
`StateDictWeights`): a safetensors file is checked against the graph from its header alone and
each tensor read from it as it is written, so an export never holds the whole file. A
``torch.save`` file is a pickle, loaded whole by ``torch.load``.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeAlias

import numpy as np

from nnspec.backends.weightfiles import SafetensorsFile, WeightDtypeWarning, numpy_dtype
from nnspec.builder import Node
from nnspec.builder.errors import did_you_mean
from nnspec.builder.initialisers import Distribution, distribution

from .dtypes import np_dtype

__all__ = ["Init", "InitialWeights", "LazyWeights", "StateDictWeights", "WeightDtypeWarning", "WeightError", "WeightUse",
           "initialise", "load_state_dict", "resolve_weights", "weight_bytes", "weight_layout"]

StateDict: TypeAlias = Mapping[str, Any] | str | Path

IGNORED_BUFFERS = ("num_batches_tracked",)
"""state_dict entries of PyTorch layers that inference never reads."""


class WeightError(ValueError):
    """A state_dict that does not fit the graph: a missing key, or a wrong shape."""


class Init(NamedTuple):
    """How PyTorch initialises one tensor (a NamedTuple: lowering creates many, cheaply).

    Attributes:
        kind: ``uniform`` on [-scale, scale], ``normal`` with std `scale`, or ``constant`` `scale`.
        scale: the bound, the standard deviation or the value.
        zero_row: a row set to zero afterwards (an embedding's padding_idx).
    """

    kind: Literal["uniform", "normal", "constant"]
    scale: float = 0.0
    zero_row: int | None = None

    @staticmethod
    def uniform(bound: float) -> Init:
        return Init("uniform", bound)

    @staticmethod
    def normal(std: float = 1.0, zero_row: int | None = None) -> Init:
        return Init("normal", std, zero_row)

    @staticmethod
    def constant(value: float) -> Init:
        return Init("constant", value)


class WeightUse(NamedTuple):
    """A weight or buffer the graph reads: its initializer name, owner, shape, and how to make it.

    Attributes:
        name: the initializer name, the PyTorch state_dict key (``<node id>.<weight>``).
        node: the owning node's id.
        weight: the weight's own name (``weight``, ``in_proj_bias``, ``running_var``).
        shape: its concrete shape.
        dtype: its nnspec dtype name.
        init: how PyTorch initialises it (None until the owner's lowering says).
        alias: the stand-in key of a tied weight whose owner a signature leaves out
            (``tgt_embed.weight`` for ``src_embed.weight``); a state_dict may use either.
        perm: the initializer holds the state_dict tensor permuted by this (a linear layer's
            (out, in) weight stored as the (in, out) its MatMul reads); None: as it is.
    """

    name: str
    node: str
    weight: str
    shape: tuple[int, ...]
    dtype: str
    init: Init | None
    alias: str | None = None
    perm: tuple[int, ...] | None = None


def initialise(use: WeightUse, seed: int = 0, node: Node | None = None) -> np.ndarray:
    """A fresh tensor for `use`, from a generator seeded by `seed` and the weight's name.

    Seeding by name makes every weight independent of the order of the others, so the same
    spec gives the same bytes. An initialiser the spec gives for the weight (``node.inits``)
    replaces PyTorch's default, as in the PyTorch backend.
    """
    if node is not None and use.weight in node.inits:
        asked = node.inits[use.weight]
        rng = np.random.default_rng([seed, zlib.crc32(use.name.encode())])
        out = _draw(distribution(asked, use.shape), use.shape, rng)
        row = node.model.zero_rows().get(use.weight) if node.model is not None else None
        if row is not None:  # an embedding's padding row stays zero
            out[row] = 0
        return out.astype(np_dtype(use.dtype), copy=False)
    init = use.init
    if not isinstance(init, Init):  # pragma: no cover - a lowering that forgot to say
        raise TypeError(f"weight '{use.name}' has no initialiser")
    dtype = np_dtype(use.dtype)
    if init.kind == "constant":
        return np.full(use.shape, init.scale, dtype=dtype)
    rng = np.random.default_rng([seed, zlib.crc32(use.name.encode())])
    if init.kind == "uniform":
        out = rng.random(use.shape, dtype=np.float32)
        out *= np.float32(2 * init.scale)
        out -= np.float32(init.scale)
    else:
        out = rng.standard_normal(use.shape, dtype=np.float32)
        out *= np.float32(init.scale)
    if init.zero_row is not None:
        out[init.zero_row] = 0
    return out.astype(dtype, copy=False)


def _draw(dist: Distribution, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Numbers from `dist` (see `nnspec.builder.initialisers.distribution`), as torch.nn.init draws them."""
    if dist.kind == "constant":
        return np.full(shape, dist.a, dtype=np.float32)
    if dist.kind == "uniform":
        return _in_chunks(lambda n: rng.uniform(dist.a, dist.b, n), shape)
    if dist.kind == "normal":
        return _in_chunks(lambda n: rng.normal(dist.a, dist.b, n), shape)
    if dist.kind == "trunc_normal":  # redraw what falls outside [low, high]; clip after many tries
        out = rng.normal(dist.a, dist.b, shape)
        for _ in range(100):
            bad = (out < dist.low) | (out > dist.high)
            if not bad.any():
                break
            out[bad] = rng.normal(dist.a, dist.b, int(bad.sum()))
        return np.clip(out, dist.low, dist.high).astype(np.float32)
    # orthogonal: QR of a normal matrix, signs fixed by R's diagonal (torch.nn.init.orthogonal_)
    rows = shape[0]
    cols = int(np.prod(shape)) // rows
    flat = rng.normal(0.0, 1.0, (rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (dist.a * q).reshape(shape).astype(np.float32)


_CHUNK = 2**20


def _in_chunks(draw: Callable[[int], np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """float32 numbers drawn (in float64) `_CHUNK` at a time: the same numbers as one draw of the whole
    shape, without its float64 copy, twice the weight's size, held at once."""
    out = np.empty(shape, dtype=np.float32)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        flat[start:start + _CHUNK] = draw(min(_CHUNK, flat.size - start))
    return out


def _to_numpy(value: Any, key: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch"):  # a torch tensor; torch is imported already
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16; float32 round-trips it exactly
            import ml_dtypes

            return t.float().numpy().astype(ml_dtypes.bfloat16)
        return t.numpy()
    if np.isscalar(value) or isinstance(value, list | tuple):
        return np.asarray(value)
    raise WeightError(f"state_dict['{key}'] is a {type(value).__name__}, expected a numpy array or a torch tensor")


def load_state_dict(source: StateDict) -> Mapping[str, Any]:
    """A mapping of name to tensor: `source` itself, the tensors of a safetensors file (checked, each
    read when asked for: `SafetensorsFile`), or those of a ``torch.save`` state_dict (read whole,
    through ``torch.load(weights_only=True)`` only)."""
    if not isinstance(source, str | Path):
        return source
    from nnspec.backends.weightfiles import WeightsFileError, read_torch_weights, weights_format

    try:
        if weights_format(source) == "torch":
            return read_torch_weights(source)
        return SafetensorsFile(source)  # a device, a truncated file, an F8 dtype: named here, from the header
    except WeightsFileError as exc:
        raise WeightError(str(exc)) from None


class LazyWeights(Mapping[str, np.ndarray]):
    """The weights a graph reads, in the order of `uses`, each made when it is read and not kept.

    An export writes one weight at a time, so it holds one weight, never all of them; reading a
    weight again makes it again. `layout` gives a weight's shape and dtype (as the initializer
    holds it) without making it, for the writer's plan.
    """

    def __init__(self, uses: Mapping[str, WeightUse]) -> None:
        self.uses = uses

    def __getitem__(self, name: str) -> np.ndarray:  # pragma: no cover - every subclass says
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        return iter(self.uses)

    def __len__(self) -> int:
        return len(self.uses)

    def __contains__(self, name: object) -> bool:
        return name in self.uses

    def layout(self, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
        """The shape and dtype `self[name]` has."""
        use = self.uses[name]
        shape = use.shape if use.perm is None else tuple(use.shape[i] for i in use.perm)
        return shape, np.dtype(np_dtype(use.dtype))


class InitialWeights(LazyWeights):
    """The initial weights of a graph, each made (`initialise`, laid out) when it is read: the same
    bytes every time, as each is seeded by its name."""

    def __init__(self, uses: Mapping[str, WeightUse], nodes: Mapping[str, Node], seed: int = 0) -> None:
        super().__init__(uses)
        self.nodes, self.seed = nodes, seed

    def __getitem__(self, name: str) -> np.ndarray:
        use = self.uses[name]
        return _laid_out(initialise(use, self.seed, self.nodes.get(use.node)), use)


class StateDictWeights(LazyWeights):
    """The weights of a state_dict that `resolve_weights` checked against the graph, each taken when
    it is read (from its file, for a `SafetensorsFile`), cast to the model's dtype and laid out.

    Attributes:
        source: the state_dict.
        source_keys: the key of `source` that holds each weight (a tied weight's stand-in may hold it).
    """

    def __init__(self, uses: Mapping[str, WeightUse], source: Mapping[str, Any], source_keys: Mapping[str, str]) -> None:
        super().__init__(uses)
        self.source, self.source_keys = source, source_keys

    def __getitem__(self, name: str) -> np.ndarray:
        use, key = self.uses[name], self.source_keys[name]
        arr = _to_numpy(self.source[key], key)
        return _laid_out(arr.astype(np_dtype(use.dtype), copy=False), use)


def _source_layout(sd: Mapping[str, Any], key: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype of `sd[key]`, from the header alone for a safetensors file."""
    if isinstance(sd, SafetensorsFile):
        info = sd.info(key)
        return info.shape, numpy_dtype(info.dtype)
    arr = _to_numpy(sd[key], key)
    return tuple(arr.shape), arr.dtype


def weight_layout(arrays: Mapping[str, np.ndarray], name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype of `arrays[name]`, without making it where `arrays` makes weights when read."""
    if isinstance(arrays, LazyWeights):
        return arrays.layout(name)
    arr = arrays[name]
    return tuple(arr.shape), arr.dtype


def weight_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    """The bytes of all of `arrays`, without making them (see `weight_layout`)."""
    total = 0
    for name in arrays:
        shape, dtype = weight_layout(arrays, name)
        total += math.prod(shape) * dtype.itemsize
    return total


def resolve_weights(uses: Mapping[str, WeightUse], state_dict: StateDict | None, nodes: Mapping[str, Node],
                    seed: int = 0) -> Mapping[str, np.ndarray]:
    """One array per weight the graph reads, in the order of `uses`, each made when it is read: the
    initial weights without a `state_dict` (`InitialWeights`), else the state_dict's, checked here
    from their shapes and dtypes (a safetensors file's header) and taken when read (`StateDictWeights`).

    Keys of `state_dict` that belong to no node of this graph are ignored (a signature uses
    part of the model's weights), and so are the second names of tied weights (PyTorch lists
    a shared parameter under each name); a key of one of its nodes that names no weight is
    an error.

    Raises:
        WeightError: a weight is missing, has the wrong shape, or a node has an unknown key.
    """
    if state_dict is None:
        return InitialWeights(uses, nodes, seed)
    sd = load_state_dict(state_dict)
    problems: list[str] = []
    keys: dict[str, str] = {}
    cast: set[str] = set()  # floating-point dtypes cast to the model's: said, never silent
    for name, use in uses.items():
        key = use.alias if name not in sd and use.alias is not None and use.alias in sd else name
        if key not in sd:
            hint = "".join(f" ({h})" for h in did_you_mean(name, sd))
            problems.append(f"missing weight '{name}' {list(use.shape)} for node '{use.node}'{hint}")
            continue
        shape, dtype = _source_layout(sd, key)
        if shape != use.shape:
            problems.append(f"weight '{name}' is {list(shape)}, node '{use.node}' needs {list(use.shape)}")
            continue
        want = np.dtype(np_dtype(use.dtype))
        if want.kind == "f" and dtype.kind in "biu":  # a cast would hide a wrong file, not fix it
            problems.append(f"weight '{name}' is {dtype} in the file, node '{use.node}' needs {want}")
            continue
        if dtype != want and want.kind == "f":
            cast.add(str(dtype))
        keys[name] = key
    known = set(uses) | {use.alias for use in uses.values() if use.alias}
    for key in sd:
        owner, _, leaf = key.rpartition(".")
        while owner and owner not in nodes and "." in owner:  # out_proj.weight: the node is two levels up
            owner, _, rest = owner.rpartition(".")
            leaf = f"{rest}.{leaf}"
        node = nodes.get(owner)
        # a weight the node declares but this graph does not read (a key/value projection alone) is no error
        if (node is not None and key not in known and leaf not in IGNORED_BUFFERS and leaf not in node.ties
                and leaf not in node.weights):
            hint = "".join(f" ({h})" for h in did_you_mean(key, uses))
            problems.append(f"unexpected weight '{key}': node '{owner}' has no weight '{leaf}'{hint}")
    if problems:
        raise WeightError("the state_dict does not fit the graph:\n  " + "\n  ".join(problems))
    if cast:
        note = WeightDtypeWarning(cast, {u.dtype for u in uses.values() if np_dtype(u.dtype).kind == "f"})
        keep = "export with dtype='float16' for a half-precision model" if note.half else None
        warnings.warn(WeightDtypeWarning(note.given, note.model, keep=keep), stacklevel=3)
    return StateDictWeights(uses, sd, keys)


def _laid_out(arr: np.ndarray, use: WeightUse) -> np.ndarray:
    """The state_dict tensor in the initializer's layout (see `WeightUse.perm`)."""
    return arr if use.perm is None else np.ascontiguousarray(arr.transpose(use.perm))
