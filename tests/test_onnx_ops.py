"""Per-op tests of the ONNX backend, all driven by the one table of op cases (tests/op_cases.py).

For every case and every entry of SIZES: the model passes the full checker, ONNX shape
inference agrees with nnspec's shapes, and onnxruntime (ORT_ENABLE_ALL) agrees with two
independent computations: `onnx.reference.ReferenceEvaluator` on the same file, and the
op's PyTorch definition (torch.nn / torch.nn.functional, not nnspec's PyTorch backend) on
the same weights.
"""

from __future__ import annotations

import json
import math
from typing import Any

import elementwise_refs
import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator
from op_cases import CASES, SIZES, OpCase

from nnspec.backends.onnx import LOWERINGS, run_onnx, session, to_onnx
from nnspec.backends.onnx.export import lower_graph
from nnspec.backends.onnx.lowering import EMITTED_OPS, Options
from nnspec.backends.onnx.opsets import default_opset
from nnspec.backends.onnx.table import LoweringTable
from nnspec.builder import OPS, TensorType, compile_graph, load_spec, nodes
from nnspec.builder.ops import Op
from nnspec.builder.tensor import fmt_dim

torch = pytest.importorskip("torch")
F = torch.nn.functional

CASE_IDS = [c.id for c in CASES]
REFERENCE_GAPS = {"rnn_relu_2l_bi": "onnx.reference's RNN implements only the Tanh and Affine activations",
                  "conv_transpose1d_full": "onnx.reference's ConvTranspose ignores group",
                  "conv_transpose2d_groups": "onnx.reference's ConvTranspose ignores group"}
"""Cases onnx.reference.ReferenceEvaluator cannot run; they are still compared with torch."""
REFERENCE_WRONG = {c.id: "onnx.reference's RNN/LSTM/GRU ignore sequence_lens (tests/test_attention_ext.py checks)"
                   for c in CASES if "lengths" in c.inputs}
"""Cases onnx.reference.ReferenceEvaluator runs but gets wrong; they are still compared with torch."""


# -- registry --------------------------------------------------------------------------------


def test_every_op_has_a_lowering() -> None:
    assert sorted(OPS) == list(LOWERINGS), f"missing: {sorted(set(OPS) - set(LOWERINGS))}"


def test_every_op_has_a_case() -> None:
    assert {c.op for c in CASES} == set(OPS)


def test_register_unknown_op_fails_with_a_hint() -> None:
    table = LoweringTable("test")
    with pytest.raises(ValueError, match=r"unknown op 'lienar'.*did you mean 'linear'"):
        table.register("lienar")


def test_register_duplicate_fails() -> None:
    table = LoweringTable("test")
    table.register("relu")(lambda e, n: None)
    with pytest.raises(ValueError, match="op 'relu' has two test lowerings"):
        table.register("relu")


def test_missing_lowering_names_the_op() -> None:
    with pytest.raises(KeyError, match=r"op 'lstn' has no ONNX lowering.*did you mean"):
        LOWERINGS["lstn"]


# -- helpers shared with the other test modules ----------------------------------------------


def case_graph(case: OpCase) -> Any:
    return compile_graph(load_spec(case.spec()))


def random_state(g: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights for every weight and buffer of `g`, keyed like the PyTorch state_dict."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for node in nodes(g):
        for name, shape in node.weights.items():
            out[f"{node.id}.{name}"] = (rng.standard_normal(shape) * 0.5).astype(np.float32)
        if node.op == "batch_norm":
            c = int(node.inputs["x"].shape[1])
            out[f"{node.id}.running_mean"] = rng.standard_normal(c).astype(np.float32)
            out[f"{node.id}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    return out


def case_inputs(case: OpCase, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for port, (shape, dtype) in case.inputs.items():
        dims = TensorType.of(shape).concrete(sizes)
        if port == "lengths":  # valid steps of each padded sequence: 1..T
            steps = TensorType.of(case.inputs["x"][0]).concrete(sizes)[1]
            out[f"in_{port}"] = rng.integers(1, steps + 1, size=dims).astype(dtype)
        elif dtype == "float32":
            out[f"in_{port}"] = rng.standard_normal(dims).astype(np.float32)
            if case.positive:
                out[f"in_{port}"] = np.abs(out[f"in_{port}"]) + np.float32(0.5)
        elif dtype == "bool":  # padding on a random tail; key 0 is always visible
            keep = rng.integers(1, dims[-1] + 1, size=(*dims[:-1], 1))
            out[f"in_{port}"] = np.arange(dims[-1]) >= keep
        else:
            out[f"in_{port}"] = rng.integers(0, case.extra.get("high", 5), size=dims).astype(dtype)
    return out


def sym(sizes: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(sizes.items())


def tol(case: OpCase, ref: np.ndarray) -> float:
    return case.tol * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)


# -- the torch definition of every op (independent of backends.pytorch) ------------------------


def _rnn_module(m: Op, x: Any) -> Any:
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[m.op]
    kw: dict[str, Any] = {"nonlinearity": m.nonlinearity} if m.op == "rnn" else {}
    return cls(x.shape[-1], m.hidden_size, m.num_layers, bias=m.bias, batch_first=True,
               bidirectional=m.bidirectional, **kw)


def _mask(m: Op, q: Any, k: Any, kpm: Any | None, heads_dim: bool) -> Any | None:
    """Bool mask, True = attend, broadcastable to (B, [H,] Lq, Lk)."""
    allowed = None
    if m.causal:
        allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    if kpm is not None:
        pad = ~kpm[:, None, None, :] if heads_dim else ~kpm[:, None, :]
        allowed = pad if allowed is None else allowed & pad
    return allowed


def _with_attn_mask(allowed: Any | None, attn_mask: Any | None) -> Any | None:
    """A bool `allowed` mask combined with an attn_mask (bool, True = attend; or additive float)."""
    if attn_mask is None or allowed is None:
        return attn_mask if allowed is None else allowed
    if attn_mask.dtype == torch.bool:
        return allowed & attn_mask
    return attn_mask.masked_fill(~allowed, -math.inf)


def _rope(t: Any, positions: Any | None, rope: Any) -> Any:
    """Hugging Face's rotary embedding: q * cos + rotate_half(q) * sin (or GPT-J's rotate_every_two)."""
    r = int(t.shape[-1] * rope.fraction)
    pos = (torch.arange(t.shape[2]) if positions is None else positions).float()
    inv_freq = 1.0 / (rope.theta ** (torch.arange(0, r, 2, dtype=torch.int64).float() / r)) / (rope.scaling or 1.0)
    freqs = pos[..., None] * inv_freq  # ([B,] T, r/2)
    if freqs.dim() == 3:
        freqs = freqs[:, None]
    x, rest = t[..., :r], t[..., r:]
    if rope.interleaved:  # GPT-J
        emb = freqs.repeat_interleave(2, -1)
        rotated = torch.stack((-x[..., 1::2], x[..., ::2]), -1).flatten(-2)
    else:  # GPT-NeoX / Llama: rotate_half
        emb = torch.cat((freqs, freqs), -1)
        rotated = torch.cat((-x[..., r // 2:], x[..., : r // 2]), -1)
    return torch.cat((x * emb.cos() + rotated * emb.sin(), rest), -1)


def _mha_general(a: Any, x: dict[str, Any], w: dict[str, Any]) -> Any:
    """Llama-style attention: q/k/v linears, rotary, repeat_kv, masks, SDPA, out linear."""
    q = x["query"]
    k = x.get("key", q)
    v = x.get("value", k)
    e, h, kv = q.shape[-1], a.num_heads, a.kv_heads
    hd = e // h
    sizes = [e, kv * hd, kv * hd]
    ws = w["in_proj_weight"].split(sizes)
    bs = w["in_proj_bias"].split(sizes) if a.bias else [None] * 3
    qh, kh, vh = (F.linear(t, wi, bi).unflatten(-1, (n, hd)).transpose(1, 2)
                  for t, wi, bi, n in zip((q, k, v), ws, bs, (h, kv, kv), strict=True))
    if a.rotary:
        qh, kh = _rope(qh, x.get("positions"), a.rope()), _rope(kh, x.get("positions"), a.rope())
    kh, vh = kh.repeat_interleave(h // kv, 1), vh.repeat_interleave(h // kv, 1)  # repeat_kv
    attn_mask = x.get("attn_mask")
    if attn_mask is not None and attn_mask.dim() == 3:
        attn_mask = attn_mask[:, None]
    mask = _with_attn_mask(_mask(a, q, k, x.get("key_padding_mask"), True), attn_mask)
    y = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return F.linear(y.transpose(1, 2).flatten(2), w["out_proj.weight"], w.get("out_proj.bias"))


def reference(m: Op, x: dict[str, Any], w: dict[str, Any]) -> dict[str, Any]:
    """The op's PyTorch semantics on inputs `x` (by port) and weights `w` (by weight name)."""
    op = m.op
    a: Any = m
    if op in ("add", "mul"):
        vals = [x[p] for p in sorted(x, key=int)]
        if a.value is not None:  # a constant operand
            vals.append(torch.tensor(a.value, dtype=vals[0].dtype))
        out = vals[0]
        for v in vals[1:]:
            out = out + v if op == "add" else out * v
        return {"y": out}
    simple = {
        "scale": lambda: x["x"] * a.factor, "matmul": lambda: x["a"] @ x["b"],
        "concat": lambda: torch.cat([x[p] for p in sorted(x, key=int)], dim=a.dim),
        "reshape": lambda: x["x"].reshape([x["x"].shape[i] if s == 0 else s for i, s in enumerate(a.shape)]),
        "flatten": lambda: torch.flatten(x["x"], a.start_dim, a.end_dim),
        "transpose": lambda: x["x"].transpose(a.dim0, a.dim1), "permute": lambda: x["x"].permute(a.dims),
        "select": lambda: x["x"].select(a.dim, a.index),
        "mean": lambda: x["x"].mean(a.dim if isinstance(a.dim, int) else tuple(a.dim), keepdim=a.keepdim),
        "linear": lambda: F.linear(x["x"], w["weight"], w.get("bias")),
        "embedding": lambda: F.embedding(x["x"], w["weight"], a.padding_idx),
        "position_embedding": lambda: x["x"] + w["weight"][: x["x"].shape[1]],
        "dropout": lambda: x["x"],
        "batch_norm": lambda: F.batch_norm(x["x"], w["running_mean"], w["running_var"], w.get("weight"),
                                           w.get("bias"), False, 0.0, a.eps),
        "layer_norm": lambda: F.layer_norm(x["x"], x["x"].shape[-1:], w.get("weight"), w.get("bias"), a.eps),
        "relu": lambda: torch.relu(x["x"]), "tanh": lambda: torch.tanh(x["x"]),
        "sigmoid": lambda: torch.sigmoid(x["x"]), "gelu": lambda: F.gelu(x["x"], approximate=a.approximate),
        "softmax": lambda: torch.softmax(x["x"], a.dim), "log_softmax": lambda: torch.log_softmax(x["x"], a.dim),
    }
    if op in simple:
        return {"y": simple[op]()}
    if op == "split":
        return {str(i): t for i, t in enumerate(torch.split(x["x"], a.sizes, dim=a.dim))}
    if op == "slice":
        idx = [slice(None)] * x["x"].dim()
        idx[a.dim] = slice(a.start, a.end, a.step)
        return {"y": x["x"][tuple(idx)]}
    if op in ("conv1d", "conv2d"):
        fn = F.conv1d if op == "conv1d" else F.conv2d
        return {"y": fn(x["x"], w["weight"], w.get("bias"), a.stride, a.padding, a.dilation, a.groups)}
    if op in ("max_pool1d", "max_pool2d"):
        fn = F.max_pool1d if op == "max_pool1d" else F.max_pool2d
        return {"y": fn(x["x"], a.kernel_size, a.stride, a.padding, ceil_mode=a.ceil_mode)}
    if op in ("avg_pool1d", "avg_pool2d"):
        fn = F.avg_pool1d if op == "avg_pool1d" else F.avg_pool2d
        return {"y": fn(x["x"], a.kernel_size, a.stride, a.padding, ceil_mode=a.ceil_mode, count_include_pad=True)}
    if op == "sinusoidal_position":
        t, d = x["x"].shape[1], x["x"].shape[2]
        pos = np.arange(t, dtype=np.float64)[:, None]
        freq = np.exp(np.arange(0, d, 2, dtype=np.float64) * (-math.log(10000.0) / d))
        pe = np.zeros((t, d))
        pe[:, 0::2], pe[:, 1::2] = np.sin(pos * freq), np.cos(pos * freq)
        return {"y": x["x"] + torch.from_numpy(pe.astype(np.float32))}
    if op in ("rnn", "lstm", "gru"):
        mod = _rnn_module(a, x["x"])
        mod.load_state_dict(w)
        state = (x["h0"], x["c0"]) if op == "lstm" and "h0" in x else x.get("h0")
        seq = x["x"]
        if "lengths" in x:  # packed: each row to its own length, zeros past it
            seq = torch.nn.utils.rnn.pack_padded_sequence(seq, x["lengths"], batch_first=True, enforce_sorted=False)
        y, h = mod(seq, state)
        if "lengths" in x:
            y = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x["x"].shape[1])[0]
        return {"output": y, "h": h[0], "c": h[1]} if op == "lstm" else {"output": y, "h": h}
    if op == "rotary":
        return {"y": _rope(x["x"], x.get("positions"), a.rope())}
    if op == "attention":
        q, k, v = x["query"], x["key"], x["value"]
        mask = _with_attn_mask(_mask(a, q, k, x.get("key_padding_mask"), q.dim() == 4), x.get("attn_mask"))
        return {"y": F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=a.scale,
                                                    enable_gqa=q.dim() == 4 and k.shape[1] != q.shape[1])}
    if op == "multi_head_attention" and (a.kv_heads != a.num_heads or a.rotary or "attn_mask" in x):
        return {"y": _mha_general(a, x, w)}
    if op == "multi_head_attention":
        q = x["query"]
        k = x.get("key", q)
        v = x.get("value", k)
        mod = torch.nn.MultiheadAttention(q.shape[-1], a.num_heads, bias=a.bias, batch_first=True)
        mod.load_state_dict(w)
        causal = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool).triu(1) if a.causal else None
        y, _ = mod(q, k, v, key_padding_mask=x.get("key_padding_mask"), attn_mask=causal, need_weights=False)
        return {"y": y}
    # convolution, resampling and pooling beyond the seed set
    if op in ("conv_transpose1d", "conv_transpose2d"):
        fn = F.conv_transpose1d if op == "conv_transpose1d" else F.conv_transpose2d
        return {"y": fn(x["x"], w["weight"], w.get("bias"), a.stride, a.padding, a.output_padding, a.groups,
                        a.dilation)}
    if op == "conv3d":
        return {"y": F.conv3d(x["x"], w["weight"], w.get("bias"), a.stride, a.padding, a.dilation, a.groups)}
    if op == "max_pool3d":
        return {"y": F.max_pool3d(x["x"], a.kernel_size, a.stride, a.padding, ceil_mode=a.ceil_mode)}
    if op == "avg_pool3d":
        return {"y": F.avg_pool3d(x["x"], a.kernel_size, a.stride, a.padding, ceil_mode=a.ceil_mode,
                                  count_include_pad=a.count_include_pad)}
    if op.startswith("adaptive_"):
        return {"y": getattr(F, op)(x["x"], a.output_size)}
    if op in ("interpolate", "upsample"):
        return {"y": F.interpolate(x["x"], a.size, a.scale_factor, a.mode, a.align_corners)}
    if op in ("pixel_shuffle", "pixel_unshuffle"):
        return {"y": getattr(F, op)(x["x"], a.upscale_factor if op == "pixel_shuffle" else a.downscale_factor)}
    if op == "pad":
        return {"y": F.pad(x["x"], a.pads, a.mode, a.value if a.mode == "constant" else None)}
    # activations beyond the seed set
    nonlinear = {
        "relu6": lambda: F.relu6(x["x"]), "hardtanh": lambda: F.hardtanh(x["x"], a.min_val, a.max_val),
        "clamp": lambda: torch.clamp(x["x"], a.min, a.max), "leaky_relu": lambda: F.leaky_relu(x["x"], a.negative_slope),
        "elu": lambda: F.elu(x["x"], a.alpha), "silu": lambda: F.silu(x["x"]), "mish": lambda: F.mish(x["x"]),
        "hardswish": lambda: F.hardswish(x["x"]), "hardsigmoid": lambda: F.hardsigmoid(x["x"]),
        "softplus": lambda: F.softplus(x["x"], a.beta, a.threshold), "prelu": lambda: F.prelu(x["x"], w["weight"]),
        "glu": lambda: F.glu(x["x"], a.dim),
    }
    if op in nonlinear:
        return {"y": nonlinear[op]()}
    # normalisation beyond batch and layer norm
    if op == "rms_norm":
        return {"y": F.rms_norm(x["x"], x["x"].shape[-1:], w.get("weight"), a.eps)}
    if op == "group_norm":
        return {"y": F.group_norm(x["x"], a.num_groups, w.get("weight"), w.get("bias"), a.eps)}
    if op == "instance_norm":
        return {"y": F.instance_norm(x["x"], weight=w.get("weight"), bias=w.get("bias"), eps=a.eps)}
    if op == "layer_norm2d":
        nhwc = x["x"].permute(0, 2, 3, 1)
        return {"y": F.layer_norm(nhwc, nhwc.shape[-1:], w.get("weight"), w.get("bias"), a.eps).permute(0, 3, 1, 2)}
    # elementwise arithmetic and reductions
    # tensor construction and indexing
    own = elementwise_refs.semantics(m, x, w)
    if own is not None:
        return own
    raise AssertionError(f"no reference for op '{op}'")


def torch_reference(case: OpCase, g: Any, inputs: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> dict[str, Any]:
    node = g.nodes["n"]["node"]
    x = {p: torch.from_numpy(inputs[f"in_{p}"]) for p in case.inputs}
    w = {k.removeprefix("n."): torch.from_numpy(v) for k, v in state.items()}
    with torch.no_grad():
        out = reference(node.model, x, w)
    return {f"o_{p}": t.numpy() for p, t in out.items()}


# -- the per-case tests ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported() -> dict[str, tuple[Any, dict[str, np.ndarray], onnx.ModelProto, Any]]:
    """Each case's graph, weights, model and session, built once."""
    out = {}
    for case in CASES:
        g = case_graph(case)
        state = random_state(g)
        model = to_onnx(g, state)
        out[case.id] = (g, state, model, session(model))
    return out


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_checker_and_names(case_id: str, exported: dict[str, Any]) -> None:
    g, state, model, _ = exported[case_id]
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == default_opset()
    assert [i.name for i in model.graph.input] == list(g.graph["inputs"])
    assert [o.name for o in model.graph.output] == list(g.graph["outputs"])
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    props = {p.key: p.value for p in model.metadata_props}
    transposed = set(json.loads(props.get("nnspec.transposed_weights", "[]")))
    for name, arr in state.items():  # every weight under its state_dict key, with its shape (transposed for MatMul)
        assert inits.get(name) == (arr.shape[::-1] if name in transposed else arr.shape), name
    assert {n.op_type for n in model.graph.node} <= EMITTED_OPS
    assert all(n.name.startswith(("n/", "o_")) for n in model.graph.node)


def assert_shapes_agree(g: Any, model: onnx.ModelProto) -> None:
    """ONNX shape inference (strict, with data propagation) agrees with nnspec's type of every tensor.

    Agreement: same dtype and rank, every size ONNX infers equals nnspec's, every dim name it
    gives is nnspec's; a dim ONNX cannot infer (unnamed, or its own ``unk__N``) contradicts nothing.
    """
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    types = {v.name: v.type.tensor_type for v in (*inferred.graph.value_info, *inferred.graph.output,
                                                    *inferred.graph.input)}
    values = lower_graph(g, Options(model.opset_import[0].version)).values
    for ref, name in values.items():
        t = g.nodes[ref.node]["node"].outputs[ref.port]
        got = types.get(name)
        assert got is not None, f"onnx inferred nothing for {ref} ({name})"
        assert got.elem_type == onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)), ref
        dims = got.shape.dim
        assert len(dims) == t.rank, f"{ref}: onnx rank {len(dims)}, nnspec [{t}]"
        for d, want in zip(dims, t.shape, strict=True):
            if d.HasField("dim_value"):
                assert want.is_Integer and int(want) == d.dim_value, f"{ref}: onnx {dims}, nnspec [{t}]"
            elif d.HasField("dim_param") and not d.dim_param.startswith("unk__"):
                assert d.dim_param == (want.name if want.is_Symbol else fmt_dim(want)), \
                    f"{ref}: onnx {dims}, nnspec [{t}]"


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_shape_inference_agrees(case_id: str, exported: dict[str, Any]) -> None:
    g, _, model, _ = exported[case_id]
    assert_shapes_agree(g, model)


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "-".join(f"{k}{v}" for k, v in sym(s)))
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_runtime_matches_references(case_id: str, sizes: dict[str, int], exported: dict[str, Any]) -> None:
    case = next(c for c in CASES if c.id == case_id)
    g, state, model, sess = exported[case_id]
    inputs = case_inputs(case, sizes)
    got = run_onnx(sess, inputs)
    want = torch_reference(case, g, inputs, state)
    skip = case_id in REFERENCE_GAPS or case_id in REFERENCE_WRONG
    ref_eval = [None] * len(got) if skip else ReferenceEvaluator(model).run(None, inputs)
    for (name, y), r in zip(got.items(), ref_eval, strict=True):
        expect = g.nodes["n"]["node"].outputs[name.removeprefix("o_")].concrete(sizes)
        assert y.shape == expect, f"{name}: ran {y.shape}, nnspec says {expect}"
        np.testing.assert_allclose(y, want[name], rtol=0, atol=tol(case, want[name]), err_msg=f"{name} vs torch")
        if r is not None:
            np.testing.assert_allclose(y, r, rtol=0, atol=tol(case, r), err_msg=f"{name} vs ReferenceEvaluator")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_fixed_sizes_match_torch(case_id: str) -> None:
    """The same cases with every symbolic dim fixed: lowerings take their constant paths
    (causal masks, position slices, reshape tails) and must agree all the same."""
    case = next(c for c in CASES if c.id == case_id)
    sizes = SIZES[1]
    spec = case.spec()
    for inp in spec["inputs"].values():
        inp["shape"] = [sizes.get(d, d) if isinstance(d, str) else d for d in inp["shape"]]
    g = compile_graph(load_spec(spec))
    state = random_state(g, seed=1)
    model = to_onnx(g, state)
    onnx.checker.check_model(model, full_check=True)
    for vi in model.graph.input:
        assert all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
    inputs = case_inputs(case, sizes, seed=1)
    got = run_onnx(model, inputs)
    want = torch_reference(case, g, inputs, state)
    for name, y in got.items():
        np.testing.assert_allclose(y, want[name], rtol=0, atol=tol(case, want[name]), err_msg=name)


def _run_case_with(case: OpCase, **options: Any) -> None:
    sizes = SIZES[1]
    g = case_graph(case)
    state = random_state(g, seed=2)
    model = to_onnx(g, state, **options)
    onnx.checker.check_model(model, full_check=True)
    inputs = case_inputs(case, sizes, seed=2)
    want = torch_reference(case, g, inputs, state)
    for name, y in run_onnx(model, inputs).items():
        np.testing.assert_allclose(y, want[name], rtol=0, atol=tol(case, want[name]), err_msg=name)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_lowest_opset_matches_torch(case_id: str) -> None:
    """Every case at the lowest opset it can be emitted at (layer norm decomposed below 17, axes as
    attributes below 13), which is never above the default floor; one below it is a clear error."""
    from nnspec.backends.onnx import MIN_OPSET, OpsetError
    from nnspec.backends.onnx.export import minimum_opset
    from nnspec.backends.onnx.opsets import FLOOR

    case = next(c for c in CASES if c.id == case_id)
    lowest = minimum_opset(case_graph(case))
    assert MIN_OPSET <= lowest <= FLOOR
    _run_case_with(case, opset=lowest)
    if lowest > MIN_OPSET:
        with pytest.raises(OpsetError, match=rf"opset {lowest - 1} is not supported .*needs opset >= {lowest}"):
            to_onnx(case_graph(case), opset=lowest - 1)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_highest_opset_matches_torch(case_id: str) -> None:
    """Every case at the newest opset the installed onnxruntime runs, where lowerings take their other
    branches (reduction axes and Split sizes as inputs from 18, and so on)."""
    from nnspec.backends.onnx.opsets import max_opset

    _run_case_with(next(c for c in CASES if c.id == case_id), opset=max_opset())


@pytest.mark.parametrize("case_id", [c.id for c in CASES if c.op in ("gelu", "attention", "multi_head_attention")])
def test_native_ops_match_torch(case_id: str) -> None:
    """The opset-20 Gelu and opset-23 Attention options compute the same as the formulas."""
    case = next(c for c in CASES if c.id == case_id)
    _run_case_with(case, native_gelu=True, native_attention=True)
    model = to_onnx(case_graph(case), native_gelu=True, native_attention=True)
    want = {"gelu": "Gelu", "attention": "Attention", "multi_head_attention": "Attention"}[case.op]
    assert want in {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("case_id", sorted(REFERENCE_GAPS))
@pytest.mark.xfail(strict=True, raises=(RuntimeError, ValueError),
                   reason="onnx.reference lacks what the case needs (REFERENCE_GAPS)")
def test_reference_evaluator_gaps_are_real(case_id: str, exported: dict[str, Any]) -> None:
    """The cases left out of the ReferenceEvaluator comparison still fail there; when onnx fills
    the gap this passes, strict xfail turns that into a failure, and the gap entry goes."""
    case = next(c for c in CASES if c.id == case_id)
    ReferenceEvaluator(exported[case_id][2]).run(None, case_inputs(case, SIZES[0]))


EXTRA_CASES = [
    OpCase("batch_norm_plain", "batch_norm", {"affine": False}, {"x": (["B", 3, 4], "float32")}, {"y": ["B", 3, 4]}),
    OpCase("layer_norm_plain", "layer_norm", {"elementwise_affine": False, "eps": 1e-3}, {"x": (["B", "T", 6], "float32")},
           {"y": ["B", "T", 6]}),
    OpCase("conv1d_dilated_same", "conv1d", {"out_channels": 2, "kernel_size": 4, "dilation": 2, "padding": "same"},
           {"x": (["B", 3, 9], "float32")}, {"y": ["B", 2, 9]}),
    OpCase("max_pool1d_unbatched", "max_pool1d", {"kernel_size": 2, "stride": 1, "padding": 1}, {"x": ([3, 7], "float32")},
           {"y": [3, 8]}),
    OpCase("attention_causal_cross", "attention", {"causal": True, "scale": 0.3},
           {"query": (["B", "T", 4], "float32"), "key": (["B", "S", 4], "float32"), "value": (["B", "S", 4], "float32")},
           {"y": ["B", "T", 4]}),
    OpCase("mha_cross_causal_nobias", "multi_head_attention", {"num_heads": 2, "causal": True, "bias": False},
           {"query": (["B", "T", 4], "float32"), "key": (["B", "S", 4], "float32")}, {"y": ["B", "T", 4]}),
    OpCase("embedding_int32", "embedding", {"num_embeddings": 5, "embedding_dim": 3}, {"x": (["B", "T"], "int32")},
           {"y": ["B", "T", 3]}, extra={"high": 5}),
    OpCase("gru_bi", "gru", {"hidden_size": 3, "bidirectional": True, "bias": False}, {"x": (["B", "T", 2], "float32")},
           {"output": ["B", "T", 6], "h": [2, "B", 3]}),
]
"""Paths the shared table does not reach yet (non-affine norms, dilation, unbatched pools, causal
attention with Lq != Lk, int32 ids, bias-free recurrent layers); candidates for tests/op_cases.py."""


@pytest.mark.parametrize("sizes", SIZES[1:], ids=lambda s: "-".join(f"{k}{v}" for k, v in sym(s)))
@pytest.mark.parametrize("case", EXTRA_CASES, ids=lambda c: c.id)
def test_extra_cases_match_torch(case: OpCase, sizes: dict[str, int]) -> None:
    g = case_graph(case)
    state = random_state(g, seed=3)
    model = to_onnx(g, state)
    onnx.checker.check_model(model, full_check=True)
    assert_shapes_agree(g, model)
    inputs = case_inputs(case, sizes, seed=3)
    want = torch_reference(case, g, inputs, state)
    for name, y in run_onnx(model, inputs).items():
        assert y.shape == g.nodes["n"]["node"].outputs[name.removeprefix("o_")].concrete(sizes)
        np.testing.assert_allclose(y, want[name], rtol=0, atol=tol(case, want[name]), err_msg=name)
