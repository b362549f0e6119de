"""``--emit-python``: the standalone source has the same state_dict keys and outputs as the
module `to_torch` builds, imports only torch, and matches the golden files (refresh them on
purpose with ``NNSPEC_UPDATE_GOLDEN=1``)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from test_torch_specs import DIMS, SMALL, SPECS, small

from nnspec.backends.pytorch import emit_python, to_torch
from nnspec.backends.pytorch.codegen import class_name
from nnspec.backends.pytorch.inputs import example_inputs
from nnspec.builder import compile_graph, load_spec

GOLDEN = Path("tests/golden")


def _load(source: str, tmp_path: Path, stem: str) -> ModuleType:
    path = tmp_path / f"{stem}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[stem] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[stem]
    return module


def test_class_names() -> None:
    assert class_name("lstm_seq2seq") == "LstmSeq2seq"
    assert class_name("lenet5") == "Lenet5"
    assert class_name("_x") == "X"


@pytest.mark.parametrize("entry", [(s, sig) for s in SPECS for sig in (None, *load_spec(f"specs/{s}.yaml").signatures)],
                         ids=str)
def test_emitted_module_equals_the_built_one(entry: tuple[str, str | None], tmp_path: Path) -> None:
    name, sig = entry
    built = small(name, sig)
    source = emit_python(f"specs/{name}.yaml", sig, overrides=SMALL[name], with_past=True)
    cls = getattr(_load(source, tmp_path, f"gen_{name}_{sig}"), class_name(name))
    emitted = cls().eval()
    assert list(emitted.state_dict()) == list(built.state_dict())
    emitted.load_state_dict(built.state_dict())
    for i, dims in enumerate(DIMS[1:]):
        x = example_inputs(built, dims, seed=i)
        got, want = emitted(*x), built(*x)
        for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,),
                        strict=True):
            assert torch.allclose(a, b, atol=1e-6, rtol=0)
    for method in built.signatures:  # the main class also carries each signature as a method
        x = example_inputs(built.signature(method), DIMS[1])
        got, want = getattr(emitted, method)(*x), getattr(built, method)(*x)
        for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,),
                        strict=True):
            assert torch.allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", SPECS)
def test_emitted_source_imports_only_torch(name: str) -> None:
    tree = ast.parse(emit_python(f"specs/{name}.yaml"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported == {"torch"}
    assert not any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes[-1] == class_name(name)  # the block classes first, then the model
    assert len(classes) == len(set(classes))


def test_emitted_initialisation_is_pytorch_default(tmp_path: Path) -> None:
    """Same seed, same weights: the generated __init__ builds layers as to_torch does."""
    name = "transformer"
    cls = getattr(_load(emit_python(f"specs/{name}.yaml", overrides=SMALL[name]), tmp_path, "gen_init"), class_name(name))
    torch.manual_seed(7)
    built = to_torch(f"specs/{name}.yaml", overrides=SMALL[name])
    torch.manual_seed(7)
    emitted = cls()
    for (k, a), (_, b) in zip(built.state_dict().items(), emitted.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_reserved_looking_names_survive_in_source(tmp_path: Path) -> None:
    spec = {"name": "odd", "inputs": {"input": {"shape": [2, 3]}},
            "nodes": {"getattr": {"op": "relu", "in": "input"}, "self": {"op": "linear", "in": "getattr", "out_features": 3},
                      "torch": {"op": "tanh", "in": "self"}},
            "outputs": {"y": "torch"}}
    emitted = _load(emit_python(spec), tmp_path, "gen_odd").Odd()
    built = to_torch(spec)
    emitted.load_state_dict(built.state_dict())
    x = torch.randn(2, 3)
    assert torch.equal(emitted(input=x), built(input=x))


@pytest.mark.parametrize("name", SPECS)
def test_golden_emit_python(name: str) -> None:
    source = emit_python(f"specs/{name}.yaml")
    path = GOLDEN / f"torch_{name}.py"
    if os.environ.get("NNSPEC_UPDATE_GOLDEN") == "1":
        path.write_text(source)
    assert path.exists(), f"no golden file {path}; create it with NNSPEC_UPDATE_GOLDEN=1"
    assert source == path.read_text(), f"{path} differs; if the change is intended, refresh with NNSPEC_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", ["gpt", "transformer"])
def test_emitted_source_reads_like_hand_written_pytorch(name: str) -> None:
    """One class per block, a ModuleList and a loop for each repeat, names from the spec, no fx temporaries."""
    source = emit_python(f"specs/{name}.yaml")
    assert "getattr(" not in source and "getitem" not in source and "unflatten_" not in source
    assert "torch.nn.ModuleList([" in source and "for layer in self." in source


@pytest.mark.parametrize("name", ["gpt", "transformer", "llama"])
def test_cache_signature_loops_over_the_layers(name: str) -> None:
    """The key/value-cache signature loops too: the layers zipped with their past, taken as
    ``*past_key_values`` and returned as ``*present``, not one argument and one call per layer."""
    source = emit_python(f"specs/{name}.yaml", with_past=True)
    assert "past_key_values_0" not in source and "*past_key_values: torch.Tensor" in source
    assert re.search(r"for layer, \w*key, \w*value(, \w+)* in zip\(\s*self\.", source) and ", *present" in source


@pytest.mark.parametrize(("name", "most"), [("gpt", 150), ("transformer", 250)])
def test_emitted_line_budget(name: str, most: int) -> None:
    """The whole file, every signature the spec declares included: nanoGPT-like budgets for GPT-2
    small and the Transformer base. The derived cache methods are there only on request, and the
    file then stays within half as much again."""
    lines = emit_python(f"specs/{name}.yaml").splitlines()
    assert len(lines) <= most, len(lines)
    cached = emit_python(f"specs/{name}.yaml", with_past=True).splitlines()
    assert len(lines) < len(cached) <= 1.5 * most, len(cached)
    assert "def with_past(" in "\n".join(cached) and "def with_past(" not in "\n".join(lines)


def test_signatures_call_each_other_and_blocks_share_methods() -> None:
    """A signature inside another is called (forward = decode(encode)); a block method that would
    repeat another is not written twice."""
    source = emit_python("specs/transformer.yaml", with_past=True)
    classes = {c.name: c for c in ast.parse(source).body if isinstance(c, ast.ClassDef)}
    methods = {f.name: ast.get_source_segment(source, f) or "" for f in classes["Transformer"].body
               if isinstance(f, ast.FunctionDef)}
    assert "self.encode(src, src_pad)" in methods["forward"] and "return self.decode(tgt, " in methods["forward"]
    layer = [f.name for f in classes["DecoderLayer"].body if isinstance(f, ast.FunctionDef)]
    assert "decode_with_past" not in layer and "with_past" in layer  # decode_with_past would be with_past again


def test_emitted_files_are_ruff_clean() -> None:
    """The golden files (the emitted source of every seed spec, see above) pass the repository's ruff rules."""
    ruff = Path(sys.executable).with_name("ruff")
    paths = [str(GOLDEN / f"torch_{name}.py") for name in SPECS]
    done = subprocess.run([str(ruff), "check", "--no-cache", *paths], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_emit_python_is_deterministic() -> None:
    assert emit_python("specs/bert.yaml") == emit_python("specs/bert.yaml")


def _classes(source: str) -> list[str]:
    return [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]


def _blocks_used(source: Any) -> set[str]:
    """The names of the block definitions the spec's main graph calls (nested calls included)."""
    return {call.block for call in compile_graph(load_spec(source)).graph["calls"].values()}


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "vgg16", "unet"])
def test_one_class_per_block_definition(name: str) -> None:
    """Calls of a block at other widths and strides share one class whose constructor takes what
    differs (torchvision's ``Bottleneck(inplanes, planes, stride)``), not one class per configuration."""
    source = emit_python(f"specs/{name}.yaml")
    blocks = _blocks_used(f"specs/{name}.yaml")
    assert len(blocks) > 1
    assert sorted(_classes(source)) == sorted([*map(class_name, blocks), class_name(name)])


def test_bottleneck_takes_its_widths_and_stride() -> None:
    """The arguments are named after the block's params (``${out_c}``) or the width of its input, the
    projection shortcut that only some calls have is a flag, and a repeat of equal copies is one loop."""
    source = emit_python("specs/resnet50.yaml")
    assert "def __init__(self, in_channels: int, out_c: int, stride: int, downsample: bool = False) -> None:" in source
    assert "self.downsample = Projection(in_channels, out_c * 4, stride) if downsample else None" in source
    assert "if self.downsample is not None:" in source
    assert "self.layer2 = BottleneckStage(256, 128, 2, 4)" in source
    assert "for _ in range(blocks - 1)" in source


RES1D = {
    "name": "res1d_net",
    "doc": "A small 1-D residual network over a multichannel signal.",
    "inputs": {"wave": {"shape": ["batch", 4, 64]}},
    "blocks": {
        "res1d": {
            "doc": "Two convolutions and a shortcut, projected where the width or the stride changes.",
            "params": {"c": None, "stride": 1, "k": 3},
            "inputs": ["x"],
            "nodes": {
                "conv1": {"op": "conv1d", "in": "x", "out_channels": "${c}", "kernel_size": "${k}",
                          "stride": "${stride}", "padding": "${k // 2}"},
                "act": {"op": "gelu", "in": "conv1"},
                "conv2": {"op": "conv1d", "in": "act", "out_channels": "${c}", "kernel_size": "${k}",
                          "padding": "${k // 2}"},
                "skip": {"op": "conv1d", "in": "x", "out_channels": "${c}", "kernel_size": 1, "stride": "${stride}",
                         "when": "${stride != 1 or x.channels != c}"},
                "add": {"op": "add", "in": ["conv2", "skip"]},
            },
            "outputs": {"y": "add"},
        },
        "stage": {
            "doc": "`n` blocks of width `c`; the first one strides.",
            "params": {"c": None, "n": None, "stride": 2},
            "inputs": ["x"],
            "nodes": {"blocks": {"op": "res1d", "in": "x", "c": "${c}", "stride": "${stride}", "repeat": "${n}"},
                      "norm": {"op": "batch_norm", "in": "blocks"}},
            "outputs": {"y": "norm"},
        },
    },
    "nodes": {
        "b1": {"op": "res1d", "in": "wave", "c": 8, "k": 5},
        "b2": {"op": "res1d", "in": "b1", "c": 16, "stride": 2},
        "b3": {"op": "res1d", "in": "b2", "c": 16, "repeat": 2},
        "s1": {"op": "stage", "in": "b3", "c": 24, "n": 1, "stride": 1},
        "s2": {"op": "stage", "in": "s1", "c": 32, "n": 3},
        "pool": {"op": "mean", "in": "s2", "dim": [2]},
        "head": {"op": "linear", "in": "pool", "out_features": 3},
    },
    "outputs": {"logits": "head"},
}
"""A spec of another family: one block at three widths, two kernel sizes and two strides, its shortcut
projection present in some calls only, and a stage block whose repeat holds one to three copies."""


def test_block_at_other_widths_and_strides_is_one_class(tmp_path: Path) -> None:
    source = emit_python(RES1D)
    assert _classes(source) == ["Res1d", "Stage", "Res1dNet"]
    cls = _load(source, tmp_path, "gen_res1d").Res1dNet
    torch.manual_seed(0)
    built = to_torch(RES1D).eval()
    emitted = cls().eval()
    assert list(emitted.state_dict()) == list(built.state_dict())
    with torch.no_grad():  # running statistics other than their initial 0 and 1 too (variances stay positive)
        for tensor in built.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
    emitted.load_state_dict(built.state_dict())
    x = torch.randn(2, 4, 64)
    assert torch.allclose(emitted(x), built(x), atol=1e-6, rtol=0)
    assert "skip: bool = False" in source and "if self.skip is not None:" in source


def test_cache_methods_are_written_once_and_loop() -> None:
    """The derived cache methods: a block method takes only what it reads and returns only what it
    computes (no ``None`` for the layer output cross_kv does not make), the same code under two names is
    one method, a signature whose graph is another's calls it, and independent calls of the copies of a
    repeat (each layer's cross-attention keys from one memory) are a loop."""
    source = emit_python("specs/transformer.yaml", with_past=True)
    classes = {c.name: c for c in ast.parse(source).body if isinstance(c, ast.ClassDef)}

    def methods(cls: str) -> dict[str, str]:
        return {f.name: ast.get_source_segment(source, f) or "" for f in classes[cls].body
                if isinstance(f, ast.FunctionDef)}

    layer, top = methods("DecoderLayer"), methods("Transformer")
    assert "decode_cross_kv" not in layer and "def cross_kv(self, memory: torch.Tensor)" in layer["cross_kv"]
    assert not re.search(r"return None\b|, None$", source, re.MULTILINE)
    assert top["decode_with_past"].rstrip().endswith(
        "return self.with_past(tgt, src_pad, tgt_pad, position_ids, *past_key_values)")
    assert "for layer in self.decoder:\n            present += layer.cross_kv(memory)" in top["decode_cross_kv"]
    assert "return self.decode_cross_kv(" in top["cross_kv"]
    assert "decoder_0" not in source


def test_build_with_past_writes_the_cache_methods(tmp_path: Path) -> None:
    """`nnspec build --emit-python F --with-past` is emit_python(..., with_past=True); alone it is a usage error."""
    from click.testing import CliRunner

    from nnspec.backends.cli import cli

    small = ["--set", "layers=2", "--set", "d_model=32", "--set", "heads=2", "--set", "vocab=50"]
    plain, cached = tmp_path / "plain.py", tmp_path / "cached.py"
    for out, flags in ((plain, []), (cached, ["--with-past"])):
        run = CliRunner().invoke(cli, ["build", "specs/gpt.yaml", "--emit-python", str(out), *small, *flags])
        assert run.exit_code == 0, run.output
    assert "def with_past(" in cached.read_text() and "def with_past(" not in plain.read_text()
    overrides = {"layers": 2, "d_model": 32, "heads": 2, "vocab": 50}
    assert cached.read_text() == emit_python("specs/gpt.yaml", overrides=overrides, with_past=True)
    run = CliRunner().invoke(cli, ["build", "specs/gpt.yaml", "--with-past", *small])
    assert run.exit_code == 2 and "--emit-python" in run.output
