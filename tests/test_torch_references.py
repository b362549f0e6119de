"""Seed architectures against independent implementations: the `transformer` spec against
torch.nn.Transformer with the same weights, embeddings and projection, and the parameter
count of every seed spec against a reference module built from torch.nn (and the published
figure where there is one)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from test_torch_specs import SPECS
from torch import nn
from zoo_references import LlamaForCausalLM, MobileNetV2, ResNet, UNet, VisionTransformer

from nnspec.backends.pytorch import to_torch
from nnspec.backends.pytorch.inputs import example_inputs


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- the transformer spec against torch.nn.Transformer ---------------------------------

def _sinusoid(n: int, d: int) -> torch.Tensor:
    """The PyTorch tutorial's PositionalEncoding table: pe[:, 0::2] = sin, pe[:, 1::2] = cos."""
    position = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


def _copy_into_reference(model: nn.Module, ref: nn.Transformer) -> None:
    """Our keys, renamed to torch.nn.Transformer's (encoder.3.x -> encoder.layers.3.x, encoder_norm -> encoder.norm)."""
    ours = model.state_dict()
    with torch.no_grad():
        for name, p in ref.state_dict().items():
            stack, rest = name.split(".", 1)
            key = f"{stack}_norm.{rest.split('.', 1)[1]}" if rest.startswith("norm.") else f"{stack}.{rest.split('.', 1)[1]}"
            p.copy_(ours[key])


@pytest.mark.parametrize("d_model,heads,layers", [(32, 4, 2), (48, 6, 3)])
def test_transformer_spec_matches_torch_nn_transformer(d_model: int, heads: int, layers: int) -> None:
    torch.manual_seed(0)
    vocab, d_ff = 50, 2 * d_model
    model = to_torch("specs/transformer.yaml", overrides={"vocab": vocab, "d_model": d_model, "heads": heads,
                                                          "d_ff": d_ff, "layers": layers, "max_len": 128}).eval()
    ref = nn.Transformer(d_model, heads, layers, layers, d_ff, dropout=0.1, batch_first=True).eval()
    _copy_into_reference(model, ref)
    embed = model.get_parameter("src_embed.weight")
    for seed, dims in enumerate([{"batch": 2, "src_len": 9, "tgt_len": 7}, {"batch": 3, "src_len": 4, "tgt_len": 12}]):
        src, tgt, src_pad, tgt_pad = example_inputs(model, dims, high=vocab, seed=seed)
        got = model(src, tgt, src_pad, tgt_pad)

        def embed_tokens(ids: torch.Tensor) -> torch.Tensor:
            return embed[ids] * math.sqrt(d_model) + _sinusoid(ids.shape[1], d_model)

        causal = torch.triu(torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool), diagonal=1)
        out = ref(embed_tokens(src), embed_tokens(tgt), tgt_mask=causal, src_key_padding_mask=src_pad,
                  tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
        want = out @ embed.T  # the projection shares the embedding
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-5


def test_transformer_reference_sees_a_changed_weight() -> None:
    """The comparison above can fail: a perturbed copy is far off."""
    torch.manual_seed(0)
    model = to_torch("specs/transformer.yaml", overrides={"vocab": 50, "d_model": 32, "heads": 4, "d_ff": 64,
                                                          "layers": 1, "max_len": 64}).eval()
    ref = nn.Transformer(32, 4, 1, 1, 64, batch_first=True).eval()
    _copy_into_reference(model, ref)
    with torch.no_grad():
        ref.decoder.layers[0].multihead_attn.in_proj_weight[0, 0] += 0.5
    src, tgt, src_pad, tgt_pad = example_inputs(model, {"batch": 2, "src_len": 5, "tgt_len": 5}, high=50)
    embed = model.get_parameter("src_embed.weight")
    x, y = embed[src] * math.sqrt(32) + _sinusoid(5, 32), embed[tgt] * math.sqrt(32) + _sinusoid(5, 32)
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    want = ref(x, y, tgt_mask=causal, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
               memory_key_padding_mask=src_pad) @ embed.T
    assert (model(src, tgt, src_pad, tgt_pad) - want).abs().max().item() > 1e-3


# --- parameter counts ------------------------------------------------------------------

def _lenet5() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
                         nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))


def _classifier(rnn: nn.Module, vocab: int, embed: int, hidden: int, classes: int) -> nn.Module:
    return nn.ModuleList([nn.Embedding(vocab, embed), rnn, nn.Linear(hidden, classes)])


def _seq2seq() -> nn.Module:
    return nn.ModuleList([nn.Embedding(160000, 1000), nn.LSTM(1000, 1000, 4), nn.Embedding(80000, 1000),
                          nn.LSTM(1000, 1000, 4), nn.Linear(1000, 80000)])


def _transformer() -> nn.Module:
    return nn.ModuleList([nn.Transformer(512, 8, 6, 6, 2048, batch_first=True), nn.Embedding(37000, 512)])  # one shared embedding


def _bert() -> nn.Module:
    h = 768
    layer = nn.TransformerEncoderLayer(h, 12, 3072, activation="gelu", batch_first=True)
    heads = nn.ModuleList([nn.Linear(h, h), nn.Linear(h, h), nn.LayerNorm(h), nn.Linear(h, 2)])  # pooler, MLM, NSP
    decoder_bias = nn.ParameterList([nn.Parameter(torch.zeros(30522))])  # the MLM decoder's weight is the embedding
    return nn.ModuleList([nn.Embedding(30522, h), nn.Embedding(512, h), nn.Embedding(2, h), nn.LayerNorm(h),
                          nn.TransformerEncoder(layer, 12, enable_nested_tensor=False), heads, decoder_bias])


def _gpt() -> nn.Module:
    d = 768

    def block() -> nn.Module:
        return nn.ModuleList([nn.LayerNorm(d), nn.MultiheadAttention(d, 12), nn.LayerNorm(d), nn.Linear(d, 4 * d),
                              nn.Linear(4 * d, d)])

    # the LM head is the token embedding, transposed: no parameters of its own
    return nn.ModuleList([nn.Embedding(50257, d), nn.Embedding(1024, d), *[block() for _ in range(12)], nn.LayerNorm(d)])


def _vgg16() -> nn.Module:
    """torchvision's vgg16 (configuration D); the spec's adaptive pool to 7x7 has no weights."""
    layers: list[nn.Module] = []
    channels = 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(width), 3, padding=1), nn.ReLU()]
            channels = int(width)
    classifier = [nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000)]
    return nn.Sequential(*layers, nn.Flatten(), *classifier)


REFERENCES: dict[str, tuple[Callable[[], nn.Module], int | None]] = {
    "lenet5": (_lenet5, 61_706),
    "rnn_intent": (lambda: _classifier(nn.RNN(100, 128), 10000, 100, 128, 26), None),
    "lstm_sentiment": (lambda: _classifier(nn.LSTM(300, 168), 20000, 300, 168, 3), None),
    "lstm_seq2seq": (_seq2seq, None),
    "transformer": (_transformer, None),
    "bert": (_bert, 110_106_428),  # Google's BERT-base checkpoint with its pre-training heads
    "gpt": (_gpt, 124_439_808),  # the released GPT-2 small
    # the zoo: counts of torchvision's models, milesial's U-Net (3 channels in, 2 classes) and TinyLlama-1.1B
    "vgg16": (_vgg16, 138_357_544),
    "resnet50": (ResNet, 25_557_032),
    "mobilenet_v2": (MobileNetV2, 3_504_872),
    "unet": (lambda: UNet(3, 2), 31_037_698),
    "vit_b16": (VisionTransformer, 86_567_656),
    "llama": (LlamaForCausalLM, 1_100_048_384),
}


def test_every_seed_spec_has_a_reference() -> None:
    assert sorted(REFERENCES) == SPECS


@pytest.mark.parametrize("name", SPECS)
def test_parameter_count(name: str) -> None:
    build, published = REFERENCES[name]
    with torch.device("meta"):
        reference = _count(build())
    ours = _count(to_torch(f"specs/{name}.yaml", device="meta"))
    assert ours == reference
    if published is not None:
        assert ours == published
