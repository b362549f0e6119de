"""`init:`: initialisers named as torch.nn.init names them, parsed and checked by builder, and
drawn alike by the PyTorch backend (torch.nn.init itself) and the ONNX backend (numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from onnx import numpy_helper

from nnspec.backends import emit_python, to_onnx, to_torch
from nnspec.builder import SpecError, compile_graph, load_spec, nodes
from nnspec.builder.initialisers import Init, distribution, parse_init


@pytest.mark.parametrize(("text", "fn", "args"), [
    ("zeros", "zeros", {}),
    ("zeros_()", "zeros", {}),
    ("constant(0.5)", "constant", {"val": 0.5}),
    ("normal(std=0.02)", "normal", {"mean": 0.0, "std": 0.02}),
    ("uniform(-0.1, b=0.1)", "uniform", {"a": -0.1, "b": 0.1}),
    ("kaiming_normal_(mode='fan_out', nonlinearity=relu)", "kaiming_normal",
     {"a": 0.0, "mode": "fan_out", "nonlinearity": "relu"}),
    ("trunc_normal(std=0.02, a=-0.04, b=0.04)", "trunc_normal", {"mean": 0.0, "std": 0.02, "a": -0.04, "b": 0.04}),
])
def test_parse_fills_torch_defaults(text: str, fn: str, args: dict[str, object]) -> None:
    init = parse_init(text)
    assert init.fn == fn
    assert init.kwargs == args


@pytest.mark.parametrize(("text", "message"), [
    ("normal(std=-1)", "std must be >= 0"),
    ("constant", "needs argument 'val'"),
    ("normal(0, 1, 2)", "at most 2 argument"),
    ("normal(std=1, std=2)", "twice"),
    ("normal(std=inf)", "must be a number"),
    ("kaiming_uniform(mode=fan_middle)", "mode must be fan_in or fan_out"),
    ("kaiming_uniform(nonlinearity=rleu)", "did you mean 'relu'"),
    ("torch.nn.init.normal_(std=1)", "not an initialiser call"),
    ("normal(std=${x})", "not an initialiser call"),
    ("normal(std=True)", "must be a number"),
])
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_init(text)


def test_fan_based_distributions_follow_torch() -> None:
    shape = (64, 32, 3, 3)  # fan_in 288, fan_out 576
    assert distribution(parse_init("xavier_normal(gain=2)"), shape).b == pytest.approx(2 * math.sqrt(2 / (288 + 576)))
    uniform = distribution(parse_init("kaiming_uniform(a=0.2)"), shape)
    assert uniform.b == pytest.approx(math.sqrt(3) * math.sqrt(2 / (1 + 0.04)) / math.sqrt(288))
    relu_out = distribution(parse_init("kaiming_normal(mode=fan_out, nonlinearity=relu)"), shape)
    assert relu_out.b == pytest.approx(math.sqrt(2) / math.sqrt(576))


SPEC = """
name: inits
params: {layers: 4}
init:
  linear: {weight: 'normal(std=0.02)', bias: zeros}
inputs: {x: {shape: [batch, 256]}, ids: {shape: [batch, seq], dtype: int64}}
nodes:
  a: {op: linear, in: x, out_features: 512, init: {weight: 'normal(mean=1, std=0.5)', bias: 'constant(3)'}}
  b: {op: linear, in: a, out_features: 256, init: {weight: 'xavier_uniform(gain=2)', bias: 'uniform(-1, 1)'}}
  c: {op: linear, in: b, out_features: 128, init: {weight: 'kaiming_normal(mode=fan_out, nonlinearity=relu)'}}
  d: {op: linear, in: c, out_features: 128, init: {weight: 'trunc_normal(std=1, a=-0.5, b=0.5)'}}
  e: {op: linear, in: d, out_features: 64, init: {weight: 'orthogonal(gain=2)'}}
  f: {op: linear, in: e, out_features: 64, init: {weight: 'normal(std=${0.02 / sqrt(2 * layers)})'}}
  g: {op: linear, in: f, out_features: 64, bias: false}
  plain: {op: linear, in: g, out_features: 64}
  emb: {op: embedding, in: ids, num_embeddings: 1000, embedding_dim: 64, padding_idx: 0,
        init: {weight: 'normal(std=0.02)'}}
outputs: {y: plain, z: emb}
"""
"""Every initialiser once; `plain` has the spec-level default, and `g` has it without a bias."""

STD = {"a.weight": 0.5, "b.weight": 2 * math.sqrt(2 / 768), "b.bias": 2 / math.sqrt(12),
       "c.weight": math.sqrt(2 / 128), "e.weight": 2 / math.sqrt(128), "f.weight": 0.02 / math.sqrt(8),
       "g.weight": 0.02, "plain.weight": 0.02, "emb.weight": 0.02}


def test_node_init_wins_over_the_spec_default() -> None:
    g = compile_graph(load_spec(SPEC))
    inits = {n.id: n.inits for n in nodes(g)}
    assert inits["a"] == {"weight": parse_init("normal(1, 0.5)"), "bias": Init("constant", (("val", 3.0),))}
    assert inits["c"]["bias"] == parse_init("zeros")  # the default fills in what the node leaves out
    assert inits["g"] == {"weight": parse_init("normal(std=0.02)")}  # no bias to initialise
    assert inits["f"]["weight"].kwargs["std"] == pytest.approx(0.02 / math.sqrt(8))


def _torch_weights() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return {k: v.numpy() for k, v in to_torch(SPEC).state_dict().items()}


def _onnx_weights() -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in to_onnx(SPEC).graph.initializer}


def _emitted_weights() -> dict[str, np.ndarray]:
    scope: dict[str, object] = {}
    exec(compile(emit_python(SPEC), "<emitted>", "exec"), scope)
    torch.manual_seed(1)
    module = scope["Inits"]()  # type: ignore[operator]
    return {k: v.numpy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("weights", [_torch_weights, _onnx_weights, _emitted_weights],
                         ids=["to_torch", "to_onnx", "emit_python"])
def test_backends_draw_what_init_asks(weights) -> None:  # type: ignore[no-untyped-def]
    w = weights()
    for name, std in STD.items():
        assert w[name].std() == pytest.approx(std, rel=0.1), name
    assert w["a.weight"].mean() == pytest.approx(1.0, abs=0.01)
    assert np.all(w["a.bias"] == 3) and np.all(w["c.bias"] == 0) and np.all(w["plain.bias"] == 0)
    assert w["b.bias"].min() >= -1 and w["b.bias"].max() <= 1
    assert np.abs(w["d.weight"]).max() <= 0.5 and w["d.weight"].std() > 0.25  # cut at ±0.5, not clipped to it
    e = w["e.weight"].astype(np.float64)
    np.testing.assert_allclose(e @ e.T, 4 * np.eye(64), atol=1e-4)  # (64, 128): orthogonal rows, gain 2
    assert np.all(w["emb.weight"][0] == 0)  # the padding row stays zero
    # PyTorch's default where the spec says nothing: Linear(64, 64) bias in ±1/sqrt(64)
    assert w["plain.weight"].std() < 0.03 and np.abs(w["g.weight"]).max() < 0.2


def test_meta_device_builds_without_drawing() -> None:
    model = to_torch(SPEC, device="meta")
    assert all(p.is_meta for p in model.parameters())


def test_bad_init_is_reported_with_every_problem() -> None:
    spec = SPEC.replace("'orthogonal(gain=2)'", "'orthogonal(gain=2)', bias: xavier_normal").replace(
        "{weight: 'normal(std=0.02)', bias: zeros}", "{weight: 'normal(std=0.02)', bais: zeros}")
    with pytest.raises(SpecError) as info:
        compile_graph(load_spec(spec))
    messages = [d.message for d in info.value.diagnostics]
    assert any("xavier_normal reads fan-in and fan-out" in m for m in messages)
    assert any("no linear node has a weight 'bais'" in m for m in messages)
