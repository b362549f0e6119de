"""The seed specs: they validate, their signatures compile, and their parameter counts equal
independent references (torch.nn modules built on the meta device, and the papers' models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nnspec.builder import check_spec, compile_graph, graph_outputs, load_spec, param_count

SPECS = sorted(Path("specs").glob("*.yaml"))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_seed_spec_validates_with_every_signature(path: Path) -> None:
    spec = load_spec(path)
    graphs, warnings = check_spec(spec)
    assert warnings == []
    assert set(graphs) == {None, *spec.signatures}
    assert spec.doc and "(" in spec.doc, "each seed spec says where it comes from"


# Published parameter counts (the checkpoints' own totals).
PAPER = {
    "bert": 110_106_428,  # BERT-base with MLM+NSP heads, decoder tied (Google's BertForPreTraining checkpoint)
    "gpt": 124_439_808,  # GPT-2 small, LM head tied to wte
    "lenet5": 61_706,  # LeNet-5 with a full C3 connection table and plain pooling (paper: 60k with sparse C3)
    "lstm_seq2seq": 384_144_000,  # Sutskever et al. (2014): "384M parameters"
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_param_count_matches_paper(name: str) -> None:
    assert param_count(compile_graph(load_spec(f"specs/{name}.yaml"))) == PAPER[name]


def test_transformer_params_equal_torch_transformer_plus_shared_embedding() -> None:
    with torch.device("meta"):
        ref = nn.Transformer(d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                             batch_first=True)
        embed = nn.Embedding(37000, 512)
    assert param_count(compile_graph(load_spec("specs/transformer.yaml"))) == _count(ref) + _count(embed)


def test_recurrent_specs_equal_torch_modules() -> None:
    with torch.device("meta"):
        rnn = [nn.Embedding(10000, 100), nn.RNN(100, 128, batch_first=True), nn.Linear(128, 26)]
        lstm = [nn.Embedding(20000, 300), nn.LSTM(300, 168, batch_first=True), nn.Linear(168, 3)]
        s2s = [nn.Embedding(160000, 1000), nn.LSTM(1000, 1000, 4), nn.Embedding(80000, 1000),
               nn.LSTM(1000, 1000, 4), nn.Linear(1000, 80000)]
    for name, parts in (("rnn_intent", rnn), ("lstm_sentiment", lstm), ("lstm_seq2seq", s2s)):
        assert param_count(compile_graph(load_spec(f"specs/{name}.yaml"))) == sum(map(_count, parts)), name


def test_overrides_scale_a_spec() -> None:
    small = load_spec("specs/gpt.yaml", overrides={"d_model": 64, "layers": 2, "heads": 4, "vocab": 100, "n_ctx": 32})
    g = compile_graph(small)
    assert param_count(g) == 100 * 64 + 32 * 64 + 2 * (4 * 64 * 64 + 4 * 64 + 2 * 64 * 256 + 256 + 64 + 4 * 64) + 128
    assert str(graph_outputs(g)["logits"]) == "batch×seq×100"
    assert small.resolved_params["d_model"] == 64


def test_signatures_share_weights_by_node_id() -> None:
    spec = load_spec("specs/lstm_seq2seq.yaml", overrides={"layers": 2, "hidden": 32, "embed_dim": 16,
                                                             "src_vocab": 50, "tgt_vocab": 40})
    main = compile_graph(spec)
    step = compile_graph(spec, "decode_step")
    for nid in ("tgt_embed", "decoder", "project"):
        assert step.nodes[nid]["node"].weights == main.nodes[nid]["node"].weights
    assert "encoder" not in step
    assert [str(t) for t in graph_outputs(step).values()] == ["batch×1×40", "2×batch×32", "2×batch×32"]


def test_tied_weights_count_once() -> None:
    g = compile_graph(load_spec("specs/gpt.yaml"))
    head = g.nodes["lm_head"]["node"]
    assert head.weights == {} and head.ties == {"weight": ("wte", "weight")}
