"""Greedy decoding in onnxruntime, driven by exported signatures, by the rules of the PyTorch
backend's `generate` (backends/pytorch/decoding.py), so that both give the same tokens:

- a decoder input named like an output of ``encode`` (``memory``; ``h``, ``c``) takes that output;
- a decoder input named like an input of ``encode`` (``src_pad``) takes the same array;
- the one remaining integer input is the target tokens;
- a boolean input that nobody gives is a padding mask with no padding (all False);
- a decoder output named like one of its inputs (``h``, ``c``) is recurrent state: the decoder
  is then fed one token per step; otherwise it is fed the whole prefix each step.

Output names are the spec's: an output that ONNX had to rename (``h_out``, because an input is
named ``h``) is read back under its spec name from the model's metadata.

    >>> models = {s: to_onnx(spec, state, signature=s) for s in ("encode", "decode_step")}
    >>> tokens = generate_onnx(models, src, start_token=1, max_new_tokens=20)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from .runtime import ModelSource, run_onnx, session

__all__ = ["OnnxSignature", "generate_onnx"]


class OnnxSignature:
    """One exported model (a signature), callable with inputs by name, returning outputs by spec name."""

    def __init__(self, model: ModelSource) -> None:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        renamed: dict[str, str] = json.loads(meta.get("nnspec.renamed_outputs", "{}"))
        self.name = meta.get("nnspec.signature") or proto.graph.name
        self.session = session(model)
        self.inputs: dict[str, tuple[list[int | str], int]] = {}
        for vi in proto.graph.input:
            t = vi.type.tensor_type
            self.inputs[vi.name] = ([d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim],
                                    t.elem_type)
        self.outputs = [renamed.get(o.name, o.name) for o in proto.graph.output]
        self.max_len = int(meta["nnspec.max_len"]) if "nnspec.max_len" in meta else None

    def token_input(self, taken: set[str]) -> str:
        ints = [n for n, (_, t) in self.inputs.items()
                if n not in taken and t in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)]
        if len(ints) != 1:
            raise ValueError(f"generate: '{self.name}' needs exactly one token input, found {ints or 'none'}")
        return ints[0]

    def __call__(self, given: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes = {d: n for name, arr in given.items() if name in self.inputs
                 for d, n in zip(self.inputs[name][0], arr.shape, strict=True) if isinstance(d, str)}
        feed = {}
        for name, (dims, elem) in self.inputs.items():
            if name in given:
                feed[name] = given[name]
            elif elem == onnx.TensorProto.BOOL:  # a padding mask nobody gives: no padding
                feed[name] = np.zeros([d if isinstance(d, int) else sizes[d] for d in dims], dtype=bool)
            else:
                raise ValueError(f"generate: input '{name}' of '{self.name}' is not given")
        return dict(zip(self.outputs, run_onnx(self.session, feed).values(), strict=True))


def _next(logits: np.ndarray, tokens: np.ndarray, finished: np.ndarray, end_token: int | None) -> np.ndarray:
    choice = logits[:, -1].argmax(-1)  # (batch,)
    if end_token is not None:
        choice = np.where(finished, end_token, choice)
        finished |= choice == end_token
    return np.concatenate([tokens, choice[:, None].astype(tokens.dtype)], axis=1)


def generate_onnx(models: ModelSource | Mapping[str | None, ModelSource], source: np.ndarray | Mapping[str, Any] | None = None,
                  *, prompt: np.ndarray | None = None, start_token: int | None = None, max_new_tokens: int = 32,
                  end_token: int | None = None, encode: str = "encode", step: str | None = None) -> np.ndarray:
    """Greedy decoding, batched, in onnxruntime.

    Args:
        models: a decoder-only model, or the exported signatures by name (``encode`` and one
            decoder signature).
        source: for an encoder-decoder, the encoder's token ids or its inputs by name.
        prompt: the tokens to continue (batch, t0); by default `start_token` alone.
        start_token: the target's first token for an encoder-decoder without a prompt.
        max_new_tokens: the most tokens to add.
        end_token: a row that produces it is finished; decoding stops once all are.
        encode: the name of the encoder signature.
        step: the decoder signature (default: the one signature besides `encode`).

    Returns:
        int64 tokens (batch, t0 + n).
    """
    if source is None:
        model = OnnxSignature(models[None] if isinstance(models, Mapping) else models)  # type: ignore[index]
        if prompt is None:
            raise ValueError("generate: a decoder-only model needs a prompt (batch, t0)")
        return _decoder_only(model, prompt, max_new_tokens, end_token)
    if not isinstance(models, Mapping):
        raise ValueError("generate: an encoder-decoder needs its signatures by name")
    if step is None:
        others = [s for s in models if s != encode and s is not None]
        if len(others) != 1:
            raise ValueError(f"generate: name the decoder signature with step= (signatures: {others})")
        step = others[0]
    enc, dec = OnnxSignature(models[encode]), OnnxSignature(models[step])
    given = dict(source) if isinstance(source, Mapping) else {enc.token_input(set()): source}
    known = {**given, **enc(given)}
    token = dec.token_input(set(known))
    recurrent = [n for n in dec.outputs if n in dec.inputs]
    logits_name = next(n for n in dec.outputs if n not in recurrent)
    batch = next(iter(given.values())).shape[0]
    if prompt is None:
        if start_token is None:
            raise ValueError("generate: give start_token (or a prompt) for the decoder")
        prompt = np.full((batch, 1), start_token, dtype=np.int64)
    inputs = {k: v for k, v in known.items() if k in dec.inputs}

    def run(feed: np.ndarray) -> np.ndarray:
        if not recurrent and dec.max_len is not None:
            feed = feed[:, -dec.max_len:]
        outs = dec({**inputs, token: feed})
        inputs.update({k: outs[k] for k in recurrent})  # the decoder's new state
        return outs[logits_name]

    tokens = prompt
    finished = np.zeros(batch, dtype=bool)
    if recurrent:
        for t in range(prompt.shape[1] - 1):
            run(prompt[:, t:t + 1])
    for _ in range(max_new_tokens):
        tokens = _next(run(tokens[:, -1:] if recurrent else tokens), tokens, finished, end_token)
        if end_token is not None and finished.all():
            break
    return tokens


def _decoder_only(model: OnnxSignature, prompt: np.ndarray, max_new: int, end_token: int | None) -> np.ndarray:
    token = model.token_input(set())
    logits_name = model.outputs[0]
    tokens = prompt
    finished = np.zeros(prompt.shape[0], dtype=bool)
    for _ in range(max_new):
        feed = tokens if model.max_len is None else tokens[:, -model.max_len:]
        tokens = _next(model({token: feed})[logits_name], tokens, finished, end_token)
        if end_token is not None and finished.all():
            break
    return tokens
