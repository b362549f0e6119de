"""Grouped-query attention, rotary position embedding, attention masks and recurrent `lengths`:
semantics beyond the per-op case table (tests/op_cases.py), in both backends.

References: Hugging Face transformers' LlamaAttention (modeling_llama.py: LlamaRotaryEmbedding,
rotate_half, apply_rotary_pos_emb, repeat_kv, eager_attention_forward), written out here in
plain torch; torch.nn.utils.rnn.pack_padded_sequence for padded recurrent batches.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx.reference import ReferenceEvaluator

from nnspec.backends.onnx import MIN_OPSET, run_onnx, to_onnx
from nnspec.backends.pytorch import emit_python, to_torch
from nnspec.builder import SpecError, compile_graph, load_spec

# --- Hugging Face's Llama attention, in plain torch ---------------------------------------------


def _hf_rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def _hf_cos_sin(head_dim: int, theta: float, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LlamaRotaryEmbedding.forward: float32 angles, emb = cat(freqs, freqs)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    inv_freq_expanded = inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
    freqs = (inv_freq_expanded.float() @ position_ids[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _hf_repeat_kv(hidden: torch.Tensor, n_rep: int) -> torch.Tensor:
    b, kv, t, d = hidden.shape
    if n_rep == 1:
        return hidden
    return hidden[:, :, None, :, :].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d)


def _hf_llama_attention(x: torch.Tensor, w: dict[str, torch.Tensor], heads: int, kv_heads: int, theta: float,
                        position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LlamaAttention.forward (eager): q/k/v/o linears without bias, RoPE, repeat_kv, additive mask."""
    b, t, e = x.shape
    hd = e // heads
    q = F.linear(x, w["q"]).view(b, t, -1, hd).transpose(1, 2)
    k = F.linear(x, w["k"]).view(b, t, -1, hd).transpose(1, 2)
    v = F.linear(x, w["v"]).view(b, t, -1, hd).transpose(1, 2)
    cos, sin = _hf_cos_sin(hd, theta, position_ids)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q, k = (q * cos) + (_hf_rotate_half(q) * sin), (k * cos) + (_hf_rotate_half(k) * sin)
    k, v = _hf_repeat_kv(k, heads // kv_heads), _hf_repeat_kv(v, heads // kv_heads)
    scores = torch.matmul(q, k.transpose(2, 3)) * hd**-0.5 + mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    y = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, -1)
    return F.linear(y, w["o"])


def _llama_spec(e: int, heads: int, kv: int, theta: float, positions: bool = False) -> dict[str, Any]:
    inputs: dict[str, Any] = {"x": {"shape": ["batch", "seq", e]}}
    ins: dict[str, str] = {"query": "x"}
    if positions:
        inputs["pos"] = {"shape": ["batch", "seq"], "dtype": "int64"}
        ins["positions"] = "pos"
    return {"name": "llama_attention", "inputs": inputs,
            "nodes": {"attn": {"op": "multi_head_attention", "in": ins, "num_heads": heads, "num_kv_heads": kv,
                               "bias": False, "rotary": True, "rope_theta": theta, "causal": True}},
            "outputs": {"y": "attn"}}


def _llama_weights(e: int, heads: int, kv: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hd = e // heads
    shapes = {"q": (e, e), "k": (kv * hd, e), "v": (kv * hd, e), "o": (e, e)}
    return {k: torch.randn(s, generator=gen) * 0.2 for k, s in shapes.items()}


@pytest.mark.parametrize(("heads", "kv", "theta", "given_positions"),
                         [(4, 2, 10000.0, False), (4, 1, 500000.0, True), (2, 2, 10000.0, True)])
def test_llama_attention_is_one_node_with_transplanted_weights(heads: int, kv: int, theta: float,
                                                               given_positions: bool) -> None:
    e, b, t = 32, 2, 7
    w = _llama_weights(e, heads, kv)
    spec = _llama_spec(e, heads, kv, theta, given_positions)
    model = to_torch(spec).eval()
    state = {"attn.in_proj_weight": torch.cat([w["q"], w["k"], w["v"]]), "attn.out_proj.weight": w["o"]}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    model.load_state_dict(state)
    x = torch.randn(b, t, e, generator=torch.Generator().manual_seed(1))
    pos = torch.arange(t).expand(b, t) + torch.tensor([[0], [11]]) if given_positions else torch.arange(t).expand(b, t)
    causal = torch.full((t, t), -math.inf).triu(1)
    want = _hf_llama_attention(x, w, heads, kv, theta, pos, causal)
    with torch.no_grad():
        got = model(x, pos) if given_positions else model(x)
    assert (got - want).abs().max().item() < 1e-5
    feeds = {"x": x.numpy(), **({"pos": pos.numpy()} if given_positions else {})}
    for opset in (None, MIN_OPSET):
        onnx_model = to_onnx(compile_graph(load_spec(spec)), {k: v.numpy() for k, v in state.items()}, opset=opset)
        np.testing.assert_allclose(run_onnx(onnx_model, feeds)["y"], want.numpy(), rtol=0, atol=1e-5)


def test_rotary_matches_hf_at_long_positions() -> None:
    """Llama-3-like settings (head 64, theta 500000) at positions up to 8k: float32 angles as HF computes them."""
    b, h, t, d = 1, 2, 6, 64
    x = torch.randn(b, h, t, d, generator=torch.Generator().manual_seed(2))
    pos = torch.tensor([[0, 1, 1000, 4095, 4096, 8191]])
    spec = {"name": "rope", "inputs": {"x": {"shape": [b, h, t, d]}, "pos": {"shape": [b, t], "dtype": "int64"}},
            "nodes": {"r": {"op": "rotary", "in": {"x": "x", "positions": "pos"}, "theta": 500000.0}},
            "outputs": {"y": "r"}}
    cos, sin = _hf_cos_sin(d, 500000.0, pos)
    want = x * cos[:, None] + _hf_rotate_half(x) * sin[:, None]
    got = to_torch(spec)(x, pos)
    assert (got - want).abs().max().item() == 0.0  # the same float32 operations
    onnx_y = run_onnx(to_onnx(spec), {"x": x.numpy(), "pos": pos.numpy()})["y"]
    np.testing.assert_allclose(onnx_y, want.numpy(), rtol=0, atol=2e-3)  # numpy's float32 pow may differ by an ulp


def test_mha_gqa_state_dict_and_emitted_source() -> None:
    spec = _llama_spec(16, 4, 2, 10000.0)
    spec["nodes"]["attn"]["bias"] = True
    model = to_torch(spec).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {"attn.in_proj_weight": (16 + 2 * 2 * 4, 16), "attn.in_proj_bias": (32,),
                      "attn.out_proj.weight": (16, 16), "attn.out_proj.bias": (16,)}
    scope: dict[str, Any] = {}
    exec(compile(emit_python(spec), "<emitted>", "exec"), scope)
    emitted = scope["LlamaAttention"]().eval()
    emitted.load_state_dict(model.state_dict())
    x = torch.randn(2, 5, 16)
    assert torch.equal(emitted(x), model(x))


# --- bool attention masks (True = may attend) ------------------------------------------------------


def _visible_mask(rows: int, cols: int, seed: int, lead: tuple[int, ...] = ()) -> torch.Tensor:
    """A random bool mask where every row sees at least key 0."""
    mask = torch.rand(*lead, rows, cols, generator=torch.Generator().manual_seed(seed)) > 0.4
    mask[..., 0] = True
    return mask


@pytest.mark.parametrize("op", ["attention", "multi_head_attention"])
def test_bool_attn_mask_in_both_backends(op: str) -> None:
    b, t, e = 2, 5, 8
    mask = _visible_mask(t, t, 0, (b,))  # (B, T, T)
    node: dict[str, Any] = {"op": op, "causal": True}
    if op == "attention":
        node["in"] = {"query": "x", "key": "x", "value": "x", "attn_mask": "m"}
    else:
        node.update({"in": {"query": "x", "attn_mask": "m"}, "num_heads": 2, "num_kv_heads": 1})
    spec = {"name": "masked", "inputs": {"x": {"shape": ["batch", "seq", e]}, "m": {"shape": ["batch", "seq", "seq"],
                                                                                 "dtype": "bool"}},
            "nodes": {"n": node}, "outputs": {"y": "n"}}
    model = to_torch(spec).eval()
    x = torch.randn(b, t, e)
    with torch.no_grad():
        got = model(x, mask)
    allowed = mask & torch.ones(t, t, dtype=torch.bool).tril()
    if op == "attention":
        want = torch.softmax((x @ x.transpose(1, 2) / math.sqrt(e)).masked_fill(~allowed, -math.inf), -1) @ x
    else:  # the same with an additive float mask instead: one path checks the other
        other = to_torch({**spec, "inputs": {**spec["inputs"], "m": {"shape": ["batch", "seq", "seq"]}}}).eval()
        other.load_state_dict(model.state_dict())
        with torch.no_grad():
            want = other(x, torch.zeros(b, t, t).masked_fill(~mask, -math.inf))
    assert (got - want).abs().max().item() < 1e-5
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    for options in ({}, {"opset": MIN_OPSET}, {"native_attention": True}):
        y = run_onnx(to_onnx(spec, state, **options), {"x": x.numpy(), "m": mask.numpy()})["y"]
        np.testing.assert_allclose(y, want.numpy(), rtol=0, atol=1e-5, err_msg=str(options))


# --- recurrent layers over padded batches ----------------------------------------------------------


@pytest.mark.parametrize(("op", "layers", "bidirectional", "states"),
                         [("lstm", 2, True, True), ("gru", 1, True, False), ("rnn", 2, False, True)])
def test_each_padded_row_equals_its_sequence_alone(op: str, layers: int, bidirectional: bool, states: bool) -> None:
    b, t, f, hidden = 4, 6, 3, 5
    dirs = 2 if bidirectional else 1
    lengths = torch.tensor([6, 1, 4, 2])
    node: dict[str, Any] = {"op": op, "hidden_size": hidden, "num_layers": layers, "bidirectional": bidirectional,
                            "in": {"x": "x", "lengths": "n"}}
    inputs: dict[str, Any] = {"x": {"shape": ["batch", "seq", f]}, "n": {"shape": ["batch"], "dtype": "int64"}}
    state_ports = ("h0", "c0") if op == "lstm" else ("h0",)
    if states:
        for p in state_ports:
            inputs[p] = {"shape": [layers * dirs, "batch", hidden]}
            node["in"][p] = p
    outs = {"output": "r.output", "h": "r.h", **({"c": "r.c"} if op == "lstm" else {})}
    spec = {"name": "padded", "inputs": inputs, "nodes": {"r": node}, "outputs": outs}
    model = to_torch(spec).eval()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(b, t, f, generator=gen)
    feeds = {"x": x, "n": lengths, **{p: torch.randn(layers * dirs, b, hidden, generator=gen)
                                      for p in state_ports if states}}
    with torch.no_grad():
        got = dict(zip(outs, model(**feeds), strict=True))
        alone_model = to_torch({**spec, "inputs": {k: v for k, v in inputs.items() if k != "n"},
                                "nodes": {"r": {**node, "in": {k: v for k, v in node["in"].items() if k != "lengths"}}}})
        alone_model.load_state_dict(model.state_dict())
        for i, n in enumerate(lengths.tolist()):
            row = {"x": x[i:i + 1, :n], **{p: feeds[p][:, i:i + 1] for p in state_ports if states}}
            alone = dict(zip(outs, alone_model(**row), strict=True))
            assert torch.allclose(got["output"][i, :n], alone["output"][0], atol=1e-6)
            assert torch.all(got["output"][i, n:] == 0)
            for p in outs:
                if p != "output":
                    assert torch.allclose(got[p][:, i], alone[p][:, 0], atol=1e-6), p
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    np_feeds = {k: v.numpy() for k, v in feeds.items()}
    for opset in (None, MIN_OPSET):
        onnx_out = run_onnx(to_onnx(spec, state, opset=opset), np_feeds)
        for p, value in got.items():
            np.testing.assert_allclose(onnx_out[p], value.numpy(), rtol=0, atol=1e-5, err_msg=f"{p} opset {opset}")


def test_onnx_reference_evaluator_still_ignores_sequence_lens() -> None:
    """Why tests/test_onnx_ops.py leaves the `lengths` cases out of its ReferenceEvaluator comparison
    (REFERENCE_WRONG): when onnx.reference honours sequence_lens this fails, and that entry goes."""
    spec = {"name": "padded", "inputs": {"x": {"shape": [2, 4, 3]}, "n": {"shape": [2], "dtype": "int64"}},
            "nodes": {"r": {"op": "gru", "in": {"x": "x", "lengths": "n"}, "hidden_size": 4}},
            "outputs": {"output": "r.output", "h": "r.h"}}
    model = to_onnx(spec)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32),
             "n": np.asarray([4, 2], dtype=np.int64)}
    ours = run_onnx(model, feeds)["output"]
    theirs = ReferenceEvaluator(model).run(None, feeds)[0]
    assert np.all(ours[1, 2:] == 0)
    assert not np.allclose(theirs, ours, atol=1e-4)
    onnx.checker.check_model(model, full_check=True)


# --- errors --------------------------------------------------------------------------------------


def _one(node: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    return {"name": "bad", "inputs": inputs, "nodes": {"n": node}, "outputs": {"y": "n"}}


X = {"x": {"shape": ["batch", "seq", 8]}}


@pytest.mark.parametrize(("spec", "message"), [
    (_one({"op": "multi_head_attention", "in": "x", "num_heads": 4, "num_kv_heads": 3}, X),
     "num_kv_heads 3 must divide num_heads 4"),
    (_one({"op": "multi_head_attention", "in": "x", "num_heads": 2, "rope_theta": 5.0}, X),
     "rope_theta given but rotary is false"),
    (_one({"op": "multi_head_attention", "in": "x", "num_heads": 8, "rotary": True}, X),
     "even number"),
    (_one({"op": "multi_head_attention", "in": {"query": "x", "positions": "p"}, "num_heads": 2},
          {**X, "p": {"shape": ["seq"], "dtype": "int64"}}), "only used with rotary"),
    (_one({"op": "multi_head_attention", "in": {"query": "x", "attn_mask": "m"}, "num_heads": 2},
          {**X, "m": {"shape": ["seq", 3]}}), "does not broadcast to the scores"),
    (_one({"op": "attention", "in": {"query": "q", "key": "k", "value": "k"}},
          {"q": {"shape": [1, 4, 5, 8]}, "k": {"shape": [1, 3, 5, 8]}}), "must divide query heads"),
    (_one({"op": "rotary", "in": {"x": "q", "positions": "p"}},
          {"q": {"shape": [1, 4, 5, 8]}, "p": {"shape": [1, 5], "dtype": "float32"}}), "positions must be int64"),
    (_one({"op": "gru", "in": {"x": "x", "lengths": "lens"}, "hidden_size": 2},
          {**X, "lens": {"shape": ["seq"], "dtype": "int64"}}), "lengths must be (batch,)"),
])
def test_bad_arguments_and_inputs_are_located_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        compile_graph(load_spec(spec))
    assert message in str(info.value)


def test_random_inputs_give_valid_sequence_lengths() -> None:
    """`nnspec run --random` and `check` draw lengths from 1 to the steps, never 0 (packing refuses 0)."""
    from nnspec.backends.onnx import random_inputs, to_onnx

    spec = {"name": "tagger", "inputs": {"x": {"shape": ["batch", "seq", 3]}, "lengths": {"shape": ["batch"], "dtype": "int64"}},
            "nodes": {"rnn": {"op": "gru", "in": {"x": "x", "lengths": "lengths"}, "hidden_size": 4}},
            "outputs": {"y": "rnn.output"}}
    model = to_onnx(spec)
    drawn = np.concatenate([random_inputs(model, {"batch": 50, "seq": 3}, seed)["lengths"] for seed in range(4)])
    assert set(drawn.tolist()) == {1, 2, 3}
