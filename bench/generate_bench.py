"""Generation speed with the key/value cache, as ratios measured in one run (not timed tests).

GPT-2 small (specs/gpt.yaml at its own size; random weights, which do not change the speed):
nnspec in onnxruntime (the derived ``with_past`` signature), nnspec in PyTorch (the same signature
on the built module) and Hugging Face's ``generate`` with its cache, greedy, every row forced to
make all its new tokens. Runs are interleaved (one of each contender per round) and the best
round is reported, with the given number of threads for every contender.

1. Tokens/s for prompt/new-token rows at batch 1 and batch 8. Target: onnxruntime with the cache
   at least 1.5x Hugging Face's generate at prompt 128, 128 new tokens, batch 1.
2. The time of one decode step after a context of 100 and of 900 tokens. Target: at most 1.5x.

    python bench/generate_bench.py [--threads 2] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnspec.backends.generation import Chooser, cached_loop  # noqa: E402
from nnspec.backends.onnx import to_onnx  # noqa: E402
from nnspec.backends.onnx.generate import OnnxSignature, generate_onnx  # noqa: E402
from nnspec.backends.pytorch import generate, to_torch  # noqa: E402
from nnspec.backends.pytorch.decoding import _torch_step  # noqa: E402
from nnspec.builder import load_spec  # noqa: E402

VOCAB = 50257


def _hf(threads: int) -> Any:
    import transformers

    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()


def _rounds(contenders: dict[str, Callable[[], int]], rounds: int) -> dict[str, float]:
    """Best tokens/s of each contender over interleaved rounds."""
    best: dict[str, float] = {k: 0.0 for k in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            made = run()
            best[name] = max(best[name], made / (time.perf_counter() - start))
    return best


def speed(ort: OnnxSignature, ours: Any, hf: Any, prompt_len: int, new: int, batch: int, rounds: int) -> dict[str, float]:
    prompt = np.random.default_rng(0).integers(0, VOCAB, size=(batch, prompt_len))
    tp = torch.from_numpy(prompt)

    def run_ort() -> int:
        return int(generate_onnx(ort, prompt=prompt, max_new_tokens=new)[:, prompt_len:].size)

    def run_torch() -> int:
        with torch.inference_mode():
            return int(generate(ours, prompt=tp, max_new_tokens=new)[:, prompt_len:].numel())

    def run_hf() -> int:
        with torch.inference_mode():
            out = hf.generate(tp, attention_mask=torch.ones_like(tp), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, use_cache=True, pad_token_id=0)
        return int(out[:, prompt_len:].numel())

    return _rounds({"onnxruntime": run_ort, "pytorch": run_torch, "hf": run_hf}, rounds)


def step_times(ort: OnnxSignature, ours: Any, contexts: tuple[int, ...], steps: int) -> dict[str, dict[int, float]]:
    """Median seconds per decode step after a prefill of each context length (batch 1)."""
    out: dict[str, dict[int, float]] = {"onnxruntime": {}, "pytorch": {}}
    steppers = {"onnxruntime": ort.step({}), "pytorch": _torch_step(ours.signature("with_past"), {}, torch.device("cpu"))}
    for ctx in contexts:
        prompt = np.random.default_rng(1).integers(0, VOCAB, size=(1, ctx))
        for name, step in steppers.items():
            times: list[float] = []

            def timed(tokens: np.ndarray, pos: np.ndarray, pad: np.ndarray, past: Any,
                      step: Any = step, times: list[float] = times) -> Any:
                start = time.perf_counter()
                res = step(tokens, pos, pad, past)
                if past is not None:  # decode steps only, not the prefill
                    times.append(time.perf_counter() - start)
                return res

            with torch.inference_mode():
                cached_loop(timed, prompt, np.zeros(prompt.shape, dtype=bool), steps + 1, Chooser(1))
            out[name][ctx] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_spec(ROOT / "specs" / "gpt.yaml")
    torch.manual_seed(0)
    ours = to_torch(spec).eval()
    ort = OnnxSignature(to_onnx(spec, ours.state_dict(), signature="with_past"), threads=args.threads)
    hf = _hf(args.threads)
    rows = [(16, 64, 1), (128, 128, 1), (128, 128, 8)] if not args.quick else [(16, 16, 1), (128, 16, 1)]
    print(f"GPT-2 small, {args.threads} threads, best of {args.rounds} interleaved rounds (tokens/s)")
    print("| prompt / new | batch | nnspec onnxruntime | nnspec PyTorch | HF generate | ort / HF | torch / HF |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for prompt_len, new, batch in rows:
        s = speed(ort, ours, hf, prompt_len, new, batch, args.rounds)
        print(f"| {prompt_len} / {new} | {batch} | {s['onnxruntime']:.1f} | {s['pytorch']:.1f} | {s['hf']:.1f} | "
              f"{s['onnxruntime'] / s['hf']:.2f} | {s['pytorch'] / s['hf']:.2f} |", flush=True)
    contexts = (100, 900)
    t = step_times(ort, ours, contexts, 8 if args.quick else 24)
    print("\nmedian decode step, batch 1 (ms)")
    print("| back end | context 100 | context 900 | ratio |")
    print("|---|---:|---:|---:|")
    for name, by_ctx in t.items():
        print(f"| {name} | {by_ctx[100] * 1e3:.1f} | {by_ctx[900] * 1e3:.1f} | {by_ctx[900] / by_ctx[100]:.2f} |")


if __name__ == "__main__":
    main()
