"""PyTorch backend speed, as ratios measured in one run (not timed tests).

1. Forward pass of the module `to_torch` builds vs a hand-written nn.Module of the same
   architecture with the same weights (LeNet-5, the base Transformer, GPT-2 small). Target: within 5%.
2. Build time, load + check + build (`to_torch(path)`), vs constructing the hand-written module
   (BERT-base, GPT-2 small: within 1.1x; LeNet-5: under 5 ms of overhead).

Timings interleave the two contenders and report medians.

    python bench/torch_speed.py [--threads 2] [--repeats 15] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnspec.backends.pytorch import to_torch  # noqa: E402
from nnspec.backends.pytorch.emitter import sinusoid_table  # noqa: E402

# --- hand-written references (named so that their state_dicts load from ours) ------------


class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c3, self.c5 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5), nn.Conv2d(16, 120, 5)
        self.f6, self.out = nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(torch.tanh(self.c1(image)), 2)
        x = F.avg_pool2d(torch.tanh(self.c3(x)), 2)
        x = torch.flatten(torch.tanh(self.c5(x)), 1)
        return self.out(torch.tanh(self.f6(x)))


class Transformer(nn.Module):
    """Vaswani et al.'s base model with torch.nn.Transformer, one shared embedding and projection."""

    def __init__(self, vocab: int = 37000, d: int = 512, heads: int = 8, d_ff: int = 2048, layers: int = 6) -> None:
        super().__init__()
        self.d = d
        self.embed = nn.Embedding(vocab, d)
        self.transformer = nn.Transformer(d, heads, layers, layers, d_ff, batch_first=True)
        self.register_buffer("pe", sinusoid_table(5000, d), persistent=False)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_pad: torch.Tensor, tgt_pad: torch.Tensor) -> torch.Tensor:
        x = self.embed(src) * math.sqrt(self.d) + self.pe[: src.shape[1]]
        y = self.embed(tgt) * math.sqrt(self.d) + self.pe[: tgt.shape[1]]
        causal = torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool, device=tgt.device).triu(1)
        out = self.transformer(x, y, tgt_mask=causal, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                               memory_key_padding_mask=src_pad)
        return F.linear(out, self.embed.weight)


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.attn_proj(y)
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    """nanoGPT-style GPT-2 small: scaled_dot_product_attention, LM head tied to the token embedding."""

    def __init__(self, vocab: int = 50257, n_ctx: int = 1024, d: int = 768, layers: int = 12, heads: int = 12) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.apply(_paper_init)  # GPT-2's initialisation, as nanoGPT writes it (the spec's init:)
        for name, p in self.named_parameters():
            if name.endswith(("c_proj.weight", "attn_proj.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


class MhaBlock(nn.Module):
    """A GPT-2 block written with nn.MultiheadAttention, the layer the spec's op names."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=0.1, batch_first=True)
        self.c_fc, self.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).triu(1)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=causal, is_causal=True)[0]
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class MhaGPT(GPT):
    def __init__(self, layers: int = 12) -> None:
        super().__init__(layers=layers)
        self.h = nn.ModuleList(MhaBlock(768, 12) for _ in range(layers))


class BertLayer(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(d, heads, dropout=0.1, batch_first=True)
        self.attention_norm, self.output_norm = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)
        self.intermediate, self.output = nn.Linear(d, d_ff), nn.Linear(d_ff, d)


class Bert(nn.Module):
    """BERT-base with its pre-training heads (construction only: the build-time comparison)."""

    def __init__(self, vocab: int = 30522, d: int = 768, layers: int = 12, heads: int = 12, d_ff: int = 3072) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d, padding_idx=0)
        self.token_type_embeddings, self.position_embeddings = nn.Embedding(2, d), nn.Embedding(512, d)
        self.embeddings_norm = nn.LayerNorm(d, eps=1e-12)
        self.encoder = nn.ModuleList(BertLayer(d, heads, d_ff) for _ in range(layers))
        self.pooler, self.mlm_transform, self.nsp = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 2)
        self.mlm_norm = nn.LayerNorm(d, eps=1e-12)
        self.mlm_bias = nn.Parameter(torch.zeros(vocab))
        self.apply(_paper_init)  # BERT's initialisation, as Hugging Face writes it (the spec's init:)


def _paper_init(module: nn.Module) -> None:
    """N(0, 0.02) weights and zero biases, GPT-2's and BERT's initialisation (nanoGPT's and
    Hugging Face's `_init_weights`), applied after construction as they apply it."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
    elif isinstance(module, nn.MultiheadAttention):
        nn.init.normal_(module.in_proj_weight, 0.0, 0.02)


# --- timing ----------------------------------------------------------------------------

def _median_pair(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of `a` and of `b`, run alternately after one warm-up each."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def _load_ours_into(hand: nn.Module, ours: nn.Module, rename: Callable[[str], str] = lambda k: k) -> None:
    """Copy our weights into the hand-written module (keys renamed), so both compute the same thing."""
    state = ours.state_dict()
    with torch.no_grad():
        for key, p in hand.state_dict().items():
            source = rename(key)
            if source in state:
                p.copy_(state[source])


def _transformer_key(key: str) -> str:
    if key.startswith("embed."):
        return "src_embed.weight"
    stack, rest = key.split(".", 2)[1:]
    if rest.startswith("norm."):
        return f"{stack}_norm.{rest[5:]}"
    return f"{stack}.{rest.split('.', 1)[1]}"


def _gpt_key(key: str) -> str:
    return key.replace(".c_attn.", ".attn.in_proj_").replace(".attn_proj.", ".attn.out_proj.")


def forward_ratios(repeats: int, quick: bool) -> list[tuple[str, float, float]]:
    rows = []
    torch.manual_seed(0)
    cases: list[tuple[str, nn.Module, nn.Module, tuple[torch.Tensor, ...], Callable[[str], str]]] = []
    ours = to_torch(ROOT / "specs" / "lenet5.yaml")
    cases.append(("LeNet-5, batch 256", ours, LeNet5(), (torch.randn(256, 1, 32, 32),), lambda k: k))
    layers = 2 if quick else 6
    ours = to_torch(ROOT / "specs" / "transformer.yaml", overrides={"layers": layers})
    src, tgt = torch.randint(0, 37000, (8, 64)), torch.randint(0, 37000, (8, 64))
    pads = (torch.zeros(8, 64, dtype=torch.bool), torch.zeros(8, 64, dtype=torch.bool))
    cases.append((f"Transformer base ({layers}+{layers} layers), batch 8x64", ours, Transformer(layers=layers),
                  (src, tgt, *pads), _transformer_key))
    layers = 4 if quick else 12
    ours = to_torch(ROOT / "specs" / "gpt.yaml", overrides={"layers": layers})
    tokens = (torch.randint(0, 50257, (2, 128)),)
    cases.append((f"GPT-2 small ({layers} layers), batch 2x128, vs nn.MultiheadAttention", ours, MhaGPT(layers=layers),
                  tokens, lambda k: k))
    cases.append((f"GPT-2 small ({layers} layers), batch 2x128, vs nanoGPT-style sdpa", ours, GPT(layers=layers),
                  tokens, _gpt_key))
    for label, model, hand, args, rename in cases:
        _load_ours_into(hand, model, rename)
        model.eval()
        hand.eval()
        with torch.no_grad():
            diff = (model(*args) - hand(*args)).abs().max().item()
            t_ours, t_hand = _median_pair(lambda m=model, a=args: m(*a), lambda h=hand, a=args: h(*a), repeats)
        rows.append((f"{label} (max abs diff {diff:.1e})", t_ours, t_hand))
    return rows


def build_ratios(repeats: int) -> list[tuple[str, float, float]]:
    rows = []
    for name, hand in (("bert", Bert), ("gpt", GPT)):
        t_ours, t_hand = _median_pair(lambda n=name: to_torch(ROOT / "specs" / f"{n}.yaml"), hand, max(3, repeats // 5))
        rows.append((f"build {name} (load + check + build vs constructor + paper init)", t_ours, t_hand))
    t_ours, t_hand = _median_pair(lambda: to_torch(ROOT / "specs" / "lenet5.yaml"), LeNet5, repeats * 4)
    rows.append(("build lenet5 (load + check + build vs constructor)", t_ours, t_hand))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="fewer layers and repeats (a smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    print(f"torch {torch.__version__}, {args.threads} threads, medians of {repeats} interleaved runs, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':80s} {'nnspec':>10s} {'by hand':>10s} {'ratio':>7s} {'overhead':>10s}")
    for label, ours, hand in [*forward_ratios(repeats, args.quick), *build_ratios(repeats)]:
        print(f"{label:80s} {ours * 1e3:8.2f}ms {hand * 1e3:8.2f}ms {ours / hand:7.3f} {(ours - hand) * 1e3:8.2f}ms")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
