"""Pre-train the `bert` spec, scaled down, with its two heads on synthetic data: masked-language
modelling and next-sentence prediction. Both losses fall.

A "sentence" is an arithmetic run of tokens (start s, step k: s, s+k, s+2k, ... modulo the
content vocabulary). Sentence B follows sentence A (IsNext) when it continues A's run, and is
an unrelated run otherwise (NotNext). Masked tokens are predictable from their neighbours, and
whether B continues A is decidable from the tokens, so both heads can learn.

    python examples/bert_pretrain.py [--steps 800] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnspec.backends.pytorch import to_torch  # noqa: E402

PAD, CLS, SEP, MASK, FIRST = 0, 1, 2, 3, 4
CONTENT, RUN = 28, 6  # content tokens FIRST .. FIRST + CONTENT - 1; each sentence has RUN tokens
OVERRIDES = {"vocab": FIRST + CONTENT, "hidden": 64, "heads": 4, "layers": 2, "intermediate": 128, "max_len": 32,
             "init_std": 0.02 * (768 / 64) ** 0.5}  # BERT's 0.02 is for width 768: keep std * sqrt(width)


def batch(size: int, gen: torch.Generator, mask_p: float = 0.15) -> dict[str, torch.Tensor]:
    """[CLS] A [SEP] B [SEP] with segment ids, MLM labels (-100 where not masked) and IsNext labels."""
    start = torch.randint(0, CONTENT, (size, 1), generator=gen)
    step = torch.randint(1, 4, (size, 1), generator=gen)
    pos = torch.arange(2 * RUN).unsqueeze(0)  # (1, 2 RUN)
    run = (start + step * pos) % CONTENT  # (size, 2 RUN): A then its continuation
    is_next = torch.rand(size, generator=gen) < 0.5
    other = (torch.randint(0, CONTENT, (size, 1), generator=gen) + torch.randint(1, 4, (size, 1), generator=gen)
             * torch.arange(RUN).unsqueeze(0)) % CONTENT  # an unrelated run
    b = torch.where(is_next.unsqueeze(1), run[:, RUN:], other)
    col = torch.full((size, 1), CLS), torch.full((size, 1), SEP)
    ids = torch.cat([col[0], run[:, :RUN] + FIRST, col[1], b + FIRST, col[1]], 1)  # (size, 2 RUN + 3)
    segment = torch.cat([torch.zeros(size, RUN + 2), torch.ones(size, RUN + 1)], 1).long()
    content = ids >= FIRST
    masked = content & (torch.rand(ids.shape, generator=gen) < mask_p)
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    return {"input_ids": ids.masked_fill(masked, MASK), "token_type_ids": segment,
            "padding_mask": torch.zeros_like(ids, dtype=torch.bool), "mlm_labels": labels, "is_next": is_next.long()}


def train(steps: int = 800, seed: int = 0, batch_size: int = 64, lr: float = 1e-3, threads: int = 1,
          verbose: bool = False) -> dict[str, list[float]]:
    """Train both heads together; returns the per-step MLM and NSP losses."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = to_torch(ROOT / "specs" / "bert.yaml", overrides=OVERRIDES)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"mlm": [], "nsp": []}
    start = time.time()
    model.train()
    for step in range(steps):
        b = batch(batch_size, gen)
        mlm_logits, nsp_logits = model(b["input_ids"], b["token_type_ids"], b["padding_mask"])
        mlm = F.cross_entropy(mlm_logits.flatten(0, 1), b["mlm_labels"].flatten(), ignore_index=-100)
        nsp = F.cross_entropy(nsp_logits, b["is_next"])
        opt.zero_grad()
        (mlm + nsp).backward()
        opt.step()
        history["mlm"].append(mlm.item())
        history["nsp"].append(nsp.item())
        if verbose and (step + 1) % 50 == 0:
            print(f"step {step + 1:4d}: MLM loss {_mean(history['mlm'][-50:]):.3f}, "
                  f"NSP loss {_mean(history['nsp'][-50:]):.3f} ({time.time() - start:.0f} s)")
    return history


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    history = train(args.steps, args.seed, verbose=True)
    ok = True
    for head in ("mlm", "nsp"):
        first, last = _mean(history[head][:20]), _mean(history[head][-20:])
        print(f"{head.upper()} loss: {first:.3f} -> {last:.3f}")
        ok = ok and last < 0.6 * first
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
