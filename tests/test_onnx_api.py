"""The ONNX backend's API around the lowerings: weights in and out, opsets, names, files,
input checking, determinism across processes, and staying clear of torch."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from nnspec.backends.onnx import (
    MIN_OPSET,
    InputError,
    OpsetError,
    WeightError,
    default_opset,
    export_onnx,
    random_inputs,
    run_onnx,
    save_onnx,
    to_onnx,
)
from nnspec.backends.onnx.export import light_model, lower_graph, prepare
from nnspec.backends.onnx.lowering import Options
from nnspec.backends.onnx.weights import WeightDtypeWarning
from nnspec.backends.onnx.writer import write_prepared
from nnspec.builder import compile_graph, load_spec

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "specs" / "lenet5.yaml"


def spec(nodes: dict[str, Any], inputs: dict[str, Any], outputs: dict[str, str], **extra: Any) -> Any:
    return load_spec({"name": "t", "inputs": inputs, "nodes": nodes, "outputs": outputs, **extra})


MLP = {
    "inputs": {"x": {"shape": ["batch", 4]}},
    "nodes": {"fc": {"op": "linear", "in": "x", "out_features": 3}, "act": {"op": "relu", "in": "fc"}},
    "outputs": {"y": "act"},
}


def mlp_state(**changes: Any) -> dict[str, np.ndarray]:
    state = {"fc.weight": np.ones((3, 4), np.float32), "fc.bias": np.zeros(3, np.float32)}
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


# -- weights ---------------------------------------------------------------------------------


def test_weights_are_used_as_given() -> None:
    model = to_onnx(spec(**MLP), mlp_state())
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    np.testing.assert_allclose(run_onnx(model, {"x": x})["y"], np.maximum(x.sum(1, keepdims=True), 0).repeat(3, 1))


def test_missing_weight_is_named_with_a_hint() -> None:
    with pytest.raises(WeightError, match=r"missing weight 'fc.bias' \[3\] for node 'fc'.*did you mean 'fc.bais'"):
        to_onnx(spec(**MLP), mlp_state(**{"fc.bias": None, "fc.bais": np.zeros(3, np.float32)}))


def test_wrong_weight_shape_is_named() -> None:
    with pytest.raises(WeightError, match=r"weight 'fc.weight' is \[4, 3\], node 'fc' needs \[3, 4\]"):
        to_onnx(spec(**MLP), mlp_state(**{"fc.weight": np.ones((4, 3), np.float32)}))


def test_unexpected_weight_of_a_node_is_an_error_but_other_nodes_are_ignored() -> None:
    with pytest.raises(WeightError, match=r"unexpected weight 'fc\.scale': node 'fc' has no weight 'scale'"):
        to_onnx(spec(**MLP), mlp_state(**{"fc.scale": np.ones(3, np.float32)}))
    to_onnx(spec(**MLP), mlp_state(**{"decoder.weight": np.ones(3, np.float32)}))  # another signature's


def test_float64_weights_are_stored_as_float32() -> None:
    with pytest.warns(WeightDtypeWarning, match="the weights are float64; they are cast to the model's float32"):
        model = to_onnx(spec(**MLP), {k: v.astype(np.float64) for k, v in mlp_state().items()})
    assert {t.data_type for t in model.graph.initializer if t.name.startswith("fc.")} == {onnx.TensorProto.FLOAT}


def test_safetensors_file(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(mlp_state(), str(tmp_path / "w.safetensors"))
    from_file = to_onnx(spec(**MLP), tmp_path / "w.safetensors")
    assert from_file.SerializeToString() == to_onnx(spec(**MLP), mlp_state()).SerializeToString()
    with pytest.raises(WeightError, match="does not exist"):
        to_onnx(spec(**MLP), tmp_path / "nope.safetensors")


def test_initialisation_follows_pytorch_defaults() -> None:
    """Bounds and spreads of PyTorch's default initialisers, and zeroed padding rows."""
    s = spec({"emb": {"op": "embedding", "in": "ids", "num_embeddings": 300, "embedding_dim": 64, "padding_idx": 0},
              "fc": {"op": "linear", "in": "emb", "out_features": 128},
              "mha": {"op": "multi_head_attention", "in": "fc", "num_heads": 4},
              "rnn": {"op": "gru", "in": "mha", "hidden_size": 50},
              "ln": {"op": "layer_norm", "in": "rnn.output"}},
             {"ids": {"shape": ["batch", "seq"], "dtype": "int64"}}, {"y": "ln"})
    w = {t.name: onnx.numpy_helper.to_array(t) for t in to_onnx(s).graph.initializer}
    assert abs(w["emb.weight"][1:].std() - 1) < 0.02 and not w["emb.weight"][0].any()
    for name, bound in (("fc.weight", 1 / 8), ("fc.bias", 1 / 8), ("mha.in_proj_weight", math.sqrt(6 / (4 * 128))),
                        ("mha.out_proj.weight", 1 / math.sqrt(128)), ("rnn.weight_hh_l0", 1 / math.sqrt(50))):
        assert np.abs(w[name]).max() <= bound and np.abs(w[name]).max() > 0.9 * bound, name
        assert abs(w[name].std() - bound / math.sqrt(3)) < 0.1 * bound, name
    assert not w["mha.in_proj_bias"].any() and not w["mha.out_proj.bias"].any()
    assert (w["ln.weight"] == 1).all() and not w["ln.bias"].any()
    other_seed = {t.name: onnx.numpy_helper.to_array(t) for t in to_onnx(s, seed=1).graph.initializer}
    assert not np.array_equal(other_seed["fc.weight"], w["fc.weight"])


# -- opsets ----------------------------------------------------------------------------------


def test_opset_errors_are_clear() -> None:
    from nnspec.backends.onnx.opsets import check_forms, check_model_ops

    with pytest.raises(OpsetError, match=r"opset 10 is not supported: nnspec emits opsets 11 and newer"):
        to_onnx(LENET, opset=10)
    with pytest.raises(OpsetError, match=r"node 'mask' emits Trilu, which needs opset >= 14 \(supported: 14\.\.\d+\)"):
        check_model_ops(12, {"Trilu": "mask", "Add": "res"})
    with pytest.raises(OpsetError, match=r"node 'p' emits Shape with attribute 'start', which needs opset >= 15"):
        check_forms(13, [("Shape", "p", 1, ("start",))])
    with pytest.raises(OpsetError, match="Gelu, which needs opset >= 20"):
        to_onnx(LENET, opset=19, native_gelu=True)
    with pytest.raises(OpsetError, match="newer than the installed onnx package knows"):
        to_onnx(LENET, opset=onnx.defs.onnx_opset_version() + 1)
    with pytest.raises(OpsetError, match="Attention, which needs opset >= 23"):
        to_onnx(LENET, opset=22, native_attention=True)


def test_every_supported_opset_exports() -> None:
    for opset in range(MIN_OPSET, default_opset() + 1):
        model = to_onnx(LENET, opset=opset)
        assert model.opset_import[0].version == opset
        assert model.ir_version == onnx.helper.find_min_ir_version_for([model.opset_import[0]])
        run_onnx(model, random_inputs(model))


# -- names, metadata, files ------------------------------------------------------------------


def test_names_come_from_the_spec() -> None:
    g = compile_graph(load_spec(LENET))
    model = to_onnx(g)
    assert model.graph.name == "lenet5" and model.producer_name == "nnspec"
    assert model.doc_string.startswith("LeNet-5") and model.graph.doc_string == model.doc_string
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["logits"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 32, 32]
    assert [n.name for n in model.graph.node][:3] == ["c1/Conv", "a1/Tanh", "s2/AveragePool"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert '"num_classes": 10' in meta["nnspec.params"]


def test_an_output_named_like_an_input_is_renamed_and_recorded() -> None:
    s = spec({"step": {"op": "gru", "in": {"x": "x", "h0": "h"}, "hidden_size": 3}},
             {"x": {"shape": ["batch", 1, 2]}, "h": {"shape": [1, "batch", 3]}}, {"y": "step.output", "h": "step.h"})
    model = to_onnx(s)
    assert [o.name for o in model.graph.output] == ["y", "h_out"]
    assert {p.key: p.value for p in model.metadata_props}["nnspec.renamed_outputs"] == '{"h_out": "h"}'
    onnx.checker.check_model(model, full_check=True)


def test_an_input_returned_as_an_output_and_an_output_twice() -> None:
    s = spec({"act": {"op": "relu", "in": "x"}}, {"x": {"shape": [2]}}, {"same": "x", "a": "act", "b": "act"})
    model = to_onnx(s)
    onnx.checker.check_model(model, full_check=True)
    x = np.array([-1, 2], np.float32)
    out = run_onnx(model, {"x": x})
    np.testing.assert_array_equal(out["same"], x)
    np.testing.assert_array_equal(out["a"], out["b"])


def test_external_data_round_trip(tmp_path: Path) -> None:
    model = to_onnx(LENET)
    paths = save_onnx(model, tmp_path / "m.onnx", external_data=True)
    assert [p.name for p in paths] == ["m.onnx", "m.onnx.data"]
    assert (tmp_path / "m.onnx").stat().st_size < 20_000  # the weights are in m.onnx.data
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    feed = random_inputs(model)
    np.testing.assert_array_equal(run_onnx(str(tmp_path / "m.onnx"), feed)["logits"], run_onnx(model, feed)["logits"])
    export_onnx(LENET, tmp_path / "s.onnx", external_data=True)
    assert (tmp_path / "s.onnx.data").read_bytes() == (tmp_path / "m.onnx.data").read_bytes()
    for name in ("s.onnx", "m.onnx"):
        loaded = onnx.load(str(tmp_path / name))
        assert [onnx.numpy_helper.to_array(t).tobytes() for t in loaded.graph.initializer] == \
            [onnx.numpy_helper.to_array(t).tobytes() for t in model.graph.initializer]


def test_save_onnx_writes_what_protobuf_serialises(tmp_path: Path) -> None:
    """save_onnx streams the initializers; the bytes are still SerializeToString's, odd tensors included."""
    model = to_onnx(LENET)
    save_onnx(model, tmp_path / "plain.onnx")
    assert (tmp_path / "plain.onnx").read_bytes() == model.SerializeToString()
    first = model.graph.initializer[0]
    first.doc_string = "a field numbered after raw_data"
    first.metadata_props.add(key="k", value="v")
    model.graph.initializer.add(name="typed", dims=[3], data_type=onnx.TensorProto.FLOAT, float_data=[1, 2, 3])
    model.graph.initializer.add(name="empty", dims=[0], data_type=onnx.TensorProto.FLOAT, raw_data=b"")
    model.graph.initializer.add(name="int4", dims=[3], data_type=onnx.TensorProto.INT4, raw_data=b"\x12\x03")
    save_onnx(model, tmp_path / "odd.onnx")
    assert (tmp_path / "odd.onnx").read_bytes() == model.SerializeToString()
    model.graph.initializer[1].raw_data = b"\0" * 8  # fewer bytes than its dims say: written as it is
    save_onnx(model, tmp_path / "bad.onnx")
    assert (tmp_path / "bad.onnx").read_bytes() == model.SerializeToString()


def test_large_models_switch_to_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnspec.backends.onnx import writer

    monkeypatch.setattr(writer, "PROTOBUF_LIMIT", 100_000)  # lenet's 247 kB of weights count as "over 2 GB"
    assert [p.name for p in export_onnx(LENET, tmp_path / "m.onnx")] == ["m.onnx", "m.onnx.data"]
    assert [p.name for p in save_onnx(to_onnx(LENET), tmp_path / "n.onnx")] == ["n.onnx", "n.onnx.data"]
    lowered, arrays = prepare(LENET)
    assert writer.needs_external(lowered, arrays)
    write_prepared(lowered, arrays, tmp_path / "o.onnx", location="elsewhere.bin", data_path=tmp_path / "tmp.bin")
    light = onnx.load(str(tmp_path / "o.onnx"), load_external_data=False)
    assert "elsewhere.bin" in str(next(t for t in light.graph.initializer if t.name == "c3.weight"))
    assert (tmp_path / "tmp.bin").stat().st_size > 200_000 and not (tmp_path / "elsewhere.bin").exists()


# -- running ---------------------------------------------------------------------------------


def test_run_names_each_bad_input() -> None:
    model = to_onnx(LENET)
    good = np.zeros((2, 1, 32, 32), np.float32)
    with pytest.raises(InputError, match=r"input 'image': dim 3 must be 32 float32 \[batch, 1, 32, 32\], got "
                                         r"\[2, 1, 32, 31\]"):
        run_onnx(model, {"image": good[..., :31]})
    with pytest.raises(InputError, match=r"input 'image': expected float32 .* got float64"):
        run_onnx(model, {"image": good.astype(np.float64)})
    with pytest.raises(InputError, match="expected rank 4"):
        run_onnx(model, {"image": good[0]})
    with pytest.raises(InputError, match=r"unknown input 'imag' \(did you mean 'image'\?\)(.|\n)*missing input 'image'"):
        run_onnx(model, {"imag": good})


def test_run_checks_symbolic_dims_agree_across_inputs() -> None:
    s = spec({"s": {"op": "add", "in": ["a", "b"]}}, {"a": {"shape": ["n"]}, "b": {"shape": ["n"]}}, {"y": "s"})
    with pytest.raises(InputError, match="input 'b': dim 0 \\('n'\\) is 3, but 'n' is 2 in input 'a'"):
        run_onnx(to_onnx(s), {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)})


def test_random_inputs_respect_tables_and_masks() -> None:
    s = spec({"e": {"op": "embedding", "in": "ids", "num_embeddings": 7, "embedding_dim": 4},
              "a": {"op": "multi_head_attention", "in": {"query": "e", "key_padding_mask": "pad"}, "num_heads": 2}},
             {"ids": {"shape": ["batch", "seq"], "dtype": "int64"}, "pad": {"shape": ["batch", "seq"], "dtype": "bool"}},
             {"y": "a"})
    feed = random_inputs(to_onnx(s), {"batch": 50, "seq": 9})
    assert feed["ids"].shape == (50, 9) and feed["ids"].max() == 6 and feed["ids"].min() == 0
    assert not feed["pad"][:, 0].any() and feed["pad"].any()
    assert np.isfinite(run_onnx(to_onnx(s), feed)["y"]).all()


# -- determinism and imports -----------------------------------------------------------------

_SCRIPT = """
import hashlib, json, sys
from nnspec.backends.onnx import to_onnx
from nnspec.builder import load_spec
data = to_onnx(load_spec(sys.argv[1], json.loads(sys.argv[2]))).SerializeToString()
print(hashlib.sha256(data).hexdigest(), 'torch' in sys.modules)
"""
SMALL_GPT = '{"vocab": 40, "d_model": 16, "heads": 2, "layers": 2, "n_ctx": 32}'


def _fresh(spec_path: Path, hashseed: str) -> tuple[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(spec_path), SMALL_GPT], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    digest, torch_loaded = out.stdout.split()
    return digest, torch_loaded


def test_same_bytes_across_processes_and_no_torch() -> None:
    gpt = ROOT / "specs" / "gpt.yaml"
    first = _fresh(gpt, "1")
    assert first == _fresh(gpt, "2")
    assert first[1] == "False", "to_onnx without torch tensors must not import torch"


def test_lowered_structure_is_reusable() -> None:
    g = compile_graph(load_spec(LENET))
    a, b = lower_graph(g, Options(default_opset())), lower_graph(g, Options(default_opset()))
    assert a.nodes == b.nodes
    assert [n.proto().SerializeToString() for n in a.nodes] == [n.SerializeToString() for n in light_model(a).graph.node]
    assert list(a.weights) == ["c1.weight", "c1.bias", "c3.weight", "c3.bias", "c5.weight", "c5.bias", "f6.weight",
                               "f6.bias", "out.weight", "out.bias"]


@pytest.mark.slow
def test_a_model_over_2gb_uses_external_data(tmp_path: Path) -> None:
    """A 2.2 GB embedding table: streamed to model.onnx.data, loadable, checkable, runnable."""
    s = spec({"e": {"op": "embedding", "in": "ids", "num_embeddings": 720_000, "embedding_dim": 768}},
             {"ids": {"shape": ["batch", "seq"], "dtype": "int64"}}, {"y": "e"})
    paths = export_onnx(s, tmp_path / "big.onnx")
    assert [p.name for p in paths] == ["big.onnx", "big.onnx.data"]
    assert (tmp_path / "big.onnx").stat().st_size < 10_000 and paths[1].stat().st_size == 720_000 * 768 * 4
    onnx.checker.check_model(str(tmp_path / "big.onnx"), full_check=True)
    ids = np.array([[0, 719_999]])
    y = run_onnx(str(tmp_path / "big.onnx"), {"ids": ids})["y"]
    table = np.memmap(paths[1], dtype=np.float32, mode="r", shape=(720_000, 768))
    np.testing.assert_array_equal(y[0], table[[0, 719_999]])
