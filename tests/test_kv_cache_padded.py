"""A left-padded batch through GPT's own graph (the `padded` signature of specs/gpt.yaml: a padding
mask and positions as inputs), in PyTorch and onnxruntime, and the cache signature derived from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_torch_specs import SMALL, small

from nnspec.backends import to_onnx
from nnspec.backends.generation import pad_prompts, start_positions
from nnspec.backends.onnx.runtime import run_onnx, session
from nnspec.builder import compile_graph, graph_inputs, load_spec, param_count

PROMPTS = [[5, 6, 7, 8, 9, 10], [3, 4], [11], [2, 9, 4, 4]]


def test_the_padded_signature_keeps_the_parameters() -> None:
    spec = load_spec("specs/gpt.yaml")
    assert param_count(compile_graph(spec)) == param_count(compile_graph(spec, "padded")) == 124_439_808
    assert list(graph_inputs(compile_graph(spec))) == ["tokens"]  # the main graph is as it was


@pytest.mark.parametrize("backend", ["pytorch", "onnx"])
def test_a_left_padded_batch_through_the_graph_gives_each_prompt_its_logits(backend: str) -> None:
    model = small("gpt")
    tokens, padding = pad_prompts(PROMPTS)
    positions = start_positions(padding)
    feed = {"tokens": tokens, "padding_mask": padding, "position_ids": positions}
    if backend == "pytorch":
        with torch.no_grad():
            padded = model.signature("padded")(*(torch.from_numpy(feed[n]) for n in ("tokens", "padding_mask",
                                                                                       "position_ids"))).numpy()
    else:
        onnx_model = to_onnx(load_spec("specs/gpt.yaml", SMALL["gpt"]), model.state_dict(), signature="padded")
        padded = next(iter(run_onnx(session(onnx_model), feed).values()))
    assert np.isfinite(padded[~padding]).all()
    for row, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            alone = model(torch.tensor([prompt]))[0].numpy()  # the main graph, no padding
        np.testing.assert_allclose(padded[row, tokens.shape[1] - len(prompt):], alone, atol=2e-5, rtol=0,
                                   err_msg=f"row {row}")


def test_the_cache_signature_of_the_padded_graph_takes_its_mask() -> None:
    spec = load_spec("specs/gpt.yaml", SMALL["gpt"])
    ins = graph_inputs(compile_graph(spec, "padded_with_past"))
    assert list(ins)[:3] == ["tokens", "padding_mask", "position_ids"]  # no second mask, no second positions
    assert str(ins["padding_mask"]) == "batch×past_sequence_length+seq"
    assert str(ins["position_ids"]) == "batch×seq"
