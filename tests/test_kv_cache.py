"""The derived key/value-cache signature (`nnspec.builder.kv_cache`): which graphs get one and what it
looks like, its logits against the full graph in PyTorch and onnxruntime, and generation with
it (cache against no cache, padded batches, sampling, stop tokens) in both back ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_torch_specs import SMALL, small

from nnspec.backends import to_onnx
from nnspec.backends.onnx.generate import generate_onnx
from nnspec.backends.onnx.runtime import run_onnx, session
from nnspec.backends.pytorch import generate, to_torch
from nnspec.builder import SpecError, check_spec, compile_graph, graph_inputs, graph_outputs, load_spec, nodes
from nnspec.builder.kv_cache import CacheError, is_derived, with_kv_cache
from nnspec.builder.ops.attention import MultiHeadAttention

SPECS = sorted(p.stem for p in Path("specs").glob("*.yaml"))

# A decoder nothing in specs/ looks like: sinusoidal positions, grouped-query attention with
# interleaved partial rotary, learned positions with a window, a causal layer without positions.
ODD = """
name: odd_decoder
params: {vocab: 30, d: 16}
inputs:
  ids: {shape: [b, t], dtype: int64}
nodes:
  emb: {op: embedding, in: ids, num_embeddings: '${vocab}', embedding_dim: '${d}'}
  sin: {op: sinusoidal_position, in: emb, max_len: 64}
  learned: {op: position_embedding, in: sin, max_len: 48}
  a1: {op: multi_head_attention, in: learned, num_heads: 4, num_kv_heads: 2, causal: true, rotary: true,
       rotary_interleaved: true, rotary_fraction: 0.5, rope_theta: 500.0}
  r1: {op: add, in: [learned, a1]}
  n1: {op: layer_norm, in: r1}
  a2: {op: multi_head_attention, in: n1, num_heads: 2, causal: true, bias: false}
  r2: {op: add, in: [r1, a2]}
  head: {op: linear, in: r2, out_features: '${vocab}'}
outputs: {logits: head}
"""


def _spec(name: str) -> Any:
    return ODD if name == "odd" else f"specs/{name}.yaml"


def _small(name: str) -> Any:
    if name == "odd":
        torch.manual_seed(0)
        return to_torch(ODD).eval()
    return small(name)


def _load(name: str) -> Any:
    return load_spec(ODD) if name == "odd" else load_spec(f"specs/{name}.yaml", SMALL[name])


# --- which graphs, and the signature's shape -------------------------------------------------

def _causal_self_attention(g: Any) -> list[str]:
    return [n.id for n in nodes(g) if isinstance(n.model, MultiHeadAttention) and n.model.causal
            and "key" not in n.bindings]


def _cross_attention(g: Any, site: str) -> list[str]:
    """Attention from the decoded sequence (the query length of causal self-attention `site`) to keys of
    another length (specs/ has no cross-attention whose keys grow with the decoded sequence)."""
    length = g.nodes[site]["node"].inputs["query"].shape[1]
    return [n.id for n in nodes(g) if isinstance(n.model, MultiHeadAttention) and "key" in n.bindings
            and n.inputs["query"].shape[1] == length and n.inputs["key"].shape[1] != length]


@pytest.mark.parametrize("name", SPECS)
def test_every_causal_decoder_graph_gets_a_cache_signature(name: str) -> None:
    spec = load_spec(f"specs/{name}.yaml", SMALL[name])
    graphs, _ = check_spec(spec)
    model = small(name)
    for sig, g in graphs.items():
        derived = "with_past" if sig is None else f"{sig}_with_past"
        sites = _causal_self_attention(g)
        assert (derived in model.signatures) == bool(sites), derived
        if not sites:
            with pytest.raises(SpecError, match="causal self-attention") as exc:
                compile_graph(spec, derived)
            assert exc.value.errors[0].code == "no-cache"
            continue
        cached = compile_graph(spec, derived)
        ins, outs = graph_inputs(cached), graph_outputs(cached)
        cross = _cross_attention(g, sites[0])
        self_kind = "decoder." if cross else ""  # Optimum's seq2seq names
        assert [k for k in ins if k.startswith("past_key_values.")] == [
            *(f"past_key_values.{i}.{self_kind}{w}" for i in range(len(sites)) for w in ("key", "value")),
            *(f"past_key_values.{i}.encoder.{w}" for i in range(len(cross)) for w in ("key", "value"))]
        assert list(outs)[:1] == list(graph_outputs(g))[:1]
        assert not [k for k in outs if ".encoder." in k]  # the cross keys stay as they are: no present output
        for i, node_id in enumerate(sites):
            past, present = ins[f"past_key_values.{i}.{self_kind}key"], outs[f"present.{i}.{self_kind}key"]
            assert str(past.shape[2]) == "past_sequence_length"
            assert str(present.shape[2] - past.shape[2]) == str(g.nodes[node_id]["node"].inputs["query"].shape[1])
        cross_sig = "cross_kv" if sig is None else f"{sig}_cross_kv"
        assert (cross_sig in model.signatures) == bool(cross)
        if cross:
            computed = graph_outputs(compile_graph(spec, cross_sig))
            assert list(computed) == [f"present.{i}.encoder.{w}" for i in range(len(cross)) for w in ("key", "value")]
            for i, node_id in enumerate(cross):
                key = g.nodes[node_id]["node"].inputs["key"]  # (batch, src_len, E) -> (batch, heads, src_len, E/H)
                assert computed[f"present.{i}.encoder.key"].shape[2] == key.shape[1]
                assert ins[f"past_key_values.{i}.encoder.key"] == computed[f"present.{i}.encoder.key"]


def test_the_derived_graph_keeps_every_weight() -> None:
    spec = _load("llama")
    plain, cached = compile_graph(spec), compile_graph(spec, "with_past")
    def weights(g: Any) -> dict[str, Any]:
        return {n.id: (n.weights, n.ties) for n in nodes(g) if n.op != "input"}

    assert weights(plain) == weights(cached)


def test_a_graph_with_bidirectional_attention_over_the_sequence_has_none() -> None:
    text = ODD.replace("causal: true, bias: false", "bias: false")  # a2 now sees the future
    with pytest.raises(CacheError, match="'a2'"):
        with_kv_cache(compile_graph(load_spec(text)))
    with pytest.raises(SpecError, match="no signature 'with_past'"):
        compile_graph(load_spec(text), "with_past")
    assert "with_past" not in to_torch(text).signatures


def test_a_mask_that_feeds_other_nodes_is_refused() -> None:
    text = ODD.replace("  ids: {shape: [b, t], dtype: int64}\n",
                       "  ids: {shape: [b, t], dtype: int64}\n  pad: {shape: [b, t], dtype: bool}\n")
    text = text.replace("in: n1, num_heads: 2", "in: {query: n1, key_padding_mask: pad}, num_heads: 2")
    g = compile_graph(load_spec(text))
    cached = with_kv_cache(g)  # the mask is a2's alone: lengthened over past and new keys
    assert str(graph_inputs(cached)["pad"].shape[1]) == "past_sequence_length + t"
    text = text.replace("in: learned, num_heads: 4", "in: {query: learned, key_padding_mask: pad}, num_heads: 4")
    text = text.replace("out_features: '${vocab}'}", "out_features: '${vocab}'}\n  m: {op: unsqueeze, in: pad, dim: 1}")
    text = text.replace("outputs: {logits: head}", "outputs: {logits: head, keep: m}")
    with pytest.raises(CacheError, match="also feeds node 'm'"):
        with_kv_cache(compile_graph(load_spec(text)))


def test_a_declared_signature_keeps_its_name() -> None:
    text = ODD + "signatures:\n  with_past:\n    inputs:\n      ids: {shape: [b, t], dtype: int64}\n" \
                 "    outputs: {logits: head}\n"
    g = compile_graph(load_spec(text), "with_past")
    assert not any(k.startswith("past_key_values") for k in graph_inputs(g))


# --- logits: cache against the full graph --------------------------------------------------

def _inputs(info: dict[str, Any], sizes: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for name, (dims, dtype) in info["input_types"].items():
        shape = [int(d) if d.isdigit() else sizes[d] if d in sizes else sum(sizes[p] for p in d.split("+"))
                 for d in dims]
        if dtype == "int64":
            out[name] = rng.integers(0, 20, shape)
        elif dtype == "bool":
            out[name] = np.zeros(shape, dtype=bool)
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


@pytest.mark.parametrize("name", ["gpt", "llama", "odd"])
def test_prefill_then_steps_give_the_full_graph_logits(name: str) -> None:
    model = _small(name)
    sig = model.signature("with_past")
    info = sig.meta["nnspec"]
    tokens = torch.randint(0, 25, (2, 7), generator=torch.Generator().manual_seed(0))
    full = model(tokens)
    past: dict[str, torch.Tensor] = {}
    for n, (dims, _) in info["input_types"].items():
        if n.startswith("past_key_values."):
            past[n] = torch.zeros(2, int(dims[1]), 0, int(dims[3]))
    got = []
    for start, stop in ((0, 3), (3, 4), (4, 6), (6, 7)):  # a past of 0, then 1 and 2 new tokens at a time
        given = {info["inputs"][0]: tokens[:, start:stop], "position_ids": torch.arange(start, stop).expand(2, -1),
                 "padding_mask": torch.zeros(2, stop, dtype=torch.bool), **past}
        outs = dict(zip(info["outputs"], sig(*[given[n] for n in info["inputs"]]), strict=True))
        got.append(outs["logits"])
        past = {n: outs[n.replace("past_key_values.", "present.")] for n in past}
    torch.testing.assert_close(torch.cat(got, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "sig"), [("gpt", "with_past"), ("llama", "with_past"), ("odd", "with_past"),
                                           ("transformer", "decode_with_past"), ("transformer", "decode_cross_kv")])
def test_onnx_cache_signature_matches_pytorch(name: str, sig: str) -> None:
    model = _small(name)
    module = model.signature(sig)
    info = module.meta["nnspec"]
    onnx_model = to_onnx(_load(name), model.state_dict(), signature=sig)
    assert [i.name for i in onnx_model.graph.input] == list(info["inputs"])
    assert [o.name for o in onnx_model.graph.output] == list(info["outputs"])
    sess = session(onnx_model)
    rng = np.random.default_rng(0)
    for past, new in ((0, 4), (5, 1), (3, 2)):  # prefill, a step, two tokens after a past
        sizes = {"past_sequence_length": past, "batch": 2, "b": 2, "seq": new, "t": new, "tgt_len": new, "src_len": 3}
        feed = _inputs(info, sizes, rng)
        for mask in (n for n, (_, dt) in info["input_types"].items() if dt == "bool"):
            feed[mask][0, 0] = True  # row 0 left-padded
        with torch.no_grad():
            want = module(*[torch.from_numpy(feed[n]) for n in info["inputs"]])
        got = run_onnx(sess, feed)
        for w, (out, g) in zip(want, got.items(), strict=True):
            np.testing.assert_allclose(g, w.numpy(), atol=2e-5, rtol=0, err_msg=f"{out} at {sizes}")


# --- generation ------------------------------------------------------------------------------

def _onnx_models(name: str, model: Any) -> dict[str | None, Any]:
    spec = _load(name)
    sigs = [None, *spec.signatures, *(s for s in model.signatures if is_derived(s))]
    return {s: to_onnx(spec, model.state_dict(), signature=s) for s in sigs}


@pytest.mark.parametrize("name", ["gpt", "llama", "odd"])
def test_decoder_cache_gives_the_no_cache_tokens_in_both_backends(name: str) -> None:
    model = _small(name)
    prompt = torch.randint(0, 25, (3, 5), generator=torch.Generator().manual_seed(1))
    plain = generate(model, prompt=prompt, max_new_tokens=12, use_cache=False)
    assert torch.equal(generate(model, prompt=prompt, max_new_tokens=12), plain)
    models = _onnx_models(name, model)
    np.testing.assert_array_equal(generate_onnx(models, prompt=prompt.numpy(), max_new_tokens=12), plain.numpy())
    np.testing.assert_array_equal(generate_onnx(models, prompt=prompt.numpy(), max_new_tokens=12, use_cache=False),
                                  plain.numpy())
    alone = generate_onnx(models["with_past"], prompt=prompt.numpy(), max_new_tokens=12)  # the cache model alone
    np.testing.assert_array_equal(alone, plain.numpy())


@pytest.mark.parametrize("name", ["transformer", "lstm_seq2seq"])
def test_encoder_decoder_cache_gives_the_no_cache_tokens_in_both_backends(name: str) -> None:
    model = small(name)
    src = torch.randint(3, 25, (3, 6), generator=torch.Generator().manual_seed(2))
    plain = generate(model, src, start_token=1, max_new_tokens=9, use_cache=False)
    assert torch.equal(generate(model, src, start_token=1, max_new_tokens=9), plain)
    models = _onnx_models(name, model)
    assert ("decode_with_past" in models) == (name == "transformer")  # the LSTM keeps its recurrent state
    np.testing.assert_array_equal(generate_onnx(models, src.numpy(), start_token=1, max_new_tokens=9), plain.numpy())
    np.testing.assert_array_equal(generate_onnx(models, src.numpy(), start_token=1, max_new_tokens=9,
                                                use_cache=False), plain.numpy())


def test_the_context_window_still_crops_without_the_cache() -> None:
    model = small("gpt")  # n_ctx 32: 30 + 5 tokens do not fit; the prefix is cropped as before
    prompt = torch.randint(0, 40, (1, 30), generator=torch.Generator().manual_seed(3))
    assert torch.equal(generate(model, prompt=prompt, max_new_tokens=5),
                       generate(model, prompt=prompt, max_new_tokens=5, use_cache=False))
    with pytest.raises(ValueError, match="exceed the context"):
        generate_onnx(_onnx_models("gpt", model)["with_past"], prompt=prompt.numpy(), max_new_tokens=5)


PROMPTS = [[5, 6, 7, 8, 9, 10], [3, 4], [11], [2, 9, 4, 4]]


@pytest.mark.parametrize("name", ["gpt", "llama", "odd"])
def test_a_left_padded_batch_gives_each_prompt_its_own_tokens(name: str) -> None:
    model = _small(name)
    models = _onnx_models(name, model)
    batch = generate(model, prompt=PROMPTS, max_new_tokens=10)
    batch_onnx = generate_onnx(models, prompt=PROMPTS, max_new_tokens=10)
    np.testing.assert_array_equal(batch_onnx, batch.numpy())
    for row, p in enumerate(PROMPTS):
        alone = generate(model, prompt=torch.tensor([p]), max_new_tokens=10, use_cache=False)
        assert batch[row, -10:].tolist() == alone[0, -10:].tolist(), row
        assert batch[row, :-10].tolist() == [0] * (6 - len(p)) + p


def test_a_padded_batch_needs_the_cache() -> None:
    model = small("gpt")
    with pytest.raises(ValueError, match="padded batch needs"):
        generate(model, prompt=PROMPTS, max_new_tokens=2, use_cache=False)


def test_sampling_is_seeded_and_the_same_in_both_backends() -> None:
    model = small("gpt")
    models = _onnx_models("gpt", model)
    prompt = torch.randint(0, 40, (4, 3), generator=torch.Generator().manual_seed(4))
    kw: dict[str, Any] = {"max_new_tokens": 16, "temperature": 1.5, "top_k": 20, "top_p": 0.95}
    a = generate(model, prompt=prompt, seed=7, **kw)
    assert torch.equal(a, generate(model, prompt=prompt, seed=7, **kw))
    assert torch.equal(a, generate(model, prompt=prompt, seed=7, use_cache=False, **kw))
    np.testing.assert_array_equal(generate_onnx(models, prompt=prompt.numpy(), seed=7, **kw), a.numpy())
    assert not torch.equal(a, generate(model, prompt=prompt, seed=8, **kw))
    greedy = generate(model, prompt=prompt, max_new_tokens=16)
    assert torch.equal(generate(model, prompt=prompt, seed=1, max_new_tokens=16, temperature=2.0, top_k=1), greedy)
    assert torch.equal(generate(model, prompt=prompt, seed=1, max_new_tokens=16, temperature=0.7, top_p=1e-9),
                       greedy)


def test_top_k_and_top_p_keep_to_their_tokens() -> None:
    from nnspec.backends.generation import Chooser, Sampling

    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 2000))
    top_k = Chooser(2000, Sampling(temperature=1.0, top_k=2, seed=0))(logits)
    assert set(top_k.tolist()) == {0, 1} and 0.55 < (top_k == 0).mean() < 0.70  # 0.5 / 0.8
    top_p = Chooser(2000, Sampling(temperature=1.0, top_p=0.9, seed=0))(logits)
    assert set(top_p.tolist()) == {0, 1, 2}  # 0.5 + 0.3 < 0.9 <= 0.95
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=1.5)


def test_stop_tokens_finish_rows_and_stop_early() -> None:
    model = small("gpt")
    prompt = torch.randint(0, 40, (3, 3), generator=torch.Generator().manual_seed(5))
    free = generate(model, prompt=prompt, max_new_tokens=10)
    stops = [int(free[0, 4]), int(free[1, 5])]
    out = generate(model, prompt=prompt, max_new_tokens=10, stop_tokens=stops)
    onnx_out = generate_onnx(_onnx_models("gpt", model), prompt=prompt.numpy(), max_new_tokens=10, stop_tokens=stops)
    np.testing.assert_array_equal(onnx_out, out.numpy())
    for row in range(3):
        gen = out[row, 3:].tolist()
        first = next((i for i, t in enumerate(gen) if t in stops), None)
        if first is not None:
            assert all(t == gen[first] for t in gen[first:])
            assert gen[:first] == free[row, 3:3 + first].tolist()


def test_tokens_stream_as_they_come() -> None:
    model = small("gpt")
    seen: list[list[int]] = []
    out = generate(model, prompt=torch.tensor([[1, 2], [3, 4]]), max_new_tokens=5, on_token=lambda t: seen.append(t.tolist()))
    assert torch.tensor(seen).T.tolist() == out[:, 2:].tolist()


def test_prompt_ids_outside_the_embedding_are_refused() -> None:
    model = small("gpt")  # 40 ids
    with pytest.raises(ValueError, match="token id 40 is outside the 40 ids"):
        generate(model, prompt=torch.tensor([[1, 40]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="token id 40 is outside the 40 ids"):
        generate_onnx(_onnx_models("gpt", model), prompt=np.array([[1, 40]]), max_new_tokens=2)


@pytest.mark.parametrize(("change", "node"), [
    ("  r2: {op: add, in: [r1, a2]}\n", None),  # unchanged: a cache
    ("  r2: {op: lstm, in: a2, hidden_size: 16}\n", "r2"),
    ("  tr: {op: transpose, in: a2, dim0: 1, dim1: 2}\n  cv: {op: conv1d, in: tr, out_channels: 16, kernel_size: 3, "
     "padding: 1}\n  r2: {op: transpose, in: cv, dim0: 1, dim1: 2}\n", "cv"),
    ("  r2: {op: softmax, in: a2, dim: 1}\n", "r2"),
    ("  r2: {op: add, in: [r1, a2]}\n  m: {op: mean, in: r2, dim: 1, keepdim: true}\n", "m"),
])
def test_a_graph_that_mixes_positions_otherwise_has_no_cache(change: str, node: str | None) -> None:
    text = ODD.replace("  r2: {op: add, in: [r1, a2]}\n", change)
    if node == "m":
        text = text.replace("outputs: {logits: head}", "outputs: {logits: head, avg: m}")
    g = compile_graph(load_spec(text))
    if node is None:
        assert "past_key_values.1.key" in graph_inputs(with_kv_cache(g))
        return
    with pytest.raises(CacheError, match=f"node '{node}'"):
        with_kv_cache(g)


def test_the_cache_signature_renders() -> None:
    from nnspec.backends.graphviz import to_graphviz

    dot = to_graphviz(_load("llama"), signature="with_past").source
    for name in ("past_key_values.0.key", "present.1.value", "position_ids", "padding_mask"):
        assert name in dot
