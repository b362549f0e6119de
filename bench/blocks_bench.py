"""Blocks as modules: activation memory of a GPT-2 small training step with and without
``to_torch(..., checkpoint=True)``, and torch.compile time of the whole model against one block.

    .venv/bin/python bench/blocks_bench.py [--batch 4] [--seq 1024] [--skip-compile]

Activation memory is what autograd keeps for backward: the bytes of every tensor saved during
the forward (counted by ``torch.autograd.graph.saved_tensors_hooks``), parameters left out. The
peak of a training step is the weights, gradients and optimiser state plus this, so this is the
part that checkpointing can reduce. A backward pass after each forward checks that the step runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnspec.backends.pytorch import to_torch
from nnspec.backends.pytorch.blocks import BlockModule


def activation_bytes(checkpoint: bool, batch: int, seq: int, backward: bool) -> tuple[int, float]:
    """Bytes saved for backward by one GPT-2 small forward, and the step's seconds."""
    torch.manual_seed(0)
    model = to_torch("specs/gpt.yaml", checkpoint=checkpoint)
    weights = {p.data_ptr() for p in model.parameters()}
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in weights:
            saved[0] += t.numel() * t.element_size()
        return t

    tokens = torch.randint(0, 50257, (batch, seq + 1))
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    if backward:
        loss.backward()
    return saved[0], time.perf_counter() - start


def compile_seconds(target: str) -> float:
    """Seconds of the first call of torch.compile (inductor) on GPT-2 small, or on its first block."""
    torch.manual_seed(0)
    model = to_torch("specs/gpt.yaml").eval()
    torch._dynamo.reset()
    with torch.no_grad():
        if target == "whole":
            compiled = torch.compile(model)
            x: torch.Tensor = torch.randint(0, 50257, (1, 64))
        else:
            block = model.get_submodule("h.0")
            assert isinstance(block, BlockModule)
            compiled = torch.compile(block)
            x = torch.randn(1, 64, 768)
        start = time.perf_counter()
        compiled(x)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--backward", action="store_true", help="also run each step's backward")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    plain, t_plain = activation_bytes(False, args.batch, args.seq, args.backward)
    ckpt, t_ckpt = activation_bytes(True, args.batch, args.seq, args.backward)
    print(f"GPT-2 small, batch {args.batch}, seq {args.seq}: activations kept for backward "
          f"{plain / 2**30:.2f} GiB plain, {ckpt / 2**30:.3f} GiB checkpointed: {plain / ckpt:.1f}x less "
          f"(step {t_plain:.1f} s plain, {t_ckpt:.1f} s checkpointed)")
    if not args.skip_compile:
        whole = compile_seconds("whole")
        one = compile_seconds("block")
        print(f"torch.compile (inductor, forward, batch 1, seq 64): whole model {whole:.1f} s, one block {one:.1f} s "
              f"({whole / one:.1f}x)")


if __name__ == "__main__":
    main()
