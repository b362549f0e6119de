"""Deployable ONNX: every spec at its lowest opset and at the default one; linear weights stored
as the (in, out) initializers their MatMuls read; int8 (onnxruntime's dynamic quantizer) and
float16 variants that load and keep a stated parity; fp16 weights never cast silently."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from op_cases import SMALL_SPECS

from nnspec.backends import pytorch
from nnspec.backends.cli import cli
from nnspec.backends.onnx import random_inputs, run_onnx, session, to_onnx
from nnspec.backends.onnx.deploy import TOLERANCES, head_matmuls, quantize_int8
from nnspec.backends.onnx.export import minimum_opset
from nnspec.backends.onnx.opsets import FLOOR, MIN_OPSET
from nnspec.backends.onnx.weights import WeightDtypeWarning
from nnspec.builder import compile_graph, load_spec

SPECS = Path(__file__).resolve().parents[1] / "specs"
SPEC_NAMES = sorted(p.stem for p in SPECS.glob("*.yaml"))
SIZES = {"batch": 2, "seq": 5, "src_len": 5, "tgt_len": 4, "h": 37, "w": 30}


def _spec(name: str) -> Any:
    return load_spec(SPECS / f"{name}.yaml", SMALL_SPECS.get(name, {}))


def _worst(module: torch.nn.Module, model: onnx.ModelProto, seed: int = 0) -> float:
    """max |onnx - torch| / max(1, max |torch|) over the outputs, on random inputs."""
    feed = random_inputs(model, SIZES, seed=seed)
    got = run_onnx(session(model), feed)
    with torch.no_grad():
        ref = module(**{k: torch.from_numpy(v) for k, v in feed.items()})
    refs = ref if isinstance(ref, tuple) else (ref,)
    worst = 0.0
    for y, r in zip(got.values(), refs, strict=True):
        r = r.numpy()
        worst = max(worst, float(np.abs(y.astype(np.float64) - r).max()) / max(1.0, float(np.abs(r).max())))
    return worst


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_spec_at_its_lowest_and_default_opset(name: str) -> None:
    torch.manual_seed(0)
    spec = _spec(name)
    module = pytorch.to_torch(spec).eval()
    state = module.state_dict()
    g = compile_graph(spec)
    lowest = minimum_opset(g)
    assert MIN_OPSET <= lowest <= FLOOR
    default = to_onnx(g, state)
    assert default.opset_import[0].version == max(FLOOR, lowest)
    for model in (default, to_onnx(g, state, opset=lowest)):
        onnx.checker.check_model(model, full_check=True)
        assert _worst(module, model) <= 1e-4, (name, model.opset_import[0].version)


def _small(name: str) -> tuple[torch.nn.Module, Any]:
    torch.manual_seed(0)
    spec = _spec(name)
    return pytorch.to_torch(spec).eval(), spec


def _weight_matmuls(model: onnx.ModelProto) -> tuple[int, int]:
    """(MatMuls reading an initializer, MatMuls reading a transposed initializer)."""
    inits = {t.name for t in model.graph.initializer}
    transposed = {n.output[0] for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in inits}
    mm = [n for n in model.graph.node if n.op_type == "MatMul"]
    return sum(n.input[1] in inits for n in mm), sum(n.input[1] in transposed for n in mm)


def test_linear_weights_reach_their_matmuls_as_initializers() -> None:
    module, spec = _small("bert")
    model = to_onnx(spec, module.state_dict())
    direct, behind = _weight_matmuls(model)
    # two layers x (packed qkv, out proj, intermediate, output) + the MLM transform; the decoder is tied
    # to the word embeddings, which a Gather reads as they are, so it keeps its Transpose
    assert (direct, behind) == (9, 1)
    props = {p.key: p.value for p in model.metadata_props}
    transposed = json.loads(props["nnspec.transposed_weights"])
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    state = module.state_dict()
    for key in transposed:
        np.testing.assert_array_equal(inits[key], state[key].numpy().T)
    assert "word_embeddings.weight" not in transposed and "pooler.weight" not in transposed  # Gather; Gemm


HEADS = {"bert": ["mlm_transform/MatMul", "nsp/Gemm", "pooler/Gemm"], "gpt": [], "vit_b16": ["head/Gemm"]}
"""The weight MatMuls outside the repeated trunk (GPT's LM head is tied to the embeddings: a
Gather reads them, so the quantizer never sees a weight there)."""


@pytest.mark.parametrize("name", sorted(HEADS))
def test_int8_quantises_every_trunk_matmul_keeps_the_heads_float_and_parity(name: str) -> None:
    module, spec = _small(name)
    fp32 = to_onnx(spec, module.state_dict())
    int8 = to_onnx(spec, module.state_dict(), quantize="int8")
    ops = [n.op_type for n in int8.graph.node]
    direct, _ = _weight_matmuls(fp32)
    gemms = sum(n.op_type == "Gemm" for n in fp32.graph.node)  # the quantizer makes each a MatMul
    assert sorted(head_matmuls(fp32)) == HEADS[name]
    assert ops.count("MatMulInteger") == direct + gemms - len(HEADS[name]) and direct > 0
    quantised = [n.name for n in int8.graph.node if n.op_type == "MatMulInteger"]
    assert not [q for q in quantised if q.startswith(tuple(HEADS[name]))]
    everything = quantize_int8(fp32, exclude=())
    assert [n.op_type for n in everything.graph.node].count("MatMulInteger") == direct + gemms
    assert int8.opset_import[0].version == fp32.opset_import[0].version == FLOOR  # DequantizeLinear-13 runs
    assert {p.key for p in int8.metadata_props} >= {"nnspec.params"} and int8.producer_name == "nnspec"
    assert _worst(module, int8) <= TOLERANCES["int8"]


@pytest.mark.parametrize("name", ["bert", "gpt", "resnet50"])
def test_float16_keeps_norms_in_float32_and_parity(name: str) -> None:
    module, spec = _small(name)
    fp16 = to_onnx(spec, module.state_dict(), dtype="float16")
    floats = {t.data_type for t in fp16.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT)}
    assert onnx.TensorProto.FLOAT16 in floats
    assert all(i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for i in [*fp16.graph.input, *fp16.graph.output])
    casts = {n.input[0] for n in fp16.graph.node if n.op_type == "Cast"}
    for node in fp16.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):  # fed through a Cast to float32
            assert node.input[0] in {o for n in fp16.graph.node if n.op_type == "Cast" for o in n.output}, node.name
    assert casts
    assert _worst(module, fp16) <= TOLERANCES["float16"]


def test_fp16_weights_are_never_cast_silently() -> None:
    module, spec = _small("gpt")
    half = {k: v.half() for k, v in module.state_dict().items()}
    with pytest.warns(WeightDtypeWarning, match="the weights are float16; they are cast to the model's float32"):
        to_onnx(spec, half)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_onnx(spec, module.state_dict())  # float32 weights: nothing to say


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_export_and_check_variants(tmp_path: Path) -> None:
    sets = [a for k, v in SMALL_SPECS["bert"].items() for a in ("--set", f"{k}={v}")]
    for flag, value in (("--quantize", "int8"), ("--dtype", "float16")):
        out = tmp_path / f"{value}.onnx"
        result = _invoke("export", "specs/bert.yaml", flag, value, "-o", str(out), *sets)
        assert result.exit_code == 0, result.output
        assert f"{value} (" in result.stderr and "opset 17" in result.stderr
        run_onnx(str(out), random_inputs(onnx.load(str(out)), SIZES))
        result = _invoke("check", "specs/bert.yaml", flag, value, "--json", *sets)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["variant"] == value and report["tolerance"] == TOLERANCES[value]
    result = _invoke("check", "specs/bert.yaml", "--quantize", "int8", "--tolerance", "1e-9", *sets)
    assert result.exit_code == 1 and "differ on" in result.stderr
    result = _invoke("check", "specs/lenet5.yaml", "--opset", "11")
    assert result.exit_code == 0, result.output


def test_cli_says_when_it_casts_fp16_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    module, _ = _small("gpt")
    half = tmp_path / "half.safetensors"
    save_file({k: v.half().contiguous() for k, v in module.state_dict().items()}, str(half))
    sets = [a for k, v in SMALL_SPECS["gpt"].items() for a in ("--set", f"{k}={v}")]
    result = _invoke("export", "specs/gpt.yaml", "--weights", str(half), "-o", str(tmp_path / "m.onnx"), *sets)
    assert result.exit_code == 0, result.output
    assert "note: the weights are float16; they are cast to the model's float32 (export with --dtype float16" in result.stderr


def test_weights_from_a_pytorch_state_dict_export_run_and_check(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    module, _ = _small("gpt")
    state = module.state_dict()
    torch.save(state, tmp_path / "w.pt")
    save_file({k: v.contiguous() for k, v in state.items() if not k.startswith("lm_head")}, str(tmp_path / "w.safetensors"))
    sets = [a for k, v in SMALL_SPECS["gpt"].items() for a in ("--set", f"{k}={v}")]
    inits = []
    for weights in ("w.pt", "w.safetensors"):
        out = tmp_path / f"{weights}.onnx"
        result = _invoke("export", "specs/gpt.yaml", "--weights", str(tmp_path / weights), "-o", str(out), *sets)
        assert result.exit_code == 0, result.output
        inits.append({t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer})
    assert inits[0].keys() == inits[1].keys() and all(np.array_equal(inits[0][k], inits[1][k]) for k in inits[0])
    result = _invoke("run", "specs/gpt.yaml", "--weights", str(tmp_path / "w.pt"), "--random", "--dim", "batch=1", *sets)
    assert result.exit_code == 0, result.output
    result = _invoke("check", "specs/gpt.yaml", "--weights", str(tmp_path / "w.pt"), "--json", "--seed", "7", *sets)
    assert result.exit_code == 0, result.output
    assert all(r["diff"] <= 1e-4 * r["scale"] for r in json.loads(result.stdout)["outputs"].values())


def test_check_says_when_it_casts_fp16_weights_and_uses_them(tmp_path: Path) -> None:
    module, _ = _small("gpt")
    torch.save({k: v.half() for k, v in module.state_dict().items()}, tmp_path / "half.pt")
    with pytest.warns(WeightDtypeWarning, match="the weights are float16; they are cast to the model's float32"):
        to_onnx(_spec("gpt"), tmp_path / "half.pt")
    sets = [a for k, v in SMALL_SPECS["gpt"].items() for a in ("--set", f"{k}={v}")]
    result = _invoke("check", "specs/gpt.yaml", "--weights", str(tmp_path / "half.pt"), *sets)
    assert result.exit_code == 0, result.output
    assert "note: the weights are float16; they are cast to the model's float32 (export with --dtype float16" in result.stderr
    absent = _invoke("check", "specs/gpt.yaml", "--weights", str(tmp_path / "absent.pt"), *sets)
    assert absent.exit_code == 1 and "absent.pt" in absent.stderr and "Traceback" not in absent.output


def test_a_pickle_that_is_not_a_state_dict_is_one_error_and_no_file(tmp_path: Path) -> None:
    module, _ = _small("lenet5")
    torch.save(module, tmp_path / "module.pt")
    out = tmp_path / "m.onnx"
    for command in (["export", "specs/lenet5.yaml", "-o", str(out)], ["check", "specs/lenet5.yaml"],
                    ["run", "specs/lenet5.yaml", "--random"]):
        result = _invoke(*command, "--weights", str(tmp_path / "module.pt"))
        assert result.exit_code == 1, (command, result.output)
        assert "module.pt: not a PyTorch state_dict nnspec will load (only tensors are unpickled" in result.stderr
        assert "Unsupported global" in result.stderr and "Traceback" not in result.output
    assert not out.exists()
