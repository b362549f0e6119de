"""Train the `gpt` spec, scaled down, as a character-level language model on a small corpus.

The corpus is text that ships with Python (the Zen of Python and the docstrings of some
standard-library modules); every tenth block of it is held out. Reports the held-out loss against the unigram entropy of
the characters, and a greedy continuation of a prompt.

    python examples/gpt_chars.py [--steps 600] [--seed 0]
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import importlib
import inspect
import io
import math
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnspec.backends.pytorch import generate, to_torch  # noqa: E402

CONTEXT = 64
OVERRIDES = {"n_ctx": CONTEXT, "d_model": 64, "layers": 2, "heads": 4, "dropout": 0.0,
             "init_std": 0.02 * (768 / 64) ** 0.5}  # GPT-2's 0.02 is for width 768: keep std * sqrt(width)
BLOCK = 512  # every tenth block of the corpus is held out


STDLIB = ("argparse", "collections", "contextlib", "csv", "dataclasses", "datetime", "decimal", "fractions",
          "functools", "itertools", "json", "logging", "pathlib", "re", "string", "subprocess", "textwrap", "threading",
          "typing", "unittest")


def corpus() -> str:
    """About 120 kB of English: the Zen of Python and the docstrings of some standard-library modules."""
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen of Python
        import this
    parts = [codecs.decode(this.s, "rot13")]
    for name in STDLIB:
        module = importlib.import_module(name)
        parts.append(inspect.cleandoc(module.__doc__ or ""))
        for attr in sorted(getattr(module, "__all__", [])):
            doc = getattr(getattr(module, attr, None), "__doc__", None)
            if isinstance(doc, str) and not isinstance(getattr(module, attr), str | int | float):
                parts.append(inspect.cleandoc(doc))
    return "\n\n".join(p for p in parts if p)


def unigram_entropy(text: str) -> float:
    """Entropy of the character distribution, in nats (the loss of a model that ignores context)."""
    counts = Counter(text)
    total = len(text)
    return -sum(c / total * math.log(c / total) for c in counts.values())


def train(steps: int = 600, seed: int = 0, batch_size: int = 32, lr: float = 3e-3, threads: int = 1,
          verbose: bool = False) -> dict[str, object]:
    """Train; returns the unigram entropy, the held-out loss and a sample (all losses in nats)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    text = corpus()
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    blocks = list(ids.split(BLOCK))
    train_ids = torch.cat([b for i, b in enumerate(blocks) if i % 10 != 5])
    test_ids = torch.cat([b for i, b in enumerate(blocks) if i % 10 == 5])
    model = to_torch(ROOT / "specs" / "gpt.yaml", overrides={**OVERRIDES, "vocab": len(chars)})
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(steps):
        model.train()
        starts = torch.randint(0, len(train_ids) - CONTEXT - 1, (batch_size,), generator=gen)
        x = torch.stack([train_ids[s:s + CONTEXT] for s in starts])  # (batch, CONTEXT)
        y = torch.stack([train_ids[s + 1:s + CONTEXT + 1] for s in starts])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if verbose and (step + 1) % 100 == 0:
            print(f"step {step + 1:4d}: train loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    prompt = "Beautiful is better"
    tokens = generate(model, prompt=torch.tensor([[chars.index(c) for c in prompt]]), max_new_tokens=80)
    return {
        "unigram_entropy": unigram_entropy(text),
        "test_loss": _loss(model, test_ids),
        "sample": "".join(chars[int(i)] for i in tokens[0]),
    }


def _loss(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """Mean next-character loss over consecutive windows of `ids`."""
    model.eval()
    n = (len(ids) - 1) // CONTEXT
    x = ids[: n * CONTEXT].view(n, CONTEXT)
    y = ids[1: n * CONTEXT + 1].view(n, CONTEXT)
    with torch.no_grad():
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = train(args.steps, args.seed, verbose=True)
    print(f"unigram entropy {result['unigram_entropy']:.3f} nats/char, held-out loss {result['test_loss']:.3f}")
    print(f"sample: {result['sample']!r}")
    return 0 if result["test_loss"] < 0.75 * result["unigram_entropy"] else 1  # type: ignore[operator]


if __name__ == "__main__":
    sys.exit(main())
