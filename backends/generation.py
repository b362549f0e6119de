"""What both back ends' `generate` share: choosing the next token (greedy, or temperature /
top-k / top-p sampling from a seeded generator), stop tokens, and the decoding loop over a
key/value cache (the derived ``with_past`` signature, see `nnspec.builder.kv_cache`).

Choices are made in numpy on the last position's logits, so that the PyTorch and the
onnxruntime paths pick the same tokens from the same logits, also when sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CacheStep", "Chooser", "Sampling", "cache_layout", "cached_loop", "cross_inputs", "pad_prompts", "past_to_present",
    "start_positions",
]

PAST_PREFIX, PRESENT_PREFIX = "past_key_values.", "present."
POSITIONS = "position_ids"
PAST_LENGTH = "past_sequence_length"

CacheStep = Callable[[np.ndarray, np.ndarray, np.ndarray, Any], tuple[np.ndarray, Any]]
"""One call of a cache signature: (tokens (B, L), positions (B, L), padding (B, P + L), past or
None at prefill) -> (the last position's logits (B, vocab) as numpy, the new past)."""


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen.

    Attributes:
        temperature: 0 picks the most likely token (greedy); otherwise logits are divided by it
            and a token is drawn.
        top_k: draw among the k most likely tokens only.
        top_p: draw among the fewest most likely tokens whose probabilities sum to at least p.
        seed: seeds the generator; the same seed gives the same tokens.
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


class Chooser:
    """Picks each row's next token and keeps track of the rows that produced a stop token.

    A finished row repeats the stop token it produced.
    """

    def __init__(self, batch: int, sampling: Sampling | None = None, stop_tokens: Sequence[int] = ()) -> None:
        self.sampling = sampling or Sampling()
        self.rng = np.random.default_rng(self.sampling.seed)
        self.stop = np.asarray(sorted(set(stop_tokens)), dtype=np.int64)
        self.finished = np.zeros(batch, dtype=bool)
        self.fill = np.zeros(batch, dtype=np.int64)

    @property
    def done(self) -> bool:
        return bool(self.stop.size) and bool(self.finished.all())

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """The next tokens (batch,) int64 from the last position's logits (batch, vocab)."""
        choice = self._choose(np.asarray(logits))
        if self.stop.size:
            choice = np.where(self.finished, self.fill, choice)
            stopped = np.isin(choice, self.stop) & ~self.finished
            self.fill = np.where(stopped, choice, self.fill)
            self.finished |= stopped
        return choice

    def _choose(self, logits: np.ndarray) -> np.ndarray:
        s = self.sampling
        if s.temperature == 0:
            return logits.argmax(-1).astype(np.int64)
        scores = logits.astype(np.float64) / s.temperature
        if s.top_k is not None and s.top_k < scores.shape[-1]:
            kth = np.partition(scores, -s.top_k, axis=-1)[:, -s.top_k][:, None]
            scores = np.where(scores < kth, -np.inf, scores)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        if s.top_p is not None and s.top_p < 1:
            order = np.argsort(-probs, axis=-1, kind="stable")
            sorted_probs = np.take_along_axis(probs, order, -1)
            drop = np.cumsum(sorted_probs, -1) - sorted_probs >= s.top_p  # keep the first that reaches p
            np.put_along_axis(probs, order, np.where(drop, 0.0, sorted_probs), -1)
            probs /= probs.sum(-1, keepdims=True)
        cdf = np.cumsum(probs, -1)
        u = self.rng.random(probs.shape[0])[:, None] * cdf[:, -1:]
        return np.minimum((cdf <= u).sum(-1), probs.shape[-1] - 1).astype(np.int64)


def pad_prompts(prompts: Sequence[Sequence[int]], pad_token: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prompts of different lengths, left-padded into one batch: tokens (B, T) and padding (B, T), True at padding."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    tokens = np.full((len(prompts), width), pad_token, dtype=np.int64)
    padding = np.ones((len(prompts), width), dtype=bool)
    for row, p in enumerate(prompts):
        tokens[row, width - len(p):] = np.asarray(p, dtype=np.int64)
        padding[row, width - len(p):] = False
    return tokens, padding


def start_positions(padding: np.ndarray) -> np.ndarray:
    """Positions of a (left-)padded prompt: real tokens count 0, 1, ...; padding gets 0."""
    return np.maximum(np.cumsum(~padding, axis=1) - 1, 0).astype(np.int64)


def cache_layout(inputs: Sequence[str], outputs: Sequence[str]) -> tuple[list[str], dict[str, str], str]:
    """The growing past inputs, present output -> past input, and the logits output of a cache signature.

    Past inputs without a present output (``past_key_values.{i}.encoder.*``: cross-attention keys and
    values) are fixed: see `cross_inputs`.
    """
    present = set(outputs)
    past = [n for n in inputs if n.startswith(PAST_PREFIX) and past_to_present(n) in present]
    feeds = {past_to_present(n): n for n in past}
    if not past:
        raise ValueError("generate: the cache signature has no present.* output for any past_key_values.* input")
    logits = next(n for n in outputs if not n.startswith(PRESENT_PREFIX))
    return past, feeds, logits


def past_to_present(name: str) -> str:
    """``past_key_values.0.key`` -> ``present.0.key``."""
    return f"{PRESENT_PREFIX}{name.removeprefix(PAST_PREFIX)}"


def cross_inputs(inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
    """The past inputs of a cache signature that stay fixed while decoding (cross-attention keys and values,
    computed once by the ``cross_kv`` graph, whose outputs are named ``present.*`` like them)."""
    present = set(outputs)
    return [n for n in inputs if n.startswith(PAST_PREFIX) and past_to_present(n) not in present]


def cached_loop(step: CacheStep, prompt: np.ndarray, padding: np.ndarray, max_new: int, chooser: Chooser,
                on_token: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """Prefill the cache with the prompt, then feed one token per step.

    Returns:
        int64 tokens (B, T + n): the prompt and the new tokens.
    """
    out = [prompt.astype(np.int64)]
    if max_new <= 0:
        return out[0]
    positions = start_positions(padding)
    logits, past = step(prompt, positions, padding, None)
    following = positions[:, -1:] + 1  # (B, 1)
    step_padding = np.zeros((prompt.shape[0], 1), dtype=bool)
    for i in range(max_new):
        choice = chooser(logits)
        out.append(choice[:, None])
        if on_token is not None:
            on_token(choice)
        if chooser.done or i == max_new - 1:
            break
        padding = np.concatenate([padding, step_padding], axis=1)
        logits, past = step(choice[:, None], following, padding, past)
        following = following + 1
    return np.concatenate(out, axis=1)
