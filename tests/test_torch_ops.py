"""Every op lowers to PyTorch: the table covers the registry, and for every op case and every
size in `SIZES` the module's outputs have the shapes builder inferred and agree with an
independent computation (torch.nn.functional, or the formula written out in float64)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import elementwise_refs
import nonlinear_refs
import pytest
import spatial_refs
import torch
import torch.nn.functional as F
from op_cases import CASES, SIZES, OpCase

from nnspec.backends.pytorch import TABLE, LoweringError, to_torch
from nnspec.backends.pytorch.table import LoweringTable
from nnspec.builder import OPS, TensorType, compile_graph, graph_outputs, load_spec

Ref = Callable[[torch.nn.Module, dict[str, Any], dict[str, torch.Tensor]], dict[str, torch.Tensor]]


# --- the table -------------------------------------------------------------------------

def test_every_op_has_a_lowering() -> None:
    assert TABLE.missing() == []


def test_no_lowering_names_an_unknown_op() -> None:
    assert TABLE.unknown(OPS) == []
    assert sorted(TABLE) == sorted(OPS)


def test_registering_an_unknown_op_fails_with_a_hint() -> None:
    table: LoweringTable = LoweringTable("test")
    with pytest.raises(ValueError, match=r"unknown op 'lienar'.*did you mean 'linear'"):
        table.register("lienar")


def test_registering_an_op_twice_fails() -> None:
    table: LoweringTable = LoweringTable("test")
    table.register("relu")(lambda e, n: {})
    with pytest.raises(ValueError, match="two test lowerings"):
        table.register("relu")


def test_missing_lowering_is_reported_by_name() -> None:
    table: LoweringTable = LoweringTable("test")
    assert "linear" in table.missing()
    with pytest.raises(KeyError, match="'linear' has no test lowering"):
        table["linear"]


def test_every_op_has_a_case() -> None:
    assert sorted({c.op for c in CASES}) == sorted(OPS)


# --- inputs ----------------------------------------------------------------------------

def _inputs(case: OpCase, sizes: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for port, (shape, dtype) in case.inputs.items():
        dims = TensorType.of(shape, dtype).concrete(sizes)
        if port == "lengths":  # valid steps of each padded sequence: 1..T
            out[port] = torch.randint(1, TensorType.of(*case.inputs["x"]).concrete(sizes)[1] + 1, dims, generator=gen)
        elif dtype == "int64":
            out[port] = torch.randint(0, case.extra.get("high", 5), dims, generator=gen)
        elif dtype == "bool":  # key padding: a random tail of each row, never position 0
            keep = torch.randint(1, dims[1] + 1, (dims[0], 1), generator=gen)
            out[port] = torch.arange(dims[1]).unsqueeze(0) >= keep
        else:
            out[port] = torch.randn(dims, generator=gen)
            if case.positive:
                out[port] = out[port].abs() + 0.5
    return out


# --- independent references ------------------------------------------------------------

def _sub(model: torch.nn.Module) -> Any:
    return model.get_submodule("n")


def _slice_ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    t = x["x"]
    axis = a["dim"] % t.dim()
    idx = torch.tensor(list(range(*slice(a.get("start", 0), a.get("end"), a.get("step", 1)).indices(t.shape[axis]))))
    return {"y": t.index_select(axis, idx)}


def _reshape_ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    t = x["x"]
    shape = [t.shape[i] if s == 0 else s for i, s in enumerate(a["shape"])]
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        shape[shape.index(-1)] = t.numel() // known
    return {"y": t.contiguous().view(shape)}


def _conv_ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    layer = _sub(m)
    fn = F.conv1d if x["x"].dim() == 3 else F.conv2d
    return {"y": fn(x["x"], layer.weight, layer.bias, a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1),
                    a.get("groups", 1))}


def _pool_ref(kind: str) -> Ref:
    def ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t, k = x["x"], a["kernel_size"]
        s, p = a.get("stride", k), a.get("padding", 0)
        if kind == "max":
            fn = F.max_pool1d if t.dim() == 3 else F.max_pool2d
            return {"y": fn(t, k, s, p)}
        fn = F.avg_pool1d if t.dim() == 3 else F.avg_pool2d
        return {"y": fn(t, k, s, p, count_include_pad=True)}

    return ref


def _sinusoid(n: int, d: int) -> torch.Tensor:
    pe = torch.zeros(n, d, dtype=torch.float64)
    for pos in range(n):
        for i in range(0, d, 2):
            angle = pos / 10000 ** (i / d)
            pe[pos, i], pe[pos, i + 1] = math.sin(angle), math.cos(angle)
    return pe


def _batch_norm_ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    layer, t = _sub(m), x["x"].double()
    dims = [0, *range(2, t.dim())]
    view = [1, -1] + [1] * (t.dim() - 2)
    if m.training:
        mean, var = t.mean(dims, keepdim=True), t.var(dims, unbiased=False, keepdim=True)
    else:  # fresh running statistics: mean 0, variance 1
        stats = [1, t.shape[1]] + [1] * (t.dim() - 2)
        mean, var = torch.zeros(stats, dtype=t.dtype), torch.ones(stats, dtype=t.dtype)
    y = (t - mean) / torch.sqrt(var + a.get("eps", 1e-5))
    return {"y": y * layer.weight.double().view(view) + layer.bias.double().view(view)}


def _attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None,
                    pad: torch.Tensor | None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale, masked, + additive mask) v in float64; fewer kv heads are repeated (repeat_kv)."""
    q, k, v = q.double(), k.double(), v.double()
    if q.dim() == 4 and k.shape[1] != q.shape[1]:
        k, v = (torch.stack([t[:, h * t.shape[1] // q.shape[1]] for h in range(q.shape[1])], 1) for t in (k, v))
    scores = q @ k.transpose(-2, -1) * (scale if scale is not None else q.shape[-1] ** -0.5)
    lq, lk = scores.shape[-2:]
    masked = torch.zeros(lq, lk, dtype=torch.bool)
    if causal:
        masked = torch.arange(lk).unsqueeze(0) > torch.arange(lq).unsqueeze(1)
    if pad is not None:
        pad = pad.view(pad.shape[0], *([1] * (q.dim() - 2)), lk)
        masked = masked | pad
    if mask is not None and mask.dtype == torch.bool:
        masked = masked | ~mask
    elif mask is not None:
        scores = scores + mask.double()
    return torch.softmax(scores.masked_fill(masked, -math.inf), dim=-1) @ v


def _attention_ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"y": _attention_math(x["query"], x["key"], x["value"], a.get("causal", False), a.get("scale"),
                                 x.get("key_padding_mask"), x.get("attn_mask"))}


def _rope_math(t: torch.Tensor, pos: torch.Tensor, theta: float, fraction: float, interleaved: bool,
               scaling: float | None) -> torch.Tensor:
    """Rotary embedding as a complex rotation in float64: feature pair k, z = x_i + i x_j, times e^(i a_k)."""
    t = t.double()
    d = t.shape[-1]
    r = int(d * fraction)
    x, rest = t[..., :r], t[..., r:]
    pairs = x.unflatten(-1, (r // 2, 2)) if interleaved else torch.stack((x[..., : r // 2], x[..., r // 2:]), -1)
    z = torch.view_as_complex(pairs.contiguous())  # (..., r/2)
    angle = pos.double().unsqueeze(-1) / (scaling or 1.0) * theta ** (-torch.arange(0, r, 2, dtype=torch.float64) / r)
    if angle.dim() == 3:  # (B, T, r/2) -> (B, 1, T, r/2)
        angle = angle.unsqueeze(1)
    w = torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle))  # (..., r/2, 2)
    y = w.flatten(-2) if interleaved else torch.cat((w[..., 0], w[..., 1]), -1)
    return torch.cat((y, rest), -1)


def _rotary_ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    pos = x.get("positions", torch.arange(x["x"].shape[2]))
    return {"y": _rope_math(x["x"], pos, a.get("theta", 10000.0), a.get("fraction", 1.0), a.get("interleaved", False),
                            a.get("scaling"))}


def _mha_ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    layer = _sub(m)
    q = x["query"].double()
    k = x.get("key", x["query"]).double()
    v = x.get("value", x.get("key", x["query"])).double()
    e, h = q.shape[-1], a["num_heads"]
    kv = a.get("num_kv_heads", h)
    sizes = [e, kv * (e // h), kv * (e // h)]
    w = layer.in_proj_weight.double().split(sizes)
    b = layer.in_proj_bias.double().split(sizes) if a.get("bias", True) else [0.0] * 3
    heads = []
    for t, wi, bi, n in zip((q, k, v), w, b, (h, kv, kv), strict=True):
        proj = t @ wi.T + bi  # (B, L, n*hd)
        heads.append(proj.view(*proj.shape[:2], n, e // h).transpose(1, 2))  # (B, n, L, hd)
    if a.get("rotary"):
        rope = (a.get("rope_theta", 10000.0), a.get("rotary_fraction", 1.0), a.get("rotary_interleaved", False),
                a.get("rope_scaling"))
        for i in (0, 1):
            pos = x.get("positions", torch.arange(heads[i].shape[2]))
            heads[i] = _rope_math(heads[i], pos, *rope)
    mask = x.get("attn_mask")
    if mask is not None and mask.dim() == 3:  # (B, Lq, Lk): the same for every head
        mask = mask.unsqueeze(1)
    y = _attention_math(*heads, a.get("causal", False), None, x.get("key_padding_mask"), mask)  # (B, h, Lq, hd)
    y = y.transpose(1, 2).reshape(q.shape)
    out = y @ layer.out_proj.weight.double().T
    return {"y": out + layer.out_proj.bias.double() if a.get("bias", True) else out}


def _recurrent_ref(cls: type[torch.nn.RNNBase]) -> Ref:
    def run(other: torch.nn.RNNBase, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = (x["h0"], x["c0"]) if "c0" in x else x.get("h0")
        out, h = other(x["x"], state)
        if isinstance(h, tuple):
            return {"output": out, "h": h[0], "c": h[1]}
        return {"output": out, "h": h}

    def ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        other = cls(x["x"].shape[-1], batch_first=True, **a)
        other.load_state_dict(_sub(m).state_dict())
        if "lengths" not in x:
            return run(other, x)
        rows = []  # each sequence alone, unpadded; its output padded with zeros afterwards
        for i, n in enumerate(x["lengths"].tolist()):
            alone = {"x": x["x"][i:i + 1, :n], **{p: x[p][:, i:i + 1] for p in ("h0", "c0") if p in x}}
            rows.append(run(other, alone))
        pad = x["x"].shape[1]
        return {"output": torch.cat([F.pad(r["output"], (0, 0, 0, pad - r["output"].shape[1])) for r in rows]),
                **{p: torch.cat([r[p] for r in rows], 1) for p in rows[0] if p != "output"}}

    return ref


def _mean_ref(m: torch.nn.Module, a: dict[str, Any], x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    dims = [a["dim"]] if isinstance(a["dim"], int) else a["dim"]
    t = x["x"].double()
    y = t.sum(dim=dims, keepdim=True) / math.prod(t.shape[d] for d in dims)
    return {"y": y if a.get("keepdim") else y.squeeze(dims)}


def _gelu(t: torch.Tensor, approximate: str) -> torch.Tensor:
    t = t.double()
    if approximate == "tanh":
        return 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t**3)))
    return 0.5 * t * (1 + torch.erf(t / math.sqrt(2)))


def _y(fn: Callable[[dict[str, torch.Tensor], dict[str, Any], torch.nn.Module], torch.Tensor]) -> Ref:
    return lambda m, a, x: {"y": fn(x, a, m)}


REFERENCES: dict[str, Ref] = {
    "add": _y(lambda x, a, m: sum(x[p] for p in sorted(x, key=int)) + a.get("value", 0)),  # type: ignore[misc]
    "mul": _y(lambda x, a, m: math.prod(x[p] for p in sorted(x, key=int)) * a.get("value", 1)),  # type: ignore[misc]
    "scale": _y(lambda x, a, m: x["x"] * a["factor"]),
    "matmul": _y(lambda x, a, m: torch.einsum("...nk,...km->...nm", x["a"], x["b"])),
    "concat": _y(lambda x, a, m: torch.cat([x[p] for p in sorted(x, key=int)], a["dim"])),
    "split": lambda m, a, x: {str(i): t for i, t in enumerate(x["x"].split(a["sizes"], a["dim"]))},
    "reshape": _reshape_ref,
    "flatten": _y(lambda x, a, m: x["x"].reshape(*x["x"].shape[:a.get("start_dim", 1)], -1,
                                                 *x["x"].shape[a.get("end_dim", -1) % x["x"].dim() + 1:])),
    "transpose": _y(lambda x, a, m: x["x"].swapaxes(a["dim0"], a["dim1"])),
    "permute": _y(lambda x, a, m: x["x"].permute(a["dims"])),
    "slice": _slice_ref,
    "select": _y(lambda x, a, m: x["x"].index_select(a["dim"], torch.tensor([a["index"] % x["x"].shape[a["dim"]]]))
                 .squeeze(a["dim"])),
    "mean": _mean_ref,
    "linear": _y(lambda x, a, m: x["x"].double() @ _sub(m).weight.double().T
                 + (_sub(m).bias.double() if a.get("bias", True) else 0)),
    "conv1d": _conv_ref,
    "conv2d": _conv_ref,
    "max_pool1d": _pool_ref("max"),
    "max_pool2d": _pool_ref("max"),
    "avg_pool1d": _pool_ref("avg"),
    "avg_pool2d": _pool_ref("avg"),
    "embedding": _y(lambda x, a, m: _sub(m).weight[x["x"]]),
    "position_embedding": _y(lambda x, a, m: x["x"] + _sub(m).weight[: x["x"].shape[1]]),
    "sinusoidal_position": _y(lambda x, a, m: x["x"].double() + _sinusoid(x["x"].shape[1], x["x"].shape[2])),
    "dropout": _y(lambda x, a, m: x["x"]),  # eval mode; training is checked below
    "batch_norm": _batch_norm_ref,
    "layer_norm": _y(lambda x, a, m: (x["x"].double() - x["x"].double().mean(-1, keepdim=True))
                     / torch.sqrt(x["x"].double().var(-1, unbiased=False, keepdim=True) + 1e-5)
                     * _sub(m).weight.double() + _sub(m).bias.double()),
    "relu": _y(lambda x, a, m: x["x"].clamp(min=0)),
    "tanh": _y(lambda x, a, m: (torch.exp(2 * x["x"].double()) - 1) / (torch.exp(2 * x["x"].double()) + 1)),
    "sigmoid": _y(lambda x, a, m: 1 / (1 + torch.exp(-x["x"].double()))),
    "gelu": _y(lambda x, a, m: _gelu(x["x"], a.get("approximate", "none"))),
    "softmax": _y(lambda x, a, m: torch.exp(x["x"].double()) / torch.exp(x["x"].double()).sum(a["dim"], keepdim=True)),
    "log_softmax": _y(lambda x, a, m: x["x"].double() - torch.logsumexp(x["x"].double(), a["dim"], keepdim=True)),
    "rnn": _recurrent_ref(torch.nn.RNN),
    "lstm": _recurrent_ref(torch.nn.LSTM),
    "gru": _recurrent_ref(torch.nn.GRU),
    "attention": _attention_ref,
    "multi_head_attention": _mha_ref,
    "rotary": _rotary_ref,
    # convolution, resampling and pooling beyond the seed set
    **spatial_refs.REFERENCES,
    # activations beyond the seed set
    "relu6": nonlinear_refs.relu6,
    "hardtanh": nonlinear_refs.hardtanh,
    "clamp": nonlinear_refs.clamp,
    "leaky_relu": nonlinear_refs.leaky_relu,
    "elu": nonlinear_refs.elu,
    "silu": nonlinear_refs.silu,
    "mish": nonlinear_refs.mish,
    "hardswish": nonlinear_refs.hardswish,
    "hardsigmoid": nonlinear_refs.hardsigmoid,
    "softplus": nonlinear_refs.softplus,
    "prelu": nonlinear_refs.prelu,
    "glu": nonlinear_refs.glu,
    # normalisation beyond batch and layer norm
    "rms_norm": nonlinear_refs.rms_norm,
    "group_norm": nonlinear_refs.group_norm,
    "instance_norm": nonlinear_refs.instance_norm,
    "layer_norm2d": nonlinear_refs.layer_norm2d,
    # elementwise arithmetic and reductions
    # tensor construction and indexing
    **elementwise_refs.REFERENCES,
}


def test_every_op_has_a_reference() -> None:
    assert sorted(REFERENCES) == sorted(OPS)


# --- shapes and values, per case and size ----------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_op_case(case: OpCase) -> None:
    graph = compile_graph(load_spec(case.spec()))
    torch.manual_seed(0)
    model = to_torch(graph)
    modes = (False, True) if case.op == "batch_norm" else (False,)
    for i, sizes in enumerate(SIZES):
        ins = _inputs(case, sizes, seed=i)
        for training in modes:
            if training and ins["x"].numel() == ins["x"].shape[1]:
                continue  # batch statistics need more than one value per channel
            if case.op == "batch_norm":
                model.get_submodule("n").reset_running_stats()
            model.train(training)
            got = model(*ins.values())
            got = got if isinstance(got, tuple) else (got,)
            expected_shapes = [t.concrete(sizes) for t in graph_outputs(graph).values()]
            assert [tuple(t.shape) for t in got] == expected_shapes, sizes
            want = REFERENCES[case.op](model, dict(case.args), ins)
            for port, value in zip(case.expect, got, strict=True):
                diff = (value.double() - want[port].double()).abs().max().item()
                assert diff <= case.tol, f"{case.id} {sizes} port {port}: max abs diff {diff}"


@pytest.mark.parametrize("case", [c for c in CASES if c.op in ("dropout", "attention", "multi_head_attention")],
                         ids=lambda c: c.id)
def test_keyword_call(case: OpCase) -> None:
    model = to_torch(case.spec()).eval()
    ins = _inputs(case, SIZES[1], seed=0)
    positional = model(*ins.values())
    by_name = model(**{f"in_{p}": t for p, t in ins.items()})
    for a, b in zip(positional if isinstance(positional, tuple) else (positional,),
                    by_name if isinstance(by_name, tuple) else (by_name,), strict=True):
        assert torch.equal(a, b)


def test_dropout_trains_and_evaluates() -> None:
    model = to_torch({"name": "d", "inputs": {"x": {"shape": [4000]}}, "nodes": {"n": {"op": "dropout", "in": "x", "p": 0.25}},
                      "outputs": {"y": "n"}})
    x = torch.ones(4000)
    assert torch.equal(model.eval()(x), x)
    y = model.train()(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert 0.2 < 1 - kept.float().mean().item() < 0.3


def test_batch_norm_updates_running_stats_only_in_training() -> None:
    case = next(c for c in CASES if c.id == "batch_norm2d")
    model = to_torch(case.spec())
    bn = model.get_submodule("n")
    x = torch.randn(8, 3, 5, 5) * 3 + 2
    model.eval()(x)
    assert torch.equal(bn.running_mean, torch.zeros(3))
    model.train()(x)
    assert torch.allclose(bn.running_mean, 0.1 * x.mean((0, 2, 3)), atol=1e-6)
    assert int(bn.num_batches_tracked) == 1


def test_attention_dropout_is_a_submodule_that_follows_train_and_eval() -> None:
    spec = {"name": "a", "inputs": {"q": {"shape": ["B", 5, 4]}},
            "nodes": {"n": {"op": "attention", "in": {"query": "q", "key": "q", "value": "q"}, "dropout": 0.5,
                            "causal": True}},
            "outputs": {"y": "n"}}
    model = to_torch(spec)
    q = torch.randn(3, 5, 4)
    expected = _attention_math(q, q, q, True, None, None).float()
    assert torch.allclose(model.eval()(q), expected, atol=1e-5)
    torch.manual_seed(0)
    assert not torch.allclose(model.train()(q), expected, atol=1e-3)


def test_unsupported_tie_names_the_node() -> None:
    spec = {"name": "t", "inputs": {"x": {"shape": ["B", 4]}},
            "nodes": {"a": {"op": "layer_norm", "in": "x"}, "b": {"op": "layer_norm", "in": "a", "tie": "a"}},
            "outputs": {"y": "b"}}
    with pytest.raises(LoweringError, match=r"node 'b'.*cannot tie weight\(s\) weight of op 'layer_norm'"):
        to_torch(spec)


@pytest.mark.parametrize("name", ["self", "torch"])
def test_input_names_that_generated_code_uses_are_refused(name: str) -> None:
    spec = {"name": "t", "inputs": {name: {"shape": [2]}}, "nodes": {"r": {"op": "relu", "in": name}}, "outputs": {"y": "r"}}
    with pytest.raises(LoweringError, match=f"input '{name}' cannot be a forward"):
        to_torch(spec)


def test_builtin_and_odd_names_work() -> None:
    spec = {"name": "t", "inputs": {"input": {"shape": [2, 3]}, "getattr": {"shape": [2, 3]}},
            "nodes": {"torch": {"op": "add", "in": ["input", "getattr"]}, "self": {"op": "relu", "in": "torch"},
                      "print": {"op": "linear", "in": "self", "out_features": 3}, "inf": {"op": "tanh", "in": "print"}},
            "outputs": {"y": "inf"}}
    model = to_torch(spec)
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    layer = model.get_submodule("print")
    assert torch.allclose(model(input=a, getattr=b), torch.tanh(layer(torch.relu(a + b))))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -2])
def test_softmax_over_any_dim(op: str, dim: int) -> None:
    """The shared op cases only normalise the last dim; the dim argument must reach torch."""
    spec = {"name": "s", "inputs": {"x": {"shape": [3, 4, 5]}}, "nodes": {"n": {"op": op, "in": "x", "dim": dim}},
            "outputs": {"y": "n"}}
    x = torch.randn(3, 4, 5)
    want = REFERENCES[op](to_torch(spec), {"dim": dim}, {"x": x})["y"]
    assert torch.allclose(to_torch(spec)(x).double(), want, atol=1e-6)


def test_one_node_id_cannot_be_a_prefix_of_another_with_a_submodule() -> None:
    from nnspec.backends.pytorch.emitter import Ctor, ModuleTree
    from nnspec.builder import Node

    tree = ModuleTree(build=False)
    tree.add(Node("a.b.c", "relu", None, {}, {}, {}), Ctor.of("ReLU"))
    tree.add(Node("a.b.d", "relu", None, {}, {}, {}), Ctor.of("ReLU"))
    for clash in ("a.b", "a.b.c.d"):
        with pytest.raises(LoweringError, match="one id is a prefix of the other"):
            tree.add(Node(clash, "relu", None, {}, {}, {}), Ctor.of("ReLU"))
