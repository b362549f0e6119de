"""Teach an encoder-decoder spec to reverse a token sequence; report greedy exact-match accuracy.

The spec (``lstm_seq2seq`` or ``transformer``) is scaled down with overrides, trained with
teacher forcing on random sequences, and decoded greedily through its signatures
(`nnspec.backends.pytorch.generate`, in decoding.py): ``encode`` once, then ``decode_step`` / ``decode`` per token.

    python examples/seq2seq_reverse.py --spec transformer [--steps 1500] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnspec.backends.pytorch import generate, to_torch  # noqa: E402

PAD, BOS, EOS, FIRST = 0, 1, 2, 3  # token ids; content tokens are FIRST .. FIRST + symbols - 1
SYMBOLS, LENGTH = 10, 6

CONFIGS: dict[str, dict[str, Any]] = {
    "lstm_seq2seq": {
        "overrides": {"src_vocab": FIRST + SYMBOLS, "tgt_vocab": FIRST + SYMBOLS, "embed_dim": 32, "hidden": 128,
                      "layers": 1, "dropout": 0.0},
        "lr": 3e-3, "steps": 800,
    },
    "transformer": {
        "overrides": {"vocab": FIRST + SYMBOLS, "d_model": 64, "heads": 4, "d_ff": 128, "layers": 2, "dropout": 0.1,
                      "max_len": 64},
        "lr": 1e-3, "steps": 400,
    },
}


def batch(size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random sources (size, LENGTH), decoder inputs [BOS, reversed] and targets [reversed, EOS]."""
    src = torch.randint(FIRST, FIRST + SYMBOLS, (size, LENGTH), generator=gen)
    rev = src.flip(1)
    bos = torch.full((size, 1), BOS)
    eos = torch.full((size, 1), EOS)
    return src, torch.cat([bos, rev], 1), torch.cat([rev, eos], 1)


def _logits(model: torch.nn.Module, name: str, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
    if name == "transformer":
        return model(src, tgt_in, src == PAD, tgt_in == PAD)  # no padding here: all-False masks
    return model(src, tgt_in)


def exact_match(model: torch.nn.Module, src: torch.Tensor) -> float:
    """The fraction of sequences whose greedy decoding is exactly the reversed source, then EOS."""
    out = generate(model, src, start_token=BOS, end_token=EOS, max_new_tokens=LENGTH + 1)
    want = torch.cat([torch.full((len(src), 1), BOS), src.flip(1), torch.full((len(src), 1), EOS)], 1)
    if out.shape != want.shape:
        return 0.0
    return (out == want).all(1).float().mean().item()


def train(name: str = "transformer", steps: int | None = None, seed: int = 0, batch_size: int = 64, threads: int = 1,
          verbose: bool = False) -> dict[str, float]:
    """Train the scaled-down spec; returns the final loss and the held-out exact-match accuracy."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    config = CONFIGS[name]
    model = to_torch(ROOT / "specs" / f"{name}.yaml", overrides=config["overrides"])
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    steps = steps or config["steps"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config["lr"], total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(steps):
        model.train()
        src, tgt_in, tgt_out = batch(batch_size, gen)
        logits = _logits(model, name, src, tgt_in)  # (batch, LENGTH + 1, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if verbose and (step + 1) % 100 == 0:
            print(f"step {step + 1:5d}: loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    test_src, _, _ = batch(500, torch.Generator().manual_seed(seed + 10_000))
    return {"loss": loss.item(), "exact_match": exact_match(model, test_src)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", choices=sorted(CONFIGS), default="transformer")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = train(args.spec, args.steps, args.seed, verbose=True)
    print(f"{args.spec}: greedy exact match on 500 held-out sequences {result['exact_match']:.1%}")
    return 0 if result["exact_match"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
