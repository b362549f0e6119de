"""Greedy generation on built modules: decoder-only (GPT) against a plain argmax loop, and
encoder-decoders (lstm_seq2seq, transformer) against their own teacher-forced main graph;
batching, the end token and the length limit."""

from __future__ import annotations

import pytest
import torch
from test_torch_specs import small

from nnspec.backends.pytorch import generate

BOS, EOS = 1, 2


def test_gpt_matches_a_plain_argmax_loop() -> None:
    model = small("gpt")
    prompt = torch.randint(0, 40, (3, 4), generator=torch.Generator().manual_seed(0))
    got = generate(model, prompt=prompt, max_new_tokens=6)
    tokens = prompt
    with torch.no_grad():
        for _ in range(6):
            tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, tokens)


def test_gpt_context_window_is_respected() -> None:
    model = small("gpt")  # n_ctx 32: longer sequences are cropped to the last 32 tokens
    out = generate(model, prompt=torch.zeros(1, 30, dtype=torch.long), max_new_tokens=5)
    assert out.shape == (1, 35)


def test_end_token_finishes_rows_and_stops_early() -> None:
    model = small("gpt")
    prompt = torch.randint(0, 40, (2, 3), generator=torch.Generator().manual_seed(1))
    free = generate(model, prompt=prompt, max_new_tokens=8)
    end = int(free[0, 4])  # the token row 0 produces second
    out = generate(model, prompt=prompt, max_new_tokens=8, end_token=end)
    assert torch.equal(out[0, :5], free[0, :5])
    assert (out[0, 5:] == end).all()
    for row in range(2):  # every row stops at its first end token
        gen = out[row, 3:].tolist()
        if end in gen:
            assert all(t == end for t in gen[gen.index(end):])
    if (out[:, 3:] == end).any(dim=1).all():
        assert out.shape[1] <= free.shape[1]


@pytest.mark.parametrize("name", ["lstm_seq2seq", "transformer"])
def test_encoder_decoder_agrees_with_teacher_forcing(name: str) -> None:
    model = small(name)
    gen = torch.Generator().manual_seed(2)
    src = torch.randint(3, 25, (3, 6), generator=gen)
    out = generate(model, src, start_token=BOS, max_new_tokens=7)
    assert out.shape == (3, 8) and (out[:, 0] == BOS).all()
    with torch.no_grad():
        if name == "transformer":
            no_pad = torch.zeros_like(src, dtype=torch.bool)
            logits = model(src, out[:, :-1], no_pad, torch.zeros_like(out[:, :-1], dtype=torch.bool))
        else:
            logits = model(src, out[:, :-1])
    assert torch.equal(logits.argmax(-1), out[:, 1:])


def test_encoder_decoder_with_end_token_and_named_inputs() -> None:
    model = small("transformer")
    src = torch.randint(3, 25, (2, 5), generator=torch.Generator().manual_seed(3))
    pad = torch.zeros_like(src, dtype=torch.bool)
    free = generate(model, {"src": src, "src_pad": pad}, start_token=BOS, max_new_tokens=6)
    end = int(free[1, 2])
    out = generate(model, {"src": src, "src_pad": pad}, start_token=BOS, max_new_tokens=6, end_token=end)
    first = out[1, 1:].tolist().index(end) + 1
    assert (out[1, first:] == end).all()


def test_generate_restores_training_mode() -> None:
    model = small("gpt").train()
    generate(model, prompt=torch.zeros(1, 2, dtype=torch.long), max_new_tokens=2)
    assert model.training


def test_generate_needs_its_inputs() -> None:
    with pytest.raises(ValueError, match="needs a prompt"):
        generate(small("gpt"), max_new_tokens=2)
    with pytest.raises(ValueError, match="give start_token"):
        generate(small("lstm_seq2seq"), torch.zeros(1, 3, dtype=torch.long), max_new_tokens=2)
