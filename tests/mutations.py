"""Mutations of the seed specs for the fuzz tests (tests/test_fuzz_*.py) and scripts/fuzz.py.

A case is a seed spec's data changed by a few mutations (a key deleted or added, a value
of another type, a reference renamed, a random scalar), written as YAML or JSON, and then
perhaps damaged as text (random bytes inserted, a byte replaced, a line dropped, the text
cut short). `run_case` feeds one to the CLI and returns every way it misbehaved: a
traceback or an exit status other than 0 and 1, a run over the time bound, or a command
that failed yet left a file behind.

Every mutation draws from a `random.Random`, so that hypothesis (``st.randoms()``) and the
fuzz script (a seeded generator) share them.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from nnspec.backends.cli import cli
from nnspec.builder import SpecError

SPECS = Path(__file__).resolve().parent.parent / "specs"
SEEDS: dict[str, Any] = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(SPECS.glob("*.yaml"))}
"""The seed specs' data, by name (trusted files: read with PyYAML's own safe loader)."""

TIME_BOUND = 15.0
"""Seconds one command may take on one case; a hostile spec must be refused well within it."""

MAX_BUILD_PARAMS = 5_000_000
"""Valid cases up to this many parameters are also exported and built (bigger ones take too long)."""

SMALL_SEEDS = ["lenet5", "lstm_sentiment", "rnn_intent"]
"""Seeds whose failed cases also go through the writing commands: small, and without signatures (a spec
whose only error is in a signature still exports its main graph, which for the big seeds takes long)."""

DataPath = tuple[str | int, ...]

# Values that make good trouble: type confusions, boundaries, non-finite numbers, expressions.
_ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2, 3, 7, 2**31, 2**63, 10**12, 10**40, 0.5, -2.5, 1e308, math.nan, math.inf,
    "", " ", "x", "batch", "relu", "${d_model}", "${nope}", "${1/0}", "${2**64}", "${d_model.real}", "${(}",
    "ä✓", "a.b.c", "x.y", "__class__", "\t\n", [], [1], ["x", 2], {}, {"a": 1}, {"op": "relu"},
]
_BYTES = [b"\x00", b"\xff", b"\xfe", b"\n", b"\r", b"\t", b":", b"{", b"}", b"[", b"]", b"&", b"*", b"!", b"%",
          b"#", b"'", b'"', b"-", b"|", b">", b"?", b"\\", b"\xc3", b"\xef\xbb\xbf", b"${", b"<<: ", b"\x1b",
          b"\xe2\x80\xa8"]


def _paths(data: Any, prefix: DataPath = ()) -> list[DataPath]:
    """Every path to a value inside `data` (the root excluded)."""
    out: list[DataPath] = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _get(data: Any, path: DataPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: DataPath, value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


def _names(data: dict[str, Any]) -> list[str]:
    """Node, input and block names: what references point at."""
    names: list[str] = []
    for section in ("nodes", "inputs", "blocks"):
        if isinstance(data.get(section), dict):
            names.extend(data[section])
    return names or ["x"]


def _typo(rng: random.Random, word: str) -> str:
    if not word:
        return "x"
    i = rng.randrange(len(word))
    return rng.choice([word[:i] + word[i + 1:], word[:i] + rng.choice("aeioux_1") + word[i:], word + "s",
                       word.upper(), word + ".nope"])


def delete_key(rng: random.Random, data: dict[str, Any]) -> str:
    paths = [p for p in _paths(data) if isinstance(_get(data, p[:-1]), dict)]
    if not paths:
        return add_key(rng, data)
    path = rng.choice(paths)
    del _get(data, path[:-1])[path[-1]]
    return f"delete {path}"


def swap_type(rng: random.Random, data: dict[str, Any]) -> str:
    if not data:
        return add_key(rng, data)
    path = rng.choice(_paths(data))
    value = copy.deepcopy(rng.choice(_ODD_VALUES))
    _set(data, path, value)
    return f"set {path} = {value!r}"


def rename_ref(rng: random.Random, data: dict[str, Any]) -> str:
    names = set(_names(data))
    refs = [p for p in _paths(data) if isinstance(_get(data, p), str) and _get(data, p).partition(".")[0] in names]
    if not refs:
        return swap_type(rng, data)
    path = rng.choice(refs)
    old = _get(data, path)
    new = rng.choice([_typo(rng, old), rng.choice(sorted(names)), old.partition(".")[0] + "." + _typo(rng, "output")])
    _set(data, path, new)
    return f"rename {path}: {old!r} -> {new!r}"


def rename_key(rng: random.Random, data: dict[str, Any]) -> str:
    paths = [p for p in _paths(data) if isinstance(p[-1], str) and isinstance(_get(data, p[:-1]), dict)]
    if not paths:
        return add_key(rng, data)
    path = rng.choice(paths)
    parent = _get(data, path[:-1])
    new = _typo(rng, str(path[-1]))
    parent[new] = parent.pop(path[-1])
    return f"rename key {path} -> {new!r}"


def random_scalar(rng: random.Random, data: dict[str, Any]) -> str:
    scalars = [p for p in _paths(data) if not isinstance(_get(data, p), dict | list)]
    if not scalars:
        return add_key(rng, data)
    path = rng.choice(scalars)
    old = _get(data, path)
    if isinstance(old, bool) or not isinstance(old, int | float | str):
        new: Any = rng.choice([True, False, None, 0, 1])
    elif isinstance(old, int | float):
        new = rng.choice([0, 1, -1, old + 1, old * 2, old - 1, -old, old * 1000, 2**rng.randrange(70), old / 3])
    else:
        new = rng.choice([_typo(rng, old), old * 2, "${" + old + "}", "${" + rng.choice(
            ["1 +", "d_model * heads", "max(1, 2)", "2**70", "-1", "heads // 0", "floor(1.5)"]) + "}", ""])
    _set(data, path, new)
    return f"set {path}: {old!r} -> {new!r}"


def add_key(rng: random.Random, data: dict[str, Any]) -> str:
    dicts = [()] + [p for p in _paths(data) if isinstance(_get(data, p), dict)]
    path = rng.choice(dicts)
    target = _get(data, path)
    key = _typo(rng, rng.choice(list(target) or ["extra"])) if rng.random() < 0.7 else rng.choice(
        ["op", "in", "repeat", "tie", "doc", "signatures", "blocks", "dtype", "shape", "params"])
    target[key] = copy.deepcopy(rng.choice(_ODD_VALUES))
    return f"add {(*path, key)} = {target[key]!r}"


def param_value(rng: random.Random, data: dict[str, Any]) -> str:
    """A param (of the spec or a block) set to a size that is odd, tiny or huge: reaches shapes and limits."""
    params = [p for p in _paths(data) if len(p) >= 2 and p[-2] == "params"]
    if not params:
        return random_scalar(rng, data)
    path = rng.choice(params)
    new = rng.choice([0, 1, 2, 3, 5, -1, 0.5, 2**31, 10**6, 10**12, "${2**40}", "${1 // 1}", "two"])
    _set(data, path, new)
    return f"set {path} = {new!r}"


DATA_MUTATIONS: list[Callable[[random.Random, dict[str, Any]], str]] = [
    delete_key, swap_type, rename_ref, rename_key, random_scalar, add_key, param_value, param_value]


def insert_bytes(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    at = rng.randrange(len(text) + 1)
    junk = b"".join(rng.choice(_BYTES) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.3:
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return text[:at] + junk + text[at:], f"insert {junk!r} at {at}"


def replace_byte(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    if not text:
        return insert_bytes(rng, text)
    at = rng.randrange(len(text))
    new = rng.choice(_BYTES)[:1]
    return text[:at] + new + text[at + 1:], f"replace byte {at} with {new!r}"


def drop_line(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    lines = text.split(b"\n")
    i = rng.randrange(len(lines))
    return b"\n".join(lines[:i] + lines[i + 1:]), f"drop line {i + 1}"


def truncate(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    at = rng.randrange(len(text) + 1)
    return text[:at], f"truncate at {at}"


TEXT_MUTATIONS: list[Callable[[random.Random, bytes], tuple[bytes, str]]] = [
    insert_bytes, replace_byte, drop_line, truncate]


@dataclass
class Case:
    """One mutated spec: its file name and bytes, and what was done to which seed."""

    name: str
    text: bytes
    steps: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.name}: " + "; ".join(self.steps)


def dump(data: Any, as_json: bool) -> bytes:
    if as_json:
        return json.dumps(data, indent=1).encode()
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100).encode()


def data_case(rng: random.Random, seed: str | None = None, mutations: int | None = None) -> Case:
    """A seed spec with 1-3 data mutations, as YAML or JSON."""
    seed = seed or rng.choice(sorted(SEEDS))
    data = copy.deepcopy(SEEDS[seed])
    steps = [rng.choice(DATA_MUTATIONS)(rng, data) for _ in range(mutations or rng.randint(1, 3))]
    as_json = rng.random() < 0.25
    return Case(f"{seed}.{'json' if as_json else 'yaml'}", dump(data, as_json), steps)


def text_case(rng: random.Random, seed: str | None = None) -> Case:
    """A seed spec (perhaps also mutated as data) damaged as text: bytes inserted or replaced, lines dropped, cut short."""
    if rng.random() < 0.3:
        case = data_case(rng, seed)
    else:
        name = seed or rng.choice(sorted(SEEDS))
        case = Case(f"{name}.yaml", (SPECS / f"{name}.yaml").read_bytes())
    for _ in range(rng.randint(1, 3)):
        case.text, step = rng.choice(TEXT_MUTATIONS)(rng, case.text)
        case.steps.append(step)
    return case


# -- running a case ----------------------------------------------------------------------------

WRITERS: dict[str, tuple[str, list[str]]] = {
    "render": ("nnspec.backends.graphviz.commands", ["render", "{spec}", "-o", "{out}/diagram.dot"]),
    "export": ("nnspec.backends.onnx.commands", ["export", "{spec}", "-o", "{out}/model.onnx"]),
    "build": ("nnspec.backends.pytorch.commands", ["build", "{spec}", "--emit-python", "{out}/model.py"]),
}
"""Commands that write a file, with the module that provides each (they are optional)."""


def available_writers() -> list[str]:
    return [name for name, (module, _) in WRITERS.items() if importlib.util.find_spec(module) is not None]


@dataclass
class Outcome:
    """What the CLI did with one case."""

    exit_code: int
    params: int | None = None
    problems: list[str] = field(default_factory=list)


def _invoke(args: list[str], problems: list[str], what: str) -> tuple[int, str]:
    start = time.monotonic()
    result = CliRunner().invoke(cli, args)
    elapsed = time.monotonic() - start
    out, code, exc = result.output, result.exit_code, result.exception
    if isinstance(exc, SpecError):  # `main` prints the diagnostics of one that escapes a command, and exits 1
        out, code = out + str(exc), 1
    elif exc is not None and not isinstance(exc, SystemExit):
        problems.append(f"{what}: exception {type(exc).__name__}: {exc}")
    if code not in (0, 1):
        problems.append(f"{what}: exit status {code}:\n{out[-2000:]}")
    if "Traceback" in out or "internal error" in out:
        problems.append(f"{what}: traceback or internal error:\n{out[-2000:]}")
    if elapsed > TIME_BOUND:
        problems.append(f"{what}: took {elapsed:.1f} s, more than {TIME_BOUND} s")
    return code, result.stdout


def run_case(case: Case, workdir: Path, writers: list[str] | None = None) -> Outcome:
    """Validate `case`; then run each of `writers` into an empty folder, which must stay empty on failure."""
    spec = workdir / case.name
    spec.write_bytes(case.text)
    problems: list[str] = []
    code, stdout = _invoke(["validate", "--json", str(spec)], problems, "validate")
    params = None
    if code == 0 and not problems:
        params = json.loads(stdout)["files"][0]["params"]
    outcome = Outcome(code, params, problems)
    if code != 1 and (params is None or params > MAX_BUILD_PARAMS):
        return outcome  # exporting and building a big valid model is slow and proves nothing here
    for name in writers or ():
        out = workdir / f"out_{name}"
        out.mkdir()
        args = [a.format(spec=spec, out=out) for a in WRITERS[name][1]]
        written, _ = _invoke(args, problems, name)
        files = sorted(p.name for p in out.iterdir())
        if written != 0 and files:
            problems.append(f"{name}: failed with exit status {written} but left {files}")
        if written == 0 and len(files) != 1:
            problems.append(f"{name}: succeeded but wrote {files}")
    return outcome
