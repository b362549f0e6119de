"""The transformer zoo: specs/vit_b16.yaml against torchvision's VisionTransformer and specs/llama.yaml
against Hugging Face's LlamaForCausalLM (both re-written by hand in zoo_references.py).

At reduced size, the reference's weights (biases and norm weights randomised first, so that zero or
one initialisers prove nothing) are copied into the nnspec module by an explicit name map and the
outputs compared in eval mode; onnxruntime runs the exported model with the same weights. At full
size, the parameter counts equal the published ones (counted on the meta device). The diagram renders.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from zoo_references import LlamaForCausalLM, VisionTransformer, param_count

from nnspec.backends.graphviz.commands import render as render_command
from nnspec.backends.onnx import run_onnx, to_onnx
from nnspec.backends.pytorch import to_torch
from nnspec.builder import compile_graph, load_spec
from nnspec.builder import param_count as spec_param_count

VIT = "specs/vit_b16.yaml"
LLAMA = "specs/llama.yaml"

VIT_SMALL: dict[str, Any] = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 16,
                             "mlp_dim": 24, "num_classes": 10}
LLAMA_SMALL: dict[str, Any] = {"vocab_size": 50, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "num_key_value_heads": 2}
TOL = 1e-4


def _randomise(module: nn.Module, names: tuple[str, ...]) -> None:
    """Draw every parameter whose name ends with one of `names` from N(0, 0.5): biases, norm weights."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(names):
                p.normal_(0.0, 0.5)


def _transplant(model: nn.Module, ref_state: dict[str, torch.Tensor], to_ref: dict[str, Any]) -> None:
    """Load the reference's weights into `model`: `to_ref` maps each of our keys to a reference key, or to a
    function of the reference's state_dict (concatenations). Every key on both sides is used once."""
    ours = model.state_dict()
    assert set(to_ref) == set(ours), sorted(set(to_ref) ^ set(ours))
    used = {v for v in to_ref.values() if isinstance(v, str)}
    new = {k: (ref_state[v] if isinstance(v, str) else v(ref_state)) for k, v in to_ref.items()}
    assert all(new[k].shape == ours[k].shape for k in ours), [(k, new[k].shape, ours[k].shape) for k in ours
                                                              if new[k].shape != ours[k].shape]
    model.load_state_dict(new)
    assert used <= set(ref_state)


# --- ViT-B/16 ----------------------------------------------------------------------------------

def vit_map(layers: int) -> dict[str, Any]:
    """Our state_dict keys to torchvision's."""
    keys: dict[str, Any] = {"conv_proj.weight": "conv_proj.weight", "conv_proj.bias": "conv_proj.bias",
                            "class_token.weight": "class_token", "pos_embedding.weight": "encoder.pos_embedding",
                            "ln.weight": "encoder.ln.weight", "ln.bias": "encoder.ln.bias",
                            "head.weight": "heads.head.weight", "head.bias": "heads.head.bias"}
    per_layer = {"ln_1": "ln_1", "self_attention": "self_attention", "ln_2": "ln_2", "fc1": "mlp.0", "fc2": "mlp.3"}
    weights = {"self_attention": ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")}
    for i in range(layers):
        for ours, theirs in per_layer.items():
            for w in weights.get(ours, ("weight", "bias")):
                keys[f"encoder.{i}.{ours}.{w}"] = f"encoder.layers.{i}.{theirs}.{w}"
    return keys


def vit_pair(seed: int = 0, **overrides: Any) -> tuple[nn.Module, VisionTransformer]:
    """The nnspec ViT and the reference at reduced size, with the reference's (randomised) weights in both."""
    cfg = {**VIT_SMALL, **overrides}
    torch.manual_seed(seed)
    ref = VisionTransformer(cfg["image_size"], cfg["patch_size"], cfg["num_layers"], cfg["num_heads"], cfg["hidden_dim"],
                            cfg["mlp_dim"], cfg["num_classes"]).eval()
    _randomise(ref, ("bias", "ln_1.weight", "ln_2.weight", "ln.weight", "class_token"))
    model = to_torch(load_spec(VIT, cfg)).eval()
    _transplant(model, ref.state_dict(), vit_map(cfg["num_layers"]))
    return model, ref


@pytest.mark.parametrize("overrides", [{}, {"num_layers": 3, "num_heads": 4, "image_size": 24, "patch_size": 4}],
                         ids=["2x8x8", "3x4x4"])
def test_vit_matches_torchvision_reference(overrides: dict[str, Any]) -> None:
    model, ref = vit_pair(**overrides)
    size = {**VIT_SMALL, **overrides}["image_size"]
    for batch in (1, 3):
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            got, want = model(x), ref(x)
        assert got.shape == want.shape == (batch, 10)
        assert (got - want).abs().max().item() <= TOL


def test_vit_comparison_sees_a_changed_weight() -> None:
    model, ref = vit_pair()
    with torch.no_grad():
        ref.class_token[0, 0, 0] += 0.5
        x = torch.randn(2, 3, 32, 32)
        assert (model(x) - ref(x)).abs().max().item() > 1e-3


def test_vit_onnx_parity() -> None:
    model, ref = vit_pair()
    onnx_model = to_onnx(load_spec(VIT, VIT_SMALL), state_dict=model.state_dict())
    for batch in (1, 3):  # the class token is expanded to the symbolic batch
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32), dtype=np.float32)
        (got,) = run_onnx(onnx_model, {"image": x}).values()
        with torch.no_grad():
            ours, want = model(torch.from_numpy(x)).numpy(), ref(torch.from_numpy(x)).numpy()
        assert np.abs(got - ours).max() <= TOL
        assert np.abs(got - want).max() <= TOL


def test_vit_b16_parameter_count() -> None:
    assert spec_param_count(compile_graph(load_spec(VIT))) == 86_567_656
    with torch.device("meta"):
        assert param_count(VisionTransformer()) == 86_567_656


# --- Llama (TinyLlama-1.1B's configuration) ----------------------------------------------------

def llama_map(layers: int) -> dict[str, Any]:
    """Our state_dict keys to Hugging Face's; the attention's packed in-projection is q, k, v stacked by rows."""
    keys: dict[str, Any] = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
                            "lm_head.weight": "lm_head.weight"}
    for i in range(layers):
        hf = f"model.layers.{i}"

        def qkv(sd: dict[str, torch.Tensor], hf: str = hf) -> torch.Tensor:
            return torch.cat([sd[f"{hf}.self_attn.{p}_proj.weight"] for p in "qkv"])

        keys[f"layers.{i}.self_attn.in_proj_weight"] = qkv
        keys[f"layers.{i}.self_attn.out_proj.weight"] = f"{hf}.self_attn.o_proj.weight"
        for norm in ("input_layernorm", "post_attention_layernorm"):
            keys[f"layers.{i}.{norm}.weight"] = f"{hf}.{norm}.weight"
        for proj in ("gate_proj", "up_proj", "down_proj"):
            keys[f"layers.{i}.{proj}.weight"] = f"{hf}.mlp.{proj}.weight"
    return keys


def llama_pair(seed: int = 0, **overrides: Any) -> tuple[nn.Module, LlamaForCausalLM]:
    """The nnspec Llama and the reference at reduced size, with the reference's weights (norms randomised) in both."""
    cfg = {**LLAMA_SMALL, **overrides}
    torch.manual_seed(seed)
    ref = LlamaForCausalLM(**cfg).eval()
    _randomise(ref, ("layernorm.weight", "norm.weight"))
    model = to_torch(load_spec(LLAMA, cfg)).eval()
    q, k = ref.state_dict()["model.layers.0.self_attn.q_proj.weight"], ref.state_dict()["model.layers.0.self_attn.k_proj.weight"]
    assert k.shape[0] * cfg["num_attention_heads"] == q.shape[0] * cfg["num_key_value_heads"]  # grouped
    _transplant(model, ref.state_dict(), llama_map(cfg["num_hidden_layers"]))
    return model, ref


@pytest.mark.parametrize("overrides", [{}, {"num_key_value_heads": 1, "num_hidden_layers": 1}, {"num_key_value_heads": 4}],
                         ids=["gqa2", "mqa", "mha"])
def test_llama_matches_hugging_face_reference(overrides: dict[str, Any]) -> None:
    model, ref = llama_pair(**overrides)
    for batch, seq in ((1, 1), (2, 7), (3, 12)):
        ids = torch.randint(0, LLAMA_SMALL["vocab_size"], (batch, seq))
        with torch.no_grad():
            got, want = model(ids), ref(ids)
        assert got.shape == want.shape == (batch, seq, LLAMA_SMALL["vocab_size"])
        assert (got - want).abs().max().item() <= TOL


def test_llama_comparison_sees_a_changed_weight() -> None:
    model, ref = llama_pair()
    with torch.no_grad():
        ref.get_parameter("model.layers.1.self_attn.k_proj.weight")[0, 0] += 0.5
        ids = torch.randint(0, 50, (2, 6))
        assert (model(ids) - ref(ids)).abs().max().item() > 1e-3


def test_llama_onnx_parity() -> None:
    model, ref = llama_pair()
    onnx_model = to_onnx(load_spec(LLAMA, LLAMA_SMALL), state_dict=model.state_dict())
    for batch, seq in ((1, 1), (2, 9)):
        ids = np.random.default_rng(seq).integers(0, 50, (batch, seq), dtype=np.int64)
        (got,) = run_onnx(onnx_model, {"input_ids": ids}).values()
        with torch.no_grad():
            ours, want = model(torch.from_numpy(ids)).numpy(), ref(torch.from_numpy(ids)).numpy()
        assert np.abs(got - ours).max() <= TOL
        assert np.abs(got - want).max() <= TOL


def test_tinyllama_parameter_count() -> None:
    assert spec_param_count(compile_graph(load_spec(LLAMA))) == 1_100_048_384
    with torch.device("meta"):
        assert param_count(LlamaForCausalLM()) == 1_100_048_384


def test_llama_layer_is_ten_nodes() -> None:
    """rms_norm, attention, add, rms_norm, gate, up, silu, mul, down, add: no workaround nodes."""
    one, two = (len(compile_graph(load_spec(LLAMA, {"num_hidden_layers": n}))) for n in (1, 2))
    assert two - one == 10


# --- diagrams ----------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("spec,small", [(VIT, VIT_SMALL), (LLAMA, LLAMA_SMALL)], ids=["vit_b16", "llama"])
def test_diagram_renders(spec: str, small: dict[str, Any], tmp_path: Path) -> None:
    sets = [a for k, v in small.items() for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(render_command, [spec, "-o", str(tmp_path / "x.svg"), *sets])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.svg").read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
