"""Cross-attention under the key/value cache (`nnspec.builder.kv_cache`): the keys and values of an
encoder's memory are projected once, by the derived ``cross_kv`` graph, and the cache signature
takes them as ``past_key_values.{i}.encoder.*`` instead of the memory. Logits and tokens equal
the graph without a cache, in PyTorch and onnxruntime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from test_torch_specs import SMALL, small

from nnspec.backends import to_onnx
from nnspec.backends.onnx.generate import generate_onnx
from nnspec.backends.onnx.runtime import run_onnx, session
from nnspec.backends.pytorch import generate, to_torch
from nnspec.builder import compile_graph, graph_inputs, graph_outputs, load_spec, nodes
from nnspec.builder.kv_cache import CacheError, with_kv_cache
from nnspec.builder.ops.attention import MultiHeadAttention

# Not the Transformer's layout: cross-attention with grouped-query heads, no bias, keys and values
# from different tensors, an encoder inside the main graph (no encode signature), a tied embedding.
SEQ2SEQ = """
name: tiny_seq2seq
params: {vocab: 30, d: 16}
inputs:
  src: {shape: [b, s], dtype: int64}
  tgt: {shape: [b, t], dtype: int64}
  src_pad: {shape: [b, s], dtype: bool}
nodes:
  src_emb: {op: embedding, in: src, num_embeddings: '${vocab}', embedding_dim: '${d}'}
  enc: {op: multi_head_attention, in: {query: src_emb, key_padding_mask: src_pad}, num_heads: 4}
  memory: {op: add, in: [src_emb, enc]}
  values: {op: linear, in: memory, out_features: '${d}'}
  tgt_emb: {op: embedding, in: tgt, num_embeddings: '${vocab}', embedding_dim: '${d}', tie: src_emb}
  pos: {op: sinusoidal_position, in: tgt_emb, max_len: 64}
  sa: {op: multi_head_attention, in: pos, num_heads: 4, causal: true}
  r1: {op: add, in: [pos, sa]}
  ca: {op: multi_head_attention, in: {query: r1, key: memory, value: values, key_padding_mask: src_pad},
       num_heads: 4, num_kv_heads: 2, bias: false}
  r2: {op: add, in: [r1, ca]}
  head: {op: linear, in: r2, out_features: '${vocab}'}
outputs: {logits: head}
"""

TRANSFORMER = SMALL["transformer"]


def _cross_nodes(g: Any) -> list[Any]:
    return [n for n in nodes(g) if isinstance(n.model, MultiHeadAttention) and not n.model.causal
            and ("key" in n.bindings or "projected_key" in n.bindings) and n.id.split(".")[-1] != "enc"]


def test_the_cache_signature_takes_projected_memory_not_the_memory() -> None:
    spec = load_spec("specs/transformer.yaml", TRANSFORMER)
    cached, cross = compile_graph(spec, "decode_with_past"), compile_graph(spec, "decode_cross_kv")
    assert "memory" not in graph_inputs(cached)  # only the cross-attention read it
    for i, n in enumerate(_cross_nodes(cached)):
        assert {"key", "value"}.isdisjoint(n.bindings)
        assert n.bindings["projected_key"].node == f"past_key_values.{i}.encoder.key"
    assert list(graph_inputs(cross)) == ["memory"]
    assert {n.op for n in nodes(cross)} == {"input", "multi_head_attention"}
    assert all(n.model.projection_only for n in nodes(cross) if n.model is not None)
    main_cached = compile_graph(spec, "with_past")  # from the main graph: the encoder is left out
    assert "src" not in graph_inputs(main_cached)
    assert not any(n.id.startswith("encoder") for n in nodes(main_cached))
    assert "src" in graph_inputs(compile_graph(spec, "cross_kv"))


def _run_torch(module: Any, given: dict[str, Any]) -> dict[str, Any]:
    info = module.meta["nnspec"]
    outs = module(*[torch.as_tensor(given[n]) for n in info["inputs"]])
    outs = outs if isinstance(outs, tuple) else (outs,)
    return {k: v.detach().numpy() for k, v in zip(info["outputs"], outs, strict=True)}


def _run_onnx(model: Any, given: dict[str, Any]) -> dict[str, Any]:
    names = [i.name for i in model.graph.input]
    out = run_onnx(session(model), {n: np.asarray(given[n]) for n in names})
    return dict(zip([o.name for o in model.graph.output], out.values(), strict=True))


def _stepwise(run_cross: Any, run_cached: Any, fixed: dict[str, Any], tokens: np.ndarray, token: str,
              pasts: dict[str, tuple[int, int]]) -> np.ndarray:
    """Logits of `tokens` fed in chunks through the cache signature, the cross keys computed once."""
    batch = tokens.shape[0]
    cross = run_cross(fixed)
    given = {**fixed, **{k.replace("present.", "past_key_values."): v for k, v in cross.items()}}
    past = {n: np.zeros((batch, heads, 0, hd), dtype=np.float32) for n, (heads, hd) in pasts.items()}
    got = []
    for start, stop in ((0, 3), (3, 4), (4, 6)):  # a past of 0, then 1 and 2 new tokens at a time
        feed = {**given, **past, token: tokens[:, start:stop],
                "position_ids": np.broadcast_to(np.arange(start, stop), (batch, stop - start)).copy(),
                "padding_mask": np.zeros((batch, stop), dtype=bool), "tgt_pad": np.zeros((batch, stop), dtype=bool)}
        outs = run_cached(feed)
        got.append(outs["logits"])
        past = {n: outs[n.replace("past_key_values.", "present.")] for n in past}
    return np.concatenate(got, axis=1)


def _pasts(g: Any) -> dict[str, tuple[int, int]]:
    return {n: (int(t.shape[1]), int(t.shape[3])) for n, t in graph_inputs(g).items()
            if n.startswith("past_key_values.") and ".encoder." not in n}


@pytest.mark.parametrize("backend", ["pytorch", "onnx"])
def test_the_transformer_decodes_with_cross_keys_computed_once(backend: str) -> None:
    model = small("transformer")
    spec = load_spec("specs/transformer.yaml", TRANSFORMER)
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(3, 25, (2, 5)), rng.integers(3, 25, (2, 6))
    src_pad = np.zeros((2, 5), dtype=bool)
    src_pad[1, 3:] = True  # row 1 has 3 source tokens
    with torch.no_grad():
        memory = _run_torch(model.signature("encode"), {"src": src, "src_pad": src_pad})["memory"]
        full = _run_torch(model.signature("decode"), {"tgt": tgt, "memory": memory, "src_pad": src_pad,
                                                      "tgt_pad": np.zeros((2, 6), dtype=bool)})["logits"]
        if backend == "pytorch":
            run_cross, run_cached = (lambda f: _run_torch(model.signature("decode_cross_kv"), f),
                                     lambda f: _run_torch(model.signature("decode_with_past"), f))
        else:
            cross_model, cached_model = (to_onnx(spec, model.state_dict(), signature=s)
                                         for s in ("decode_cross_kv", "decode_with_past"))
            run_cross, run_cached = (lambda f: _run_onnx(cross_model, f), lambda f: _run_onnx(cached_model, f))
        got = _stepwise(run_cross, run_cached, {"memory": memory, "src_pad": src_pad}, tgt, "tgt",
                        _pasts(compile_graph(spec, "decode_with_past")))
    np.testing.assert_allclose(got, full, atol=2e-5, rtol=0)


@pytest.mark.parametrize("backend", ["pytorch", "onnx"])
def test_a_main_graph_encoder_runs_once_for_its_cross_attention(backend: str) -> None:
    torch.manual_seed(0)
    model = to_torch(SEQ2SEQ).eval()
    spec = load_spec(SEQ2SEQ)
    cached = compile_graph(spec, "with_past")
    assert [k for k in graph_inputs(cached) if ".encoder." in k] == ["past_key_values.0.encoder.key",
                                                                     "past_key_values.0.encoder.value"]
    assert str(graph_inputs(cached)["past_key_values.0.encoder.key"]) == "b×2×s×4"  # 2 key/value heads
    assert "src" not in graph_inputs(cached) and "enc" not in cached
    rng = np.random.default_rng(1)
    src, tgt = rng.integers(0, 30, (3, 4)), rng.integers(0, 30, (3, 6))
    src_pad = np.zeros((3, 4), dtype=bool)
    src_pad[0, 2:] = True
    with torch.no_grad():
        full = _run_torch(model, {"src": src, "tgt": tgt, "src_pad": src_pad})["logits"]
        if backend == "pytorch":
            run_cross, run_cached = (lambda f: _run_torch(model.signature("cross_kv"), f),
                                     lambda f: _run_torch(model.signature("with_past"), f))
        else:
            cross_model, cached_model = (to_onnx(spec, model.state_dict(), signature=s) for s in ("cross_kv", "with_past"))
            run_cross, run_cached = (lambda f: _run_onnx(cross_model, f), lambda f: _run_onnx(cached_model, f))
        got = _stepwise(run_cross, run_cached, {"src": src, "src_pad": src_pad}, tgt, "tgt", _pasts(cached))
    np.testing.assert_allclose(got, full, atol=2e-5, rtol=0)


def test_the_cache_signature_built_alone_loads_the_full_state_dict() -> None:
    torch.manual_seed(0)
    model = to_torch(SEQ2SEQ).eval()
    for sig in ("with_past", "cross_kv"):
        alone = to_torch(SEQ2SEQ, signature=sig).eval()
        alone.load_state_dict(model.state_dict(), strict=False)
        aliases = alone.meta["nnspec"]["aliases"]  # tgt_emb.weight holds src_emb.weight where src_emb is left out
        mine = dict(alone.named_parameters())
        assert mine and all(torch.equal(p, model.state_dict()[aliases.get(k, k)]) for k, p in mine.items())


def test_generation_needs_the_cross_model_and_says_so() -> None:
    model = small("transformer")
    spec = load_spec("specs/transformer.yaml", TRANSFORMER)
    models = {s: to_onnx(spec, model.state_dict(), signature=s) for s in ("encode", "decode_with_past")}
    with pytest.raises(ValueError, match="give the 'decode_cross_kv' model too"):
        generate_onnx(models, np.array([[4, 5, 6]]), start_token=1, max_new_tokens=3)


def test_generation_with_a_padded_source_equals_no_cache() -> None:
    model = small("transformer")
    spec = load_spec("specs/transformer.yaml", TRANSFORMER)
    src = torch.randint(3, 25, (3, 6), generator=torch.Generator().manual_seed(4))
    src_pad = torch.zeros(3, 6, dtype=torch.bool)
    src_pad[1, 4:] = True
    src_pad[2, 2:] = True
    source = {"src": src, "src_pad": src_pad}
    plain = generate(model, source, start_token=1, max_new_tokens=8, use_cache=False)
    assert torch.equal(generate(model, source, start_token=1, max_new_tokens=8), plain)
    models = {s: to_onnx(spec, model.state_dict(), signature=s)
              for s in ("encode", "decode", "decode_cross_kv", "decode_with_past")}
    got = generate_onnx(models, {k: v.numpy() for k, v in source.items()}, start_token=1, max_new_tokens=8)
    np.testing.assert_array_equal(got, plain.numpy())


@pytest.mark.parametrize(("change", "word"), [("num_kv_heads: 2, bias: false", "causal: true, bias: false"),
                                              ("num_kv_heads: 2, bias: false", "rotary: true, bias: false")])
def test_cross_attention_whose_keys_move_with_the_cache_is_refused(change: str, word: str) -> None:
    g = compile_graph(load_spec(SEQ2SEQ.replace(change, word)))
    with pytest.raises(CacheError, match=f"node 'ca' is {word.split(':')[0]} cross-attention"):
        with_kv_cache(g)


def test_projected_keys_are_checked_where_a_spec_binds_them() -> None:
    from nnspec.builder import SpecError

    text = SEQ2SEQ.replace("  src_pad: {shape: [b, s], dtype: bool}\n",
                           "  src_pad: {shape: [b, s], dtype: bool}\n  kv: {shape: [b, 2, s, 4]}\n")
    given = text.replace("key: memory, value: values,", "projected_key: kv, projected_value: kv,")
    given = given.replace(", tie: src_emb", "")  # the encoder is left out: nothing to tie to
    assert "projected_key" in compile_graph(load_spec(given)).nodes["ca"]["node"].bindings  # (b, 2 kv heads, s, 4)
    both = "projected_key: kv, projected_value: kv,"
    for bad, message in ((given.replace(both, f"{both} key: memory,"), "take the place of key and value"),
                         (given.replace(both, "projected_key: kv,"), "come together"),
                         (given.replace("num_kv_heads: 2,", "num_kv_heads: 4,"), r"projected_key must be \(batch, 4, ")):
        with pytest.raises(SpecError, match=message):
            compile_graph(load_spec(bad))


def test_the_cross_graph_renders_and_summarises() -> None:
    from nnspec.backends.graphviz import to_graphviz
    from nnspec.builder.summary import summary_rows

    spec = load_spec("specs/transformer.yaml", TRANSFORMER)
    dot = to_graphviz(spec, signature="decode_cross_kv").source
    assert "present.1.encoder.value" in dot and "keys and values only" in dot
    assert "past_key_values.0.encoder.key" in to_graphviz(spec, signature="decode_with_past").source
    for sig in ("decode_cross_kv", "decode_with_past"):
        assert summary_rows(compile_graph(spec, sig))
    assert graph_outputs(compile_graph(spec, "decode_cross_kv"))
