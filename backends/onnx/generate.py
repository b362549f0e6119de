"""Decoding in onnxruntime, driven by exported signatures, by the rules of the PyTorch
backend's `generate` (backends/pytorch/decoding.py), so that both give the same tokens:

- a model with ``past_key_values.*`` inputs (the derived ``with_past`` / ``decode_with_past``
  signatures) is run once over the prompt, then one token per step, with the cache; the
  cross-attention keys and values it takes (``past_key_values.{i}.encoder.*``) come once from
  the derived ``decode_cross_kv`` model, run on the encoder's output;
- a decoder input named like an output of ``encode`` (``memory``; ``h``, ``c``) takes that output;
- a decoder input named like an input of ``encode`` (``src_pad``) takes the same array;
- the one remaining integer input (besides ``position_ids``) is the target tokens;
- a boolean input that nobody gives is a padding mask with no padding (all False);
- a decoder output named like one of its inputs (``h``, ``c``) is recurrent state: the decoder
  is then fed one token per step; otherwise it is fed the whole prefix each step.

Output names are the spec's: an output that ONNX had to rename (``h_out``, because an input is
named ``h``) is read back under its spec name from the model's metadata.

    >>> models = {s: to_onnx(spec, state, signature=s) for s in ("encode", "decode_cross_kv", "decode_with_past")}
    >>> tokens = generate_onnx(models, src, start_token=1, max_new_tokens=20)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from nnspec.builder.kv_cache import CACHE_SUFFIX, cross_name, is_derived

from ..generation import (
    PAST_LENGTH,
    PAST_PREFIX,
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
from .runtime import ModelSource, _id_bounds, run_onnx, session

__all__ = ["OnnxSignature", "generate_onnx"]


class OnnxSignature:
    """One exported model (a signature), callable with inputs by name, returning outputs by spec name."""

    def __init__(self, model: ModelSource, threads: int = 0) -> None:
        """Load `model` into an onnxruntime session (`threads`: intra-op threads, 0 for onnxruntime's choice)."""
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        renamed: dict[str, str] = json.loads(meta.get("nnspec.renamed_outputs", "{}"))
        self.name = meta.get("nnspec.signature") or proto.graph.name
        self.session = session(model, threads=threads)
        self.inputs: dict[str, tuple[list[int | str], int]] = {}
        for vi in proto.graph.input:
            t = vi.type.tensor_type
            self.inputs[vi.name] = ([d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim],
                                    t.elem_type)
        self.outputs = [renamed.get(o.name, o.name) for o in proto.graph.output]
        self.max_len = int(meta["nnspec.max_len"]) if "nnspec.max_len" in meta else None
        self.id_bounds = _id_bounds(proto)  # integer inputs that index a table: ids below its size

    def check_ids(self, name: str, ids: np.ndarray) -> None:
        """Refuse token ids outside the table that input `name` indexes (onnxruntime would fail inside)."""
        bound = self.id_bounds.get(name)
        if bound is not None and ids.size and not (int(ids.min()) >= 0 and int(ids.max()) < bound):
            bad = int(ids.max()) if int(ids.max()) >= bound else int(ids.min())
            raise ValueError(f"token id {bad} is outside the {bound} ids that input '{name}' of '{self.name}' takes")

    @property
    def cached(self) -> bool:
        """Whether the model takes a key/value cache (a derived ``with_past`` signature)."""
        return any(n.startswith(PAST_PREFIX) for n in self.inputs)

    def token_input(self, taken: set[str]) -> str:
        ints = [n for n, (_, t) in self.inputs.items()
                if n not in taken and n != POSITIONS and t in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)]
        if len(ints) != 1:
            raise ValueError(f"generate: '{self.name}' needs exactly one token input, found {ints or 'none'}")
        return ints[0]

    def padding_input(self) -> str:
        """The cache signature's key padding mask: the bool input over past and new keys."""
        names = [n for n, (dims, elem) in self.inputs.items()
                 if elem == onnx.TensorProto.BOOL and dims and PAST_LENGTH in str(dims[-1])]
        if len(names) != 1:
            raise ValueError(f"generate: '{self.name}' needs one padding mask over past and new keys, found {names}")
        return names[0]

    def feed(self, given: Mapping[str, np.ndarray], skip: set[str] = frozenset()) -> dict[str, np.ndarray]:  # type: ignore[assignment]
        """`given` with every bool input nobody gives (and not in `skip`) as a mask of no padding."""
        sizes = {d: n for name, arr in given.items() if name in self.inputs
                 for d, n in zip(self.inputs[name][0], arr.shape, strict=True) if isinstance(d, str)}
        feed = {}
        for name, (dims, elem) in self.inputs.items():
            if name in given:
                feed[name] = given[name]
            elif name in skip:
                continue
            elif elem == onnx.TensorProto.BOOL:  # a padding mask nobody gives: no padding
                feed[name] = np.zeros([d if isinstance(d, int) else sizes[d] for d in dims], dtype=bool)
            else:
                raise ValueError(f"generate: input '{name}' of '{self.name}' is not given")
        return feed

    def __call__(self, given: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, run_onnx(self.session, self.feed(given)).values(), strict=True))

    def step(self, fixed: Mapping[str, np.ndarray]) -> CacheStep:
        """A `CacheStep` over this cache signature; `fixed` inputs (an encoder's memory) are given every call."""
        past_names, feeds, logits_name = cache_layout(list(self.inputs), self.outputs)
        token = self.token_input(set(fixed))
        padding = self.padding_input()
        per_step = {token, padding, POSITIONS, *past_names}
        fixed = self.feed({k: v for k, v in fixed.items() if k in self.inputs}, per_step)
        run, order = self.session.run, [o.name for o in self.session.get_outputs()]
        dtypes = {n: onnx.helper.tensor_dtype_to_np_dtype(self.inputs[n][1]) for n in past_names}
        positions = POSITIONS in self.inputs

        def step(tokens: np.ndarray, pos: np.ndarray, pad: np.ndarray, past: Any) -> tuple[np.ndarray, Any]:
            if past is None:  # the prefill: a past of length 0 (batch, kv_heads, 0, head_dim)
                past = {n: np.zeros((tokens.shape[0], int(self.inputs[n][0][1]), 0, int(self.inputs[n][0][3])),
                                    dtype=dtypes[n]) for n in past_names}
            feed = {**fixed, **past, token: tokens, padding: pad}
            if positions:
                feed[POSITIONS] = pos
            outs = dict(zip(self.outputs, run(order, feed), strict=True))
            return outs[logits_name][:, -1], {feeds[o]: outs[o] for o in feeds}

        return step




Stream = Callable[[np.ndarray], None]


Model = ModelSource | OnnxSignature


def generate_onnx(models: Model | Mapping[str | None, Model], source: np.ndarray | Mapping[str, Any] | None = None,
                  *, prompt: np.ndarray | Sequence[Sequence[int]] | None = None, start_token: int | None = None,
                  max_new_tokens: int = 32, end_token: int | None = None, stop_tokens: Sequence[int] = (),
                  padding_mask: np.ndarray | None = None, temperature: float = 0.0, top_k: int | None = None,
                  top_p: float | None = None, seed: int | None = None, use_cache: bool = True,
                  on_token: Stream | None = None, encode: str = "encode", step: str | None = None) -> np.ndarray:
    """Decoding, batched, in onnxruntime: greedy by default, or sampling with a seed.

    Args:
        models: a decoder-only model (with or without a cache; a ModelProto, a path, or an
            `OnnxSignature` whose session is reused), or the exported signatures by
            name (``encode`` and a decoder signature, ``decode`` and/or ``decode_with_past``, with
            ``decode_cross_kv`` where that takes cross-attention keys and values; for a
            decoder-only model the main graph under None and/or ``with_past``).
        source: for an encoder-decoder, the encoder's token ids or its inputs by name.
        prompt: the tokens to continue (batch, t0), or prompts of different lengths (lists of
            ids), left-padded into one batch; by default `start_token` alone.
        start_token: the target's first token for an encoder-decoder without a prompt.
        max_new_tokens: the most tokens to add.
        end_token: a stop token (kept for compatibility; see `stop_tokens`).
        stop_tokens: a row that produces one is finished (later positions repeat it); decoding
            stops once all are.
        padding_mask: bool (batch, t0), True where the prompt is (left) padding; needs a cache model.
        temperature: 0 is greedy; otherwise sample from softmax(logits / temperature).
        top_k: sample among the k most likely tokens.
        top_p: sample among the most likely tokens that reach probability p together.
        seed: seeds the sampling (the PyTorch back end draws the same tokens from the same logits).
        use_cache: use a cache model where one is given.
        on_token: called with each step's new tokens (batch,), as they come.
        encode: the name of the encoder signature.
        step: the decoder signature (default: the one signature besides `encode`, the cached one
            where both are given).

    Returns:
        int64 tokens (batch, t0 + n).
    """
    stops = [*stop_tokens, *([end_token] if end_token is not None else [])]
    sampling = Sampling(temperature, top_k, top_p, seed)
    table: Mapping[str | None, Model] = models if isinstance(models, Mapping) else {None: models}
    if source is None:
        if prompt is None:
            raise ValueError("generate: a decoder-only model needs a prompt (batch, t0)")
        tokens, padding = _batch(prompt, padding_mask)
        cached = _pick_cached(table, [None, "with_past"], use_cache, tokens.shape[1] + max_new_tokens)
        chooser = Chooser(tokens.shape[0], sampling, stops)
        if cached is not None:
            cached.check_ids(cached.token_input(set()), tokens)
            return cached_loop(cached.step({}), tokens, padding, max_new_tokens, chooser, on_token)
        if padding.any():
            raise ValueError("generate: a padded batch needs a key/value-cache model (the with_past signature)")
        plain = [v for k, v in table.items() if k in (None, "with_past")]
        model = _signature(plain[0])
        if model.cached:
            raise ValueError("generate: use_cache=False needs the model without a cache (the main graph)")
        return _decoder_only(model, tokens, max_new_tokens, chooser, on_token)
    if not isinstance(models, Mapping):
        raise ValueError("generate: an encoder-decoder needs its signatures by name")
    return _encoder_decoder(table, source, prompt, start_token, max_new_tokens, sampling, stops, encode, step,
                            use_cache, on_token)


def _batch(prompt: np.ndarray | Sequence[Sequence[int]], padding: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(prompt, np.ndarray):
        pad = np.zeros(prompt.shape, dtype=bool) if padding is None else np.asarray(padding, dtype=bool)
        return prompt.astype(np.int64), pad
    if padding is not None:
        raise ValueError("generate: prompts given as lists are padded here; give padding_mask with an array prompt")
    return pad_prompts(prompt)


def _pick_cached(table: Mapping[str | None, Model], names: list[str | None], use_cache: bool,
                 length: int) -> OnnxSignature | None:
    """The first of `names` in `table` that is a cache model, or None (none given, use_cache off, or
    `length` tokens past its context, where a model without a cache crops the prefix instead)."""
    if not use_cache:
        return None
    for name in names:
        if name in table:
            sig = _signature(table[name])
            if not sig.cached:
                continue
            if sig.max_len is not None and length > sig.max_len:
                if any(not _signature(m).cached for m in table.values()):
                    return None
                raise ValueError(f"generate: {length} tokens exceed the context of '{sig.name}' ({sig.max_len})")
            return sig
    return None


def _signature(model: ModelSource | OnnxSignature) -> OnnxSignature:
    return model if isinstance(model, OnnxSignature) else OnnxSignature(model)


def _append(chooser: Chooser, logits: np.ndarray, tokens: np.ndarray, on_token: Stream | None) -> np.ndarray:
    choice = chooser(logits[:, -1])
    if on_token is not None:
        on_token(choice)
    return np.concatenate([tokens, choice[:, None].astype(tokens.dtype)], axis=1)


def _encoder_decoder(table: Mapping[str | None, Model], source: np.ndarray | Mapping[str, Any],
                     prompt: np.ndarray | Sequence[Sequence[int]] | None, start_token: int | None, max_new: int,
                     sampling: Sampling, stops: list[int], encode: str, step: str | None,
                     use_cache: bool, on_token: Stream | None) -> np.ndarray:
    if step is None:
        others = [s for s in table if s != encode and s is not None and not s.endswith(cross_name(None))]
        plain = [s for s in others if not is_derived(s)]
        if len(plain) > 1 or not others or (not plain and len(others) > 1):
            raise ValueError(f"generate: name the decoder signature with step= (signatures: {others})")
        step = plain[0] if plain else others[0]
    enc = _signature(table[encode])
    given = dict(source) if isinstance(source, Mapping) else {enc.token_input(set()): source}
    known = {**given, **enc(given)}
    batch = next(iter(given.values())).shape[0]
    if prompt is None:
        if start_token is None:
            raise ValueError("generate: give start_token (or a prompt) for the decoder")
        prompt = np.full((batch, 1), start_token, dtype=np.int64)
    prompt = np.asarray(prompt, dtype=np.int64)
    chooser = Chooser(batch, sampling, stops)
    names: list[str | None] = [step] if step.endswith("with_past") else [f"{step}_with_past", step]
    cached = _pick_cached(table, names, use_cache, prompt.shape[1] + max_new)
    if cached is not None:
        fixed = {**known, **_cross_keys(table, step.removesuffix(f"_{CACHE_SUFFIX}"), cached, known)}
        return cached_loop(cached.step(fixed), prompt, np.zeros(prompt.shape, dtype=bool), max_new, chooser, on_token)
    dec = _signature(table[step])
    token = dec.token_input(set(known))
    recurrent = [n for n in dec.outputs if n in dec.inputs]
    logits_name = next(n for n in dec.outputs if n not in recurrent)
    inputs = {k: v for k, v in known.items() if k in dec.inputs}

    def run(feed: np.ndarray) -> np.ndarray:
        if not recurrent and dec.max_len is not None:
            feed = feed[:, -dec.max_len:]
        outs = dec({**inputs, token: feed})
        inputs.update({k: outs[k] for k in recurrent})  # the decoder's new state
        return outs[logits_name]

    tokens = prompt
    if recurrent:
        for t in range(prompt.shape[1] - 1):
            run(prompt[:, t:t + 1])
    for _ in range(max_new):
        tokens = _append(chooser, run(tokens[:, -1:] if recurrent else tokens), tokens, on_token)
        if chooser.done:
            break
    return tokens


def _cross_keys(table: Mapping[str | None, Model], base: str, sig: OnnxSignature,
                known: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The cross-attention keys and values `sig` takes, computed once by the cross_kv model of `base` from the
    encoder's output (`known`); none when `sig` takes none."""
    names = cross_inputs(list(sig.inputs), sig.outputs)
    if not names:
        return {}
    name = cross_name(base)
    if name not in table:
        raise ValueError(f"generate: '{sig.name}' takes cross-attention keys and values ({names[0]}, ...); "
                         f"give the '{name}' model too")
    cross = _signature(table[name])
    outs = cross({k: v for k, v in known.items() if k in cross.inputs})
    return {n: outs[past_to_present(n)] for n in names}


def _decoder_only(model: OnnxSignature, prompt: np.ndarray, max_new: int, chooser: Chooser,
                  on_token: Stream | None) -> np.ndarray:
    token = model.token_input(set())
    model.check_ids(token, prompt)
    logits_name = model.outputs[0]
    tokens = prompt
    for _ in range(max_new):
        feed = tokens if model.max_len is None else tokens[:, -model.max_len:]
        tokens = _append(chooser, model({token: feed})[logits_name], tokens, on_token)
        if chooser.done:
            break
    return tokens
