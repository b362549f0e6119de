"""The ONNX backend on the seed specs (scaled down): parity with the PyTorch backend at several
sizes of every symbolic dim, for the main graph and every signature; shape inference; a second
opinion from onnx.reference and from torch.onnx.export; greedy generation in onnxruntime.

The largest difference seen per spec is printed (run with -s) and recorded as a property.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator
from op_cases import SMALL_SPECS
from test_onnx_ops import assert_shapes_agree

from nnspec.backends.onnx import export_onnx, random_inputs, run_onnx, session, to_onnx
from nnspec.backends.onnx.generate import generate_onnx
from nnspec.backends.onnx.opsets import default_opset
from nnspec.builder import compile_graph, graph_inputs, load_spec, nodes

torch = pytest.importorskip("torch")
pytorch = pytest.importorskip("nnspec.backends.pytorch")

SPECS = Path(__file__).resolve().parents[1] / "specs"

SIZES = (1, 3, 7)
"""Values tried for every symbolic dim (all combinations of two dims, diagonal beyond)."""
SPEC_NAMES = sorted(p.stem for p in SPECS.glob("*.yaml"))
TOL = 1e-4


def small_spec(name: str) -> Any:
    return load_spec(SPECS / f"{name}.yaml", SMALL_SPECS.get(name, {}))


def graphs(name: str) -> list[tuple[str | None, Any]]:
    spec = small_spec(name)
    return [(sig, compile_graph(spec, sig)) for sig in (None, *spec.signatures)]


def size_grid(g: Any) -> list[dict[str, int]]:
    symbols = sorted({s for t in graph_inputs(g).values() for s in t.symbols})
    if len(symbols) <= 2:
        return [dict(zip(symbols, v, strict=True)) for v in itertools.product(SIZES, repeat=len(symbols))]
    return [dict.fromkeys(symbols, v) for v in SIZES]


def torch_outputs(module: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(**{k: torch.from_numpy(v) for k, v in feed.items()})
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_spec_parity_with_pytorch(name: str, record_property: Any) -> None:
    """Every graph of the spec, every size combination: |onnx - torch| <= 1e-4 max(1, |torch|)."""
    torch.manual_seed(0)
    module = pytorch.to_torch(small_spec(name)).eval()
    state = module.state_dict()
    worst = 0.0
    for sig, g in graphs(name):
        target = module if sig is None else module.signature(sig)
        model = to_onnx(g, state)
        sess = session(model)
        for sizes in size_grid(g):
            feed = random_inputs(model, sizes, seed=len(sizes))
            got = run_onnx(sess, feed)
            for (out, y), r in zip(got.items(), torch_outputs(target, feed), strict=True):
                assert y.shape == r.shape, (sig, out, sizes)
                diff = float(np.max(np.abs(y - r)))
                rel = diff / max(1.0, float(np.max(np.abs(r))))
                assert rel <= TOL, f"{name}/{sig or 'main'} {out} at {sizes}: max diff {diff:.3g}"
                worst = max(worst, diff)
    record_property("max_abs_diff", worst)
    print(f"\n{name}: largest |onnx - torch| = {worst:.3g}")


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_spec_structure(name: str) -> None:
    """Full checker, names, ONNX shape inference against nnspec on every node, tied weights once."""
    for sig, g in graphs(name):
        model = to_onnx(g)
        onnx.checker.check_model(model, full_check=True)
        assert model.producer_name == "nnspec" and model.producer_version
        assert model.doc_string == (g.graph.get("doc") or "")
        assert [i.name for i in model.graph.input] == list(g.graph["inputs"])
        inits = [t.name for t in model.graph.initializer]
        assert len(inits) == len(set(inits))
        declared = {f"{n.id}.{w}" for n in nodes(g) for w in n.weights}
        aliases = g.graph.get("aliases", {})
        assert {aliases.get(k, k) for k in declared} <= set(inits), sig
        for n in nodes(g):
            for w, (owner, ow) in n.ties.items():
                assert f"{n.id}.{w}" not in inits, "a tied weight is stored once, under its owner"
                assert aliases.get(f"{owner}.{ow}", f"{owner}.{ow}") in inits
        assert_shapes_agree(g, model)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_same_bytes(name: str) -> None:
    """Same spec and weights, same bytes: twice in memory, from numpy or torch tensors, streamed to a file."""
    module = pytorch.to_torch(small_spec(name)).eval()
    state = module.state_dict()
    as_numpy = {k: v.numpy() for k, v in state.items()}
    spec = small_spec(name)
    first = to_onnx(spec, state).SerializeToString()
    assert to_onnx(small_spec(name), as_numpy).SerializeToString() == first
    assert to_onnx(spec).SerializeToString() == to_onnx(spec).SerializeToString()  # initialised from the seed


def test_streamed_file_is_the_same_model(tmp_path: Path) -> None:
    spec = small_spec("gpt")
    export_onnx(spec, tmp_path / "gpt.onnx")
    assert (tmp_path / "gpt.onnx").read_bytes() == to_onnx(spec).SerializeToString()


@pytest.mark.parametrize("name", ["lenet5", "rnn_intent", "lstm_sentiment", "lstm_seq2seq", "gpt"])
def test_reference_evaluator_agrees(name: str) -> None:
    """A second opinion on the ONNX semantics: onnx.reference runs the same files."""
    for _, g in graphs(name):
        model = to_onnx(g)
        feed = random_inputs(model, dict.fromkeys(graph_inputs_symbols(g), 3))
        got = run_onnx(model, feed)
        ref = ReferenceEvaluator(model).run(None, feed)
        for (out, y), r in zip(got.items(), ref, strict=True):
            np.testing.assert_allclose(y, r, rtol=0, atol=TOL * max(1.0, float(np.max(np.abs(r)))), err_msg=out)


def graph_inputs_symbols(g: Any) -> set[str]:
    return {s for t in graph_inputs(g).values() for s in t.symbols}


@pytest.mark.parametrize("name", ["lenet5", "lstm_sentiment"])
def test_torch_onnx_export_gives_the_same_outputs(name: str, tmp_path: Path) -> None:
    """torch.onnx.export (TorchScript exporter) of the PyTorch module computes what our file computes."""
    module = pytorch.to_torch(small_spec(name)).eval()
    ours = to_onnx(small_spec(name), module.state_dict())
    feed = random_inputs(ours, {"batch": 2, "seq": 5})
    names = list(feed)
    path = tmp_path / "torch.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(torch.from_numpy(feed[n]) for n in names), str(path), dynamo=False,
                          input_names=names, output_names=[o.name for o in ours.graph.output])
    theirs = run_onnx(str(path), feed)
    for (out, y), r in zip(run_onnx(ours, feed).items(), theirs.values(), strict=True):
        np.testing.assert_allclose(y, r, rtol=0, atol=TOL * max(1.0, float(np.max(np.abs(r)))), err_msg=out)


# -- generation ---------------------------------------------------------------------------------


def signature_models(name: str, state: Any) -> dict[str | None, onnx.ModelProto]:
    spec = small_spec(name)
    return {sig: to_onnx(spec, state, signature=sig) for sig in (None, *spec.signatures)}


@pytest.mark.parametrize("name", ["lstm_seq2seq", "transformer"])
def test_greedy_generation_encoder_decoder(name: str) -> None:
    torch.manual_seed(0)
    module = pytorch.to_torch(small_spec(name)).eval()
    models = signature_models(name, module.state_dict())
    vocab = next(t.dims[0] for t in models[None].graph.initializer if t.name.endswith("embed.weight"))
    src = np.random.default_rng(0).integers(0, vocab, size=(3, 6))
    want = pytorch.generate(module, torch.from_numpy(src), start_token=1, max_new_tokens=8)
    got = generate_onnx(models, src, start_token=1, max_new_tokens=8)
    np.testing.assert_array_equal(got, want.numpy())
    assert got.shape == (3, 9)


def test_greedy_generation_decoder_only() -> None:
    torch.manual_seed(0)
    module = pytorch.to_torch(small_spec("gpt")).eval()
    model = to_onnx(small_spec("gpt"), module.state_dict())
    prompt = np.random.default_rng(1).integers(0, 40, size=(2, 3))
    want = pytorch.generate(module, prompt=torch.from_numpy(prompt), max_new_tokens=10)
    got = generate_onnx(model, prompt=prompt, max_new_tokens=10)
    np.testing.assert_array_equal(got, want.numpy())


def test_default_opset_runs_every_op() -> None:
    """The default opset is the floor (17, which onnxruntime releases since 1.13 run) unless an op needs more."""
    assert default_opset() == 17
    assert to_onnx(small_spec("lenet5")).opset_import[0].version == default_opset()
    assert to_onnx(small_spec("gpt"), native_gelu=True).opset_import[0].version == 20
