"""Fuzz cases for what a user hands nnspec besides spec text: ONNX files, ``.npy`` inputs,
safetensors weights, output paths and ``--set``/``--dim``/``--limit`` values.

Shared by `scripts/fuzz.py` (CI) and `tests/test_fuzz_hostile.py`. A case is a command line
plus the files it reads, all made in an empty folder; `run_hostile` runs it as the ``nnspec``
script does and reports every problem: an exit status other than 0, 1 or 2, an internal error,
a command over the time bound, a temporary file left behind, or any file written outside the
place it was told to write.
"""

from __future__ import annotations

import json
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from nnspec.backends.cli import _user_error, cli
from nnspec.builder import SpecError

__all__ = ["FAMILIES", "HostileCase", "hostile_case", "run_hostile"]

TIME_BOUND = 15.0
TINY = ("name: tiny\nparams: {width: 3}\ninputs: {x: {shape: [batch, 4]}}\n"
        "nodes: {fc: {op: linear, in: x, out_features: '${width}'}, act: {op: relu, in: fc}}\noutputs: {y: act}\n")
_HOSTILE_TEXT = ["", "-", "..", "../x", "/", "\x00", "\x1b]0;t\x07", "\u202e", "é", " ", "1e1", "1e400", "-1", "0",
                 "nan", "inf", "true", "null", "[1, 2]", "{a: 1}", "'q'", '"', "\\", "${width}", "10**12",
                 "9" * 5000, "[" * 3000, "0x10", "1_000", "2.5", "4294967296", "18446744073709551617"]


@dataclass
class HostileCase:
    """One command line over files made for it.

    Attributes:
        family: which kind of input is hostile (onnx, npy, weights, values, paths).
        what: the mutation, for the report.
        args: the arguments, with ``{dir}`` for the case's folder.
        files: name to bytes, written into the folder first.
        outputs: names (in the folder) the command may create or replace; anything else new is a problem.
    """

    family: str
    what: str
    args: list[str]
    files: dict[str, bytes] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.family}: {self.what}: nnspec {' '.join(repr(a) if len(a) < 60 else repr(a[:60]) for a in self.args)}"


def _mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    kind = rng.choice(["truncate", "flip", "insert", "zero", "head"])
    if not data:
        return data, "empty"
    at = rng.randrange(len(data))
    if kind == "truncate":
        return data[:at], f"truncated at {at}"
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:], f"bit flipped at {at}"
    if kind == "insert":
        return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:], f"bytes inserted at {at}"
    if kind == "zero":
        n = rng.randint(1, 64)
        return data[:at] + b"\0" * n + data[at + n:], f"{n} bytes zeroed at {at}"
    n = rng.randint(1, min(64, len(data)))
    return rng.randbytes(n) + data[n:], f"first {n} bytes random"


def _model(rng: random.Random) -> tuple[bytes, str]:
    """A small ONNX model, sometimes with hostile names, types or domains."""
    import onnx
    from onnx import TensorProto, helper

    out_name = rng.choice(["y", "../escaped", "/tmp/nnspec-abs", "a/b", "..", ".h", "y:0", "\x1b[2J", "y" * 300, ""])
    elem = rng.choice([TensorProto.FLOAT] * 4 + [TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING, 0, 999])
    dims: list[int | str] = rng.choice([[2, 3], ["batch", 3], [0, 3], [2**40, 2**40], [], ["b"] * 70])
    op, domain = rng.choice([("Relu", ""), ("Identity", ""), ("Frob", "com.example"), ("NoSuchOp", ""), ("Relu", "ai.x")])
    x = helper.make_tensor_value_info("x", elem, dims)
    y = helper.make_tensor_value_info(out_name, elem, dims)
    graph = helper.make_graph([helper.make_node(op, ["x"], [out_name], domain=domain)], "g", [x], [y])
    opsets = [helper.make_opsetid("", rng.choice([17, 1, 99]))] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=rng.choice([8, 3, 99]))
    what = f"output {out_name[:20]!r}, type {elem}, dims {dims[:4]}, op {domain}:{op}"
    data = model.SerializeToString()
    if rng.random() < 0.5:
        data, how = _mutate_bytes(rng, data)
        what += f", {how}"
    assert isinstance(model, onnx.ModelProto)
    return data, what


def onnx_case(rng: random.Random) -> HostileCase:
    data, what = _model(rng)
    args = ["run", "{dir}/m.onnx", "--random", "-d", "{dir}/out"]
    if rng.random() < 0.3:
        args += ["--dim", f"{rng.choice(['batch', 'b', 'x'])}={rng.choice(['1', '2', '100000000000', '0'])}"]
    return HostileCase("onnx", what, args, {"m.onnx": data}, ("out",))


def _npy(rng: random.Random) -> tuple[bytes, str]:
    shape = rng.choice([(2, 4), (10**15,), (2**31, 2**31), (), (2, 4, 1), (-1, 4)])
    descr = rng.choice(["<f4", "<f4", "<f8", "|O", "<i8", "|b1", "<U3", "weird", "<f4'"])
    head = repr({"descr": descr, "fortran_order": rng.random() < 0.2, "shape": shape}).encode()
    head += b" " * (64 - (10 + len(head)) % 64 - 1) + b"\n"
    body = b"\0" * rng.choice([0, 8, 32, 64])
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head + body
    what = f"npy {descr} {shape}"
    if rng.random() < 0.4:
        data, how = _mutate_bytes(rng, data)
        what += f", {how}"
    return data, what


def npy_case(rng: random.Random) -> HostileCase:
    data, what = _npy(rng)
    return HostileCase("npy", what, ["run", "{dir}/tiny.yaml", "-i", "x={dir}/x.npy"],
                       {"tiny.yaml": TINY.encode(), "x.npy": data})


def _weights(rng: random.Random) -> tuple[bytes, str]:
    shapes = {"fc.weight": [3, 4], "fc.bias": [3]}
    header: dict[str, object] = {}
    offset = 0
    for key, shape in shapes.items():
        dtype = rng.choice(["F32"] * 6 + ["F16", "BF16", "F64", "I64", "BOOL", "F8_E4M3", "U8", "X"])
        shape = rng.choice([shape] * 4 + [[4, 3], [], [2**62, 2**62], [-1]])
        size = int(np.prod(shape)) * {"F16": 2, "BF16": 2, "F64": 8, "I64": 8, "BOOL": 1, "F8_E4M3": 1, "U8": 1}.get(dtype, 4)
        size = max(0, min(size, 1 << 20))
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + b"\0" * offset
    what = f"weights {json.dumps(header)[:120]}"
    if rng.random() < 0.4:
        data, how = _mutate_bytes(rng, data)
        what += f", {how}"
    return data, what


def weights_case(rng: random.Random) -> HostileCase:
    data, what = _weights(rng)
    command = rng.choice([["run", "{dir}/tiny.yaml", "--random"], ["export", "{dir}/tiny.yaml", "-o", "{dir}/m.onnx"]])
    return HostileCase("weights", what, [*command, "--weights", "{dir}/w.safetensors"],
                       {"tiny.yaml": TINY.encode(), "w.safetensors": data}, ("m.onnx",))


def values_case(rng: random.Random) -> HostileCase:
    option = rng.choice(["--set", "--dim", "--limit"])
    key = {"--set": rng.choice(["width", "nope", "", "width "]), "--dim": rng.choice(["batch", "b", ""]),
           "--limit": rng.choice(["max_nodes", "max_depth", "max_int_bits", "max_weight_bytes", "max_tensor_bytes",
                                  "max_file_bytes", "max_items", "max_expr_chars", "max_layout_seconds", "nope"])}[option]
    value = rng.choice(_HOSTILE_TEXT)
    if rng.random() < 0.3:
        value = "".join(rng.choice(_HOSTILE_TEXT) for _ in range(rng.randint(2, 4)))
    command = "validate" if option != "--dim" else "run"
    extra = ["--random"] if command == "run" else []
    return HostileCase("values", f"{option} {key}={value[:40]!r}", [command, "{dir}/tiny.yaml", *extra, option,
                                                                      f"{key}={value}"], {"tiny.yaml": TINY.encode()})


def paths_case(rng: random.Random) -> HostileCase:
    writer = rng.choice([("export", "-o", ".onnx"), ("build", "--emit-python", ".py"),
                         ("build", "--weights", ".safetensors"), ("schema", "-o", ".json")])
    name = rng.choice(["{dir}/tiny.yaml", "{dir}", "{dir}/nope/x", "{dir}/tiny.yaml/x", "{dir}/out", "{dir}/.",
                       "{dir}/out" + writer[2], "{dir}/link" + writer[2], "{dir}/dangling" + writer[2],
                       "{dir}/out.txt", "{dir}/" + "x" * 300 + writer[2], "/dev/null", "-", "/proc/nnspec" + writer[2]])
    args = [writer[0], *([] if writer[0] == "schema" else ["{dir}/tiny.yaml"]), writer[1], name]
    files = {"tiny.yaml": TINY.encode()}
    return HostileCase("paths", f"{writer[0]} {writer[1]} {name[:40]}", args, files,
                       tuple(n.removeprefix("{dir}/") for n in [name] if n.startswith("{dir}/")))


FAMILIES: dict[str, Callable[[random.Random], HostileCase]] = {
    "onnx": onnx_case, "npy": npy_case, "weights": weights_case, "values": values_case, "paths": paths_case,
}


def hostile_case(rng: random.Random) -> HostileCase:
    return FAMILIES[rng.choice(sorted(FAMILIES))](rng)


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_hostile(case: HostileCase, workdir: Path) -> list[str]:
    """Run `case` in `workdir` (empty) and return its problems (none: it passed)."""
    for name, data in case.files.items():
        (workdir / name).write_bytes(data)
    for suffix in (".onnx", ".py", ".safetensors", ".json"):  # links to the input spec
        (workdir / f"link{suffix}").symlink_to(workdir / "tiny.yaml")
    (workdir / "dangling.onnx").symlink_to(workdir / "nowhere" / "x")
    existing = _listing(workdir)
    before = {p: (workdir / p).read_bytes() for p in existing if (workdir / p).is_file() and not (workdir / p).is_symlink()}
    args = [a.replace("{dir}", str(workdir)) for a in case.args]
    problems: list[str] = []
    start = time.monotonic()
    result = CliRunner().invoke(cli, args)
    elapsed = time.monotonic() - start
    exc = result.exception
    code = result.exit_code
    if exc is not None and not isinstance(exc, SystemExit):
        if isinstance(exc, SpecError) or _user_error(exc) is not None:
            code = 1  # `main` reports these as errors, exit 1
        else:
            problems.append(f"exception {type(exc).__name__}: {str(exc)[:300]}")
    if code not in (0, 1, 2):
        problems.append(f"exit status {code}: {result.output[-1000:]}")
    if "Traceback" in result.output or "internal error" in result.output:
        problems.append(f"traceback or internal error: {result.output[-1000:]}")
    if elapsed > TIME_BOUND:
        problems.append(f"took {elapsed:.1f} s, more than {TIME_BOUND} s")
    problems += _check_files(workdir, existing, before, case.outputs)
    return problems


def _check_files(workdir: Path, existing: set[str], before: dict[str, bytes], allowed: tuple[str, ...]) -> list[str]:
    problems = []
    links = [workdir / a for a in allowed if len(a) < 200 and (workdir / a).is_symlink() and (workdir / a).exists()]
    allowed += tuple(str(p.resolve().relative_to(workdir.resolve())) for p in links)  # a link's file is replaced
    after = _listing(workdir)
    for path in sorted(after):
        name = Path(path).name
        if name.endswith(".tmp") or name.startswith(".nnspec-"):
            problems.append(f"left a temporary file: {path}")
        elif path not in existing and not any(path == a or path.startswith(a + "/") or path == a + ".data"
                                            for a in allowed):
            problems.append(f"wrote outside its target: {path}")
    for path, data in before.items():
        if path not in {a for a in allowed} and (workdir / path).is_file() and (workdir / path).read_bytes() != data:
            problems.append(f"changed a file it was not told to write: {path}")
    for outside in (workdir.parent / "escaped", workdir.parent / "escaped.npy", Path("/tmp/nnspec-abs.npy")):
        if outside.exists():
            problems.append(f"wrote outside its folder: {outside}")
    return problems
