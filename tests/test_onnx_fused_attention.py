"""`fused_attention`: multi_head_attention as onnxruntime's com.microsoft.MultiHeadAttention.

Every multi_head_attention case of the op table, and the extra mask cases below, against the
op's PyTorch definition (torch.nn.functional, independent of nnspec's PyTorch backend); BERT,
GPT, the encoder-decoder Transformer and Llama against the built PyTorch module, with every
weight perturbed so that a missing bias or a wrong mask shows; the fallbacks say why; the
CLI's export and check take --fused-attention.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from op_cases import BOOL, CASES, SIZES, SMALL_SPECS, OpCase, _x
from test_onnx_ops import case_graph, case_inputs, random_state, tol, torch_reference

from nnspec.backends import pytorch
from nnspec.backends.cli import cli
from nnspec.backends.onnx import random_inputs, run_onnx, to_onnx
from nnspec.backends.onnx.table import MS_DOMAIN, FallbackWarning
from nnspec.builder import compile_graph, load_spec, nodes

torch = pytest.importorskip("torch")

EXTRA = [
    OpCase("mha_causal_cross", "multi_head_attention", {"num_heads": 2, "causal": True},
           {"query": _x("B", "T", 8), "key": _x("B", "S", 8), "value": _x("B", "S", 8)}, {"y": ["B", "T", 8]}),
    OpCase("mha_bool_mask_2d", "multi_head_attention", {"num_heads": 2},
           {"query": _x("B", "T", 8), "key": _x("B", "S", 8), "value": _x("B", "S", 8), "attn_mask": _x("T", "S", dtype=BOOL)},
           {"y": ["B", "T", 8]}),
    OpCase("mha_float_mask_3d_padding_causal", "multi_head_attention", {"num_heads": 4, "causal": True},
           {"query": _x("B", "T", 8), "key_padding_mask": _x("B", "T", dtype=BOOL), "attn_mask": _x("B", "T", "T")},
           {"y": ["B", "T", 8]}),
    OpCase("mha_no_bias_causal", "multi_head_attention", {"num_heads": 2, "causal": True, "bias": False},
           {"query": _x("B", "T", 8)}, {"y": ["B", "T", 8]}),
    OpCase("mha_rotary_causal_padding", "multi_head_attention", {"num_heads": 2, "causal": True, "rotary": True},
           {"query": _x("B", "T", 8), "key_padding_mask": _x("B", "T", dtype=BOOL)}, {"y": ["B", "T", 8]}),
    OpCase("mha_mask_over_keys_only", "multi_head_attention", {"num_heads": 2},
           {"query": _x("B", "T", 8), "key": _x("B", "S", 8), "value": _x("B", "S", 8), "attn_mask": _x(1, "S")},
           {"y": ["B", "T", 8]}),
]
CASES_BY_ID = {c.id: c for c in [*CASES, *EXTRA] if c.op == "multi_head_attention"}
FALLBACKS = {"mha_llama": "no grouped-query attention", "mha_gqa_cross_mask": "no grouped-query attention",
             "mha_mask_over_keys_only": "broadcasts over queries or keys"}
"""Cases the contrib op cannot express, and what the warning says."""


def _fused_ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node if n.domain == MS_DOMAIN]


def _export(g: Any, state: Any, expect_fallback: str | None) -> onnx.ModelProto:
    if expect_fallback is None:
        return to_onnx(g, state, fused_attention=True)  # warnings are errors here: none is given
    with pytest.warns(FallbackWarning, match=expect_fallback):
        return to_onnx(g, state, fused_attention=True)


@pytest.mark.parametrize("sizes", SIZES[1:], ids=lambda s: "-".join(f"{k}{v}" for k, v in sorted(s.items())))
@pytest.mark.parametrize("case_id", sorted(CASES_BY_ID))
def test_cases_match_torch(case_id: str, sizes: dict[str, int]) -> None:
    case = CASES_BY_ID[case_id]
    g = case_graph(case)
    state = random_state(g, seed=3)  # N(0, 0.25) weights and biases: sharp attention, biases that count
    model = _export(g, state, FALLBACKS.get(case_id))
    onnx.checker.check_model(model, full_check=True)
    assert _fused_ops(model) == ([] if case_id in FALLBACKS else ["MultiHeadAttention"])
    assert ("com.microsoft" in {o.domain for o in model.opset_import}) == (case_id not in FALLBACKS)
    inputs = case_inputs(case, sizes, seed=3)
    if case.inputs.get("attn_mask", ((), ""))[1] == BOOL:  # True = may attend: key 0 always
        inputs["in_attn_mask"] = ~inputs["in_attn_mask"]
    want = torch_reference(case, g, inputs, state)
    for name, y in run_onnx(model, inputs).items():
        np.testing.assert_allclose(y, want[name], rtol=0, atol=tol(case, want[name]), err_msg=name)


def test_default_export_has_no_contrib_ops() -> None:
    g = case_graph(CASES_BY_ID["mha_causal"])
    model = to_onnx(g)
    assert _fused_ops(model) == [] and [o.domain for o in model.opset_import] == [""]
    fused = to_onnx(g, fused_attention=True)
    assert sorted((o.domain, o.version) for o in fused.opset_import) == [("", model.opset_import[0].version),
                                                                         (MS_DOMAIN, 1)]


# -- whole specs -------------------------------------------------------------------------------

SPEC_SIZES = {"batch": 2, "seq": 6, "src_len": 7, "tgt_len": 5}


def _perturbed(module: Any, seed: int) -> dict[str, Any]:
    """The module's weights plus N(0, 0.3) noise, loaded back: zero biases and unit LayerNorm scales
    would hide a bias the fused op forgot, near-zero init a wrong mask."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: v + 0.3 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
             for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    return state


@pytest.mark.parametrize("name", ["bert", "gpt", "transformer", "llama"])
def test_specs_match_torch(name: str) -> None:
    torch.manual_seed(0)
    spec = load_spec(f"specs/{name}.yaml", SMALL_SPECS[name])
    g = compile_graph(spec)
    module = pytorch.to_torch(spec).eval()
    state = _perturbed(module, seed=1)
    attention = [n.id for n in nodes(g) if n.op == "multi_head_attention"]
    gqa = name == "llama"  # 2 key/value heads for 4 query heads
    model = _export(g, state, "no grouped-query attention" if gqa else None)
    assert len(_fused_ops(model)) == (0 if gqa else len(attention)) and attention
    feed = random_inputs(model, SPEC_SIZES, seed=1)
    got = run_onnx(model, feed)
    with torch.no_grad():
        ref = module(**{k: torch.from_numpy(v) for k, v in feed.items()})
    for (out, y), r in zip(got.items(), ref if isinstance(ref, tuple) else (ref,), strict=True):
        r = r.numpy()
        np.testing.assert_allclose(y, r, rtol=0, atol=1e-4 * max(1.0, float(np.abs(r).max())), err_msg=out)


# -- the CLI -----------------------------------------------------------------------------------

GPT = ["specs/gpt.yaml", *(a for k, v in SMALL_SPECS["gpt"].items() for a in ("--set", f"{k}={v}"))]
LLAMA = ["specs/llama.yaml", *(a for k, v in SMALL_SPECS["llama"].items() for a in ("--set", f"{k}={v}"))]


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_export_and_check(tmp_path: Path) -> None:
    out = tmp_path / "gpt.onnx"
    result = _invoke("export", GPT[0], *GPT[1:], "--fused-attention", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert _fused_ops(onnx.load(str(out))) == ["MultiHeadAttention"] * SMALL_SPECS["gpt"]["layers"]
    result = _invoke("check", *GPT, "--fused-attention", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["outputs"]["logits"]["diff"] <= 1e-4 * report["outputs"]["logits"]["scale"]


def test_cli_says_which_nodes_kept_the_standard_lowering(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said as a note, not raised or printed as a Python warning
        result = _invoke("check", *LLAMA, "--fused-attention")
    assert result.exit_code == 0, result.output
    assert ("note: nodes 'layers.0.self_attn', 'layers.1.self_attn': com.microsoft.MultiHeadAttention has no "
            "grouped-query attention (2 key/value heads for 4 query heads); kept the standard lowering") in result.stderr
    assert result.stdout.startswith("ok")


@pytest.mark.parametrize("variant", [("--quantize", "int8"), ("--dtype", "float16")])
def test_cli_check_variants_of_the_fused_export(variant: tuple[str, str]) -> None:
    result = _invoke("check", *GPT, "--fused-attention", *variant)
    assert result.exit_code == 0, result.output
