"""Decoding on a built module: decoder-only language models (GPT, Llama) and encoder-decoders
driven by their signatures (an ``encode`` signature and one decoder signature).

Where the decoder has a key/value-cache signature (``with_past``, ``decode_with_past``: derived
from every causal decoder by `nnspec.builder.kv_cache`), the prompt is run once and then one token per
step, with the cache; otherwise the whole prefix is fed each step, as before. A cache signature
that takes cross-attention keys and values (``past_key_values.{i}.encoder.*``) gets them once,
from its ``cross_kv`` graph (``decode_cross_kv``) run on the encoder's output. The roles of a
signature's inputs come from their names and types:

- a decoder input named like an output of ``encode`` (``memory``; ``h``, ``c``) takes that output;
- a decoder input named like an input of ``encode`` (``src_pad``) takes the same tensor;
- the one remaining integer input (besides ``position_ids``) is the target tokens;
- a boolean input that nobody gives is a padding mask with no padding (all False);
- a decoder output named like one of its inputs (``h``, ``c``) is recurrent state: the decoder
  is then fed one token per step.

Tokens are chosen by `nnspec.backends.generation` (greedy, or seeded temperature / top-k / top-p
sampling), in numpy, so that onnxruntime's `generate_onnx` picks the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nnspec.builder.kv_cache import cache_name, cross_name, is_derived

from ..generation import (
    POSITIONS,
    CacheStep,
    Chooser,
    Sampling,
    cache_layout,
    cached_loop,
    cross_inputs,
    pad_prompts,
    past_to_present,
)
from .module import SpecModule, spec_info

__all__ = ["generate"]

Prompt = torch.Tensor | Sequence[Sequence[int]]


def generate(model: SpecModule, source: torch.Tensor | Mapping[str, torch.Tensor] | None = None, *,
             prompt: Prompt | None = None, start_token: int | None = None, max_new_tokens: int = 32,
             end_token: int | None = None, stop_tokens: Sequence[int] = (), padding_mask: torch.Tensor | None = None,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             use_cache: bool = True, on_token: Callable[[torch.Tensor], None] | None = None, encode: str = "encode",
             step: str | None = None) -> torch.Tensor:
    """Decoding, batched: greedy by default, or sampling with a seed.

    Args:
        model: a module from `to_torch` (a `SpecModule`).
        source: for an encoder-decoder, the encoder's token ids (batch, src_len), or its inputs
            by name; None for a decoder-only model.
        prompt: the tokens to continue (batch, t0), or prompts of different lengths (lists of
            ids), which are left-padded into one batch; for an encoder-decoder the default is
            `start_token` alone.
        start_token: the target's first token (BOS) for an encoder-decoder without a prompt.
        max_new_tokens: the most tokens to add.
        end_token: a stop token (kept for compatibility; see `stop_tokens`).
        stop_tokens: a row that produces one is finished (later positions repeat it); decoding
            stops early once every row is finished.
        padding_mask: bool (batch, t0), True where the prompt is (left) padding; each row then
            gives the tokens its prompt gives alone. Needs a cache signature.
        temperature: 0 is greedy; otherwise sample from softmax(logits / temperature).
        top_k: sample among the k most likely tokens.
        top_p: sample among the most likely tokens that reach probability p together.
        seed: seeds the sampling.
        use_cache: use the key/value-cache signature where the model has one.
        on_token: called with each step's new tokens (batch,), as they come.
        encode: the name of the encoder signature.
        step: the decoder signature (default: the model's one signature besides `encode` and
            the derived cache signatures).

    Returns:
        int64 tokens (batch, t0 + n): the prompt (or start token) and the generated tokens.
    """
    stops = [*stop_tokens, *([end_token] if end_token is not None else [])]
    sampling = Sampling(temperature, top_k, top_p, seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if source is None:
                prompt, padding_mask = _batch(prompt, padding_mask)
                chooser = Chooser(prompt.shape[0], sampling, stops)
                return _decoder_only(model, prompt, padding_mask, max_new_tokens, chooser, use_cache, on_token)
            return _encoder_decoder(model, source, prompt, start_token, max_new_tokens, sampling, stops, encode,
                                    step, use_cache, on_token)
    finally:
        model.train(was_training)


def _batch(prompt: Prompt | None, padding: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if prompt is None:
        raise ValueError("generate: a decoder-only model needs a prompt (batch, t0)")
    if isinstance(prompt, torch.Tensor):
        return prompt, padding
    if padding is not None:
        raise ValueError("generate: prompts given as lists are padded here; give padding_mask with a tensor prompt")
    tokens, pad = pad_prompts(prompt)
    return torch.from_numpy(tokens), (torch.from_numpy(pad) if pad.any() else None)


def _info(module: nn.Module) -> dict[str, Any]:
    return spec_info(module)


def _bind(module: nn.Module, given: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """The module's inputs in order: given by name, or (bool masks) all False, sized from the rest."""
    info = _info(module)
    sizes: dict[str, int] = {}
    for name, t in given.items():
        dims = info["input_types"].get(name, ((), ""))[0]
        sizes.update({d: int(n) for d, n in zip(dims, t.shape) if not d.isdigit()})
    device = next(iter(given.values())).device
    args = []
    for name in info["inputs"]:
        if name in given:
            args.append(given[name])
            continue
        dims, dtype = info["input_types"][name]
        if dtype != "bool":
            raise ValueError(f"generate: input '{name}' of {_where(info)} is not given")
        try:
            shape = [int(d) if d.isdigit() else sizes[d] for d in dims]
        except KeyError as exc:
            raise ValueError(f"generate: cannot size mask '{name}' of {_where(info)}: unknown dim {exc}") from None
        args.append(torch.zeros(shape, dtype=torch.bool, device=device))
    return args


def _where(info: Mapping[str, Any]) -> str:
    sig = info.get("signature")
    return f"'{info['name']}'" + (f" signature '{sig}'" if sig else "")


def _outputs(module: nn.Module, result: Any) -> dict[str, torch.Tensor]:
    names = _info(module)["outputs"]
    values = result if isinstance(result, tuple) else (result,)
    return dict(zip(names, values, strict=True))


def _token_input(module: nn.Module, taken: set[str]) -> str:
    info = _info(module)
    ints = [n for n in info["inputs"] if n not in taken and n != POSITIONS
            and info["input_types"][n][1] in ("int64", "int32")]
    if len(ints) != 1:
        raise ValueError(f"generate: {_where(info)} needs exactly one token input, found {ints or 'none'}")
    return ints[0]


def _append(chooser: Chooser, logits: torch.Tensor, tokens: torch.Tensor,
            on_token: Callable[[torch.Tensor], None] | None) -> torch.Tensor:
    """The tokens with each row's choice for the last position appended."""
    choice = torch.from_numpy(chooser(logits[:, -1].float().cpu().numpy())).to(tokens.device)  # (batch,)
    if on_token is not None:
        on_token(choice)
    return torch.cat([tokens, choice[:, None].to(tokens.dtype)], dim=1)


def _cache_signature(model: SpecModule, base: str | None, length: int, use_cache: bool) -> nn.Module | None:
    """The cache signature of `base` (None: the main graph), if the model has one and it fits `length` tokens."""
    name = cache_name(base)
    if not use_cache or name not in model.signatures:
        return None
    sig = model.signature(name)
    window = _info(sig).get("max_len")
    return None if window is not None and length > window else sig


def _torch_step(sig: nn.Module, fixed: Mapping[str, torch.Tensor], device: torch.device) -> CacheStep:
    """A `CacheStep` over a cache signature module; `fixed` inputs (an encoder's memory) are given every call."""
    info = _info(sig)
    past_names, feeds, logits_name = cache_layout(info["inputs"], info["outputs"])
    token = _token_input(sig, set(fixed))
    padding = _padding_input(info)
    order: list[str] = info["inputs"]

    def step(tokens: np.ndarray, positions: np.ndarray, pad: np.ndarray, past: Any) -> tuple[np.ndarray, Any]:
        if past is None:
            past = {n: _empty_past(info["input_types"][n], tokens.shape[0], device) for n in past_names}
        given = {**fixed, **past, token: torch.from_numpy(tokens).to(device),
                 POSITIONS: torch.from_numpy(positions).to(device), padding: torch.from_numpy(pad).to(device)}
        outs = dict(zip(info["outputs"], sig(*[given[n] for n in order]), strict=True))
        logits = outs[logits_name][:, -1].float().cpu().numpy()  # (batch, vocab)
        return logits, {feeds[o]: outs[o] for o in feeds}

    return step


def _fixed_inputs(sig: nn.Module, known: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inputs a cache signature takes every step: known ones (memory), and padding masks nobody gives (all False)."""
    info = _info(sig)
    given = {k: v for k, v in known.items() if k in info["inputs"]}
    sizes = {d: int(n) for name, t in given.items() for d, n in zip(info["input_types"][name][0], t.shape, strict=True)}
    device = next(iter(known.values())).device
    padding = _padding_input(info)
    for name, (dims, dtype) in info["input_types"].items():
        if dtype == "bool" and name not in given and name != padding:
            try:
                given[name] = torch.zeros([int(d) if d.isdigit() else sizes[d] for d in dims], dtype=torch.bool,
                                          device=device)
            except KeyError as exc:
                raise ValueError(f"generate: cannot size mask '{name}' of {_where(info)}: unknown dim {exc}") from None
    return given


def _padding_input(info: Mapping[str, Any]) -> str:
    """The cache signature's key padding mask: the bool input over past and new keys."""
    names = [n for n, (dims, dtype) in info["input_types"].items()
             if dtype == "bool" and dims and "past_sequence_length" in dims[-1]]
    if len(names) != 1:
        raise ValueError(f"generate: {_where(info)} needs one padding mask over past and new keys, found {names}")
    return names[0]


def _empty_past(t: tuple[tuple[str, ...], str], batch: int, device: torch.device) -> torch.Tensor:
    """A past of length 0 (batch, kv_heads, 0, head_dim): the prefill."""
    dims, dtype = t
    return torch.zeros((batch, int(dims[1]), 0, int(dims[3])), dtype=getattr(torch, dtype), device=device)


def _check_ids(module: nn.Module, name: str, ids: torch.Tensor) -> None:
    """Refuse token ids outside the embedding that input `name` indexes."""
    info = _info(module)
    bound = info.get("id_ranges", {}).get(name)
    if bound is not None and ids.numel() and not (int(ids.min()) >= 0 and int(ids.max()) < bound):
        bad = int(ids.max()) if int(ids.max()) >= bound else int(ids.min())
        raise ValueError(f"generate: token id {bad} is outside the {bound} ids that input '{name}' of {_where(info)} "
                         "takes")


def _decoder_only(model: SpecModule, prompt: torch.Tensor, padding: torch.Tensor | None, max_new: int,
                  chooser: Chooser, use_cache: bool, on_token: Callable[[torch.Tensor], None] | None) -> torch.Tensor:
    info = _info(model)
    _check_ids(model, _token_input(model, set()), prompt)
    sig = _cache_signature(model, None, prompt.shape[1] + max_new, use_cache)
    if sig is not None:
        pad = np.zeros(prompt.shape, dtype=bool) if padding is None else padding.cpu().numpy().astype(bool)
        out = cached_loop(_torch_step(sig, {}, prompt.device), prompt.cpu().numpy().astype(np.int64), pad, max_new,
                          chooser, None if on_token is None else lambda c: on_token(torch.from_numpy(c)))
        return torch.from_numpy(out).to(prompt.device)
    if padding is not None and bool(padding.any()):
        raise ValueError(f"generate: a padded batch needs a key/value-cache signature, and {_where(info)} has none "
                         "(or the prompt and new tokens exceed its context)")
    token = _token_input(model, set())
    window = info.get("max_len")
    logits_name = info["outputs"][0]
    tokens = prompt
    for _ in range(max_new):
        feed = tokens if window is None else tokens[:, -window:]
        logits = _outputs(model, model(*_bind(model, {token: feed})))[logits_name]  # (batch, t, vocab)
        tokens = _append(chooser, logits, tokens, on_token)
        if chooser.done:
            break
    return tokens


def _cross_keys(model: SpecModule, base: str, sig: nn.Module, known: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The cross-attention keys and values cache signature `sig` takes, computed once by the cross_kv graph of
    `base` from the encoder's output (`known`); none when `sig` takes none."""
    info = _info(sig)
    names = cross_inputs(info["inputs"], info["outputs"])
    if not names:
        return {}
    cross = model.signature(cross_name(base))
    outs = _outputs(cross, cross(*_bind(cross, {k: v for k, v in known.items() if k in _info(cross)["inputs"]})))
    return {n: outs[past_to_present(n)] for n in names}


def _decoder_signature(model: SpecModule, encode: str, step: str | None) -> str:
    if step is not None:
        return step
    others = [s for s in model.signatures if s != encode and not is_derived(s)]
    if len(others) != 1:
        raise ValueError(f"generate: name the decoder signature with step= (signatures: {others})")
    return others[0]


def _encoder_decoder(model: SpecModule, source: torch.Tensor | Mapping[str, torch.Tensor], prompt: Prompt | None,
                     start_token: int | None, max_new: int, sampling: Sampling, stops: list[int], encode: str,
                     step: str | None, use_cache: bool, on_token: Callable[[torch.Tensor], None] | None) -> torch.Tensor:
    enc = model.signature(encode)
    given = dict(source) if isinstance(source, Mapping) else {_token_input(enc, set()): source}
    known: dict[str, torch.Tensor] = {**given, **_outputs(enc, enc(*_bind(enc, given)))}
    step = _decoder_signature(model, encode, step)
    batch = next(iter(given.values())).shape[0]
    device = next(iter(given.values())).device
    if prompt is None:
        if start_token is None:
            raise ValueError("generate: give start_token (or a prompt) for the decoder")
        prompt = torch.full((batch, 1), start_token, dtype=torch.long, device=device)
    elif not isinstance(prompt, torch.Tensor):
        prompt = torch.tensor(prompt, dtype=torch.long, device=device)
    chooser = Chooser(batch, sampling, stops)
    cached = _cache_signature(model, step, prompt.shape[1] + max_new, use_cache)
    if cached is not None:
        fixed = _fixed_inputs(cached, {**known, **_cross_keys(model, step, cached, known)})
        out = cached_loop(_torch_step(cached, fixed, device), prompt.cpu().numpy().astype(np.int64),
                          np.zeros(prompt.shape, dtype=bool), max_new, chooser,
                          None if on_token is None else lambda c: on_token(torch.from_numpy(c)))
        return torch.from_numpy(out).to(device)
    dec = model.signature(step)
    info = _info(dec)
    token = _token_input(dec, set(known))
    recurrent = [n for n in info["outputs"] if n in info["inputs"]]
    logits_name = next(n for n in info["outputs"] if n not in recurrent)
    inputs = {k: v for k, v in known.items() if k in info["inputs"]}

    def run(feed: torch.Tensor) -> torch.Tensor:
        window = info.get("max_len")
        if not recurrent and window is not None:
            feed = feed[:, -window:]
        outs = _outputs(dec, dec(*_bind(dec, {**inputs, token: feed})))
        inputs.update({k: outs[k] for k in recurrent})  # the decoder's new state
        return outs[logits_name]

    tokens = prompt
    if recurrent:
        for t in range(prompt.shape[1] - 1):  # run the prompt through the state first
            run(prompt[:, t:t + 1])
    for _ in range(max_new):
        tokens = _append(chooser, run(tokens[:, -1:] if recurrent else tokens), tokens, on_token)
        if chooser.done:
            break
    return tokens
