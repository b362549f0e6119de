"""Greedy decoding on a built module: decoder-only language models (GPT) and encoder-decoders
driven by their signatures (an ``encode`` signature and one decoder signature).

The roles of a signature's inputs come from their names and types:

- a decoder input named like an output of ``encode`` (``memory``; ``h``, ``c``) takes that output;
- a decoder input named like an input of ``encode`` (``src_pad``) takes the same tensor;
- the one remaining integer input is the target tokens;
- a boolean input that nobody gives is a padding mask with no padding (all False);
- a decoder output named like one of its inputs (``h``, ``c``) is recurrent state: the decoder
  is then fed one token per step; otherwise it is fed the whole prefix each step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .module import SpecModule, spec_info

__all__ = ["generate"]


def generate(model: SpecModule, source: torch.Tensor | Mapping[str, torch.Tensor] | None = None, *,
             prompt: torch.Tensor | None = None, start_token: int | None = None, max_new_tokens: int = 32,
             end_token: int | None = None, encode: str = "encode", step: str | None = None) -> torch.Tensor:
    """Greedy decoding, batched.

    Args:
        model: a module from `to_torch` (a `SpecModule`).
        source: for an encoder-decoder, the encoder's token ids (batch, src_len), or its inputs
            by name; None for a decoder-only model.
        prompt: the tokens to continue (batch, t0); for an encoder-decoder the default is
            `start_token` alone.
        start_token: the target's first token (BOS) for an encoder-decoder without a prompt.
        max_new_tokens: the most tokens to add.
        end_token: a row that produces it is finished (later positions repeat it); decoding
            stops early once every row is finished.
        encode: the name of the encoder signature.
        step: the decoder signature (default: the model's one signature besides `encode`).

    Returns:
        int64 tokens (batch, t0 + n): the prompt (or start token) and the generated tokens.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if source is None:
                return _decoder_only(model, prompt, max_new_tokens, end_token)
            return _encoder_decoder(model, source, prompt, start_token, max_new_tokens, end_token, encode, step)
    finally:
        model.train(was_training)


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
    ints = [n for n in info["inputs"] if n not in taken and info["input_types"][n][1] in ("int64", "int32")]
    if len(ints) != 1:
        raise ValueError(f"generate: {_where(info)} needs exactly one token input, found {ints or 'none'}")
    return ints[0]


def _next(logits: torch.Tensor, tokens: torch.Tensor, finished: torch.Tensor, end_token: int | None) -> torch.Tensor:
    """Append the greedy choice for the last position; `finished` is updated in place."""
    choice = logits[:, -1].argmax(-1)  # (batch,)
    if end_token is not None:
        choice = torch.where(finished, torch.full_like(choice, end_token), choice)
        finished |= choice == end_token
    return torch.cat([tokens, choice[:, None]], dim=1)


def _decoder_only(model: nn.Module, prompt: torch.Tensor | None, max_new: int, end_token: int | None) -> torch.Tensor:
    if prompt is None:
        raise ValueError("generate: a decoder-only model needs a prompt (batch, t0)")
    info = _info(model)
    token = _token_input(model, set())
    window = info.get("max_len")
    logits_name = info["outputs"][0]
    tokens = prompt
    finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    for _ in range(max_new):
        feed = tokens if window is None else tokens[:, -window:]
        logits = _outputs(model, model(*_bind(model, {token: feed})))[logits_name]  # (batch, t, vocab)
        tokens = _next(logits, tokens, finished, end_token)
        if end_token is not None and bool(finished.all()):
            break
    return tokens


def _encoder_decoder(model: SpecModule, source: torch.Tensor | Mapping[str, torch.Tensor], prompt: torch.Tensor | None,
                     start_token: int | None, max_new: int, end_token: int | None, encode: str,
                     step: str | None) -> torch.Tensor:
    enc = model.signature(encode)
    given = dict(source) if isinstance(source, Mapping) else {_token_input(enc, set()): source}
    known: dict[str, torch.Tensor] = {**given, **_outputs(enc, enc(*_bind(enc, given)))}
    if step is None:
        others = [s for s in model.signatures if s != encode]
        if len(others) != 1:
            raise ValueError(f"generate: name the decoder signature with step= (signatures: {others})")
        step = others[0]
    dec = model.signature(step)
    info = _info(dec)
    token = _token_input(dec, set(known))
    recurrent = [n for n in info["outputs"] if n in info["inputs"]]
    logits_name = next(n for n in info["outputs"] if n not in recurrent)
    batch = next(iter(given.values())).shape[0]
    device = next(iter(given.values())).device
    if prompt is None:
        if start_token is None:
            raise ValueError("generate: give start_token (or a prompt) for the decoder")
        prompt = torch.full((batch, 1), start_token, dtype=torch.long, device=device)
    inputs = {k: v for k, v in known.items() if k in info["inputs"]}

    def run(feed: torch.Tensor) -> torch.Tensor:
        window = info.get("max_len")
        if not recurrent and window is not None:
            feed = feed[:, -window:]
        outs = _outputs(dec, dec(*_bind(dec, {**inputs, token: feed})))
        inputs.update({k: outs[k] for k in recurrent})  # the decoder's new state
        return outs[logits_name]

    tokens = prompt
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    if recurrent:
        for t in range(prompt.shape[1] - 1):  # run the prompt through the state first
            run(prompt[:, t:t + 1])
    for _ in range(max_new):
        logits = run(tokens[:, -1:] if recurrent else tokens)  # (batch, t, vocab)
        tokens = _next(logits, tokens, finished, end_token)
        if end_token is not None and bool(finished.all()):
            break
    return tokens
