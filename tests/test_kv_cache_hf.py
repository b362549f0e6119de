"""Cached generation against Hugging Face's own `generate` (with its cache): GPT-2 through the
shipped weight map and Llama through a test-local name map, both with random weights built
from configs (there is no hub). Greedy tokens, and left-padded batches against HF's
attention_mask, in PyTorch and onnxruntime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from test_zoo_transformers import llama_map

from nnspec.backends import to_onnx
from nnspec.backends.onnx.generate import generate_onnx
from nnspec.backends.pytorch import generate, to_torch
from nnspec.backends.weightmap import import_weights
from nnspec.builder import load_spec

transformers = pytest.importorskip("transformers")  # the test extras install it

GPT_SETS = {"vocab": 211, "n_ctx": 64, "d_model": 32, "layers": 2, "heads": 4, "dropout": 0.0}
LLAMA_SETS = {"vocab_size": 97, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2}
PROMPTS = [[5, 17, 33, 2, 90, 41, 7], [12, 13], [50, 3, 3, 9]]
NEW = 12


def _perturb(model: torch.nn.Module) -> None:
    """Biases and norm scales of their own (zeros and ones would hide a map that forgets them)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name or "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def _gpt2() -> tuple[Any, torch.nn.Module, Any]:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=211, n_positions=64)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    _perturb(hf)
    spec = load_spec("specs/gpt.yaml", GPT_SETS)
    state = import_weights(spec, dict(hf.state_dict()), "specs/maps/gpt2_hf.yaml").state_dict
    ours = to_torch(spec).eval()
    ours.load_state_dict(state)
    return hf, ours, spec


def _llama() -> tuple[Any, torch.nn.Module, Any]:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    _perturb(hf)
    spec = load_spec("specs/llama.yaml", LLAMA_SETS)
    ours = to_torch(spec).eval()
    ref = hf.state_dict()
    ours.load_state_dict({k: (ref[v] if isinstance(v, str) else v(ref)) for k, v in llama_map(2).items()})
    return hf, ours, spec


def _hf_generate(hf: Any, prompts: list[list[int]]) -> list[list[int]]:
    """HF's greedy tokens with its cache, prompts left-padded with an attention mask."""
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                          use_cache=True, pad_token_id=0, eos_token_id=None)
    return out[:, width:].tolist()


@pytest.mark.parametrize("make", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_cached_greedy_tokens_equal_hugging_face(make: Any) -> None:
    hf, ours, spec = make()
    models = {None: to_onnx(spec, ours.state_dict()), "with_past": to_onnx(spec, ours.state_dict(), signature="with_past")}
    for prompt in PROMPTS:  # one at a time
        want = _hf_generate(hf, [prompt])
        got = generate(ours, prompt=torch.tensor([prompt]), max_new_tokens=NEW)
        assert got[:, len(prompt):].tolist() == want
        got_onnx = generate_onnx(models, prompt=np.array([prompt]), max_new_tokens=NEW)
        assert got_onnx[:, len(prompt):].tolist() == want
    want = _hf_generate(hf, PROMPTS)  # a left-padded batch
    assert generate(ours, prompt=PROMPTS, max_new_tokens=NEW)[:, -NEW:].tolist() == want
    assert generate_onnx(models, prompt=PROMPTS, max_new_tokens=NEW)[:, -NEW:].tolist() == want
