"""Safetensors weights (keyed by state_dict names, tied weights stored once, clear errors), PyTorch
``.pt``/``.bin`` state_dicts (read with ``torch.load(weights_only=True)`` only), casts that are said,
and the ``build`` command (``--emit-python``, ``--weights``, ``--set``, ``--signature``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from test_torch_specs import DIMS, SMALL, small

from nnspec.backends.pytorch import WeightsError, load_weights, save_weights, to_torch
from nnspec.backends.pytorch.commands import build
from nnspec.backends.pytorch.inputs import example_inputs
from nnspec.backends.weightfiles import WeightDtypeWarning


def _keys(path: Path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return sorted(f.keys())


def test_round_trip(tmp_path: Path) -> None:
    a, b = small("bert", seed=1), small("bert", seed=2)
    save_weights(a, tmp_path / "w.safetensors")
    assert _keys(tmp_path / "w.safetensors") == sorted(a.state_dict())
    assert load_weights(b, tmp_path / "w.safetensors") is b
    x = example_inputs(a, DIMS[1])
    for p, q in zip(a(*x), b(*x), strict=True):
        assert torch.equal(p, q)


def test_tied_weight_is_stored_once_under_its_owner(tmp_path: Path) -> None:
    model = small("gpt")
    save_weights(model, tmp_path / "gpt.safetensors")
    keys = _keys(tmp_path / "gpt.safetensors")
    assert "wte.weight" in keys and not any(k.startswith("lm_head") for k in keys)


class _HandTied(torch.nn.Module):
    """A hand-written module whose head shares the embedding: two state_dict keys, one tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(11, 4)
        self.head = torch.nn.Linear(4, 11, bias=False)
        self.head.weight = self.embed.weight


def test_shared_tensor_of_a_hand_written_module_is_stored_once(tmp_path: Path) -> None:
    a, b = _HandTied(), _HandTied()
    save_weights(a, tmp_path / "t.safetensors")
    assert _keys(tmp_path / "t.safetensors") == ["embed.weight"]
    load_weights(b, tmp_path / "t.safetensors")
    assert torch.equal(b.head.weight, a.embed.weight)
    assert b.head.weight is b.embed.weight


def test_state_dict_mapping_can_be_saved(tmp_path: Path) -> None:
    save_weights({"x.weight": torch.ones(2, 2)}, tmp_path / "m.safetensors")
    assert _keys(tmp_path / "m.safetensors") == ["x.weight"]


def test_errors_name_every_missing_unexpected_and_misshaped_tensor(tmp_path: Path) -> None:
    wide = to_torch("specs/gpt.yaml", overrides={**SMALL["gpt"], "layers": 3})
    save_weights(wide, tmp_path / "wide.safetensors")
    target = to_torch("specs/gpt.yaml", overrides={**SMALL["gpt"], "layers": 2, "vocab": 41})
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_weights(target, tmp_path / "wide.safetensors")
    message = str(info.value)
    assert "tensor 'wte.weight' is [40, 16] in the file, the module needs [41, 16]" in message
    assert "unexpected tensor 'h.2.ln_1.weight' [16]" in message
    assert message.count("unexpected tensor 'h.2.") == 12  # the third block's 12 tensors, each named
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())  # nothing was loaded

    small_one = to_torch("specs/gpt.yaml", overrides={**SMALL["gpt"], "layers": 1})
    save_weights(small_one, tmp_path / "one.safetensors")
    with pytest.raises(WeightsError, match=r"missing tensor 'h\.1\.attn\.in_proj_weight' \[48, 16\]"):
        load_weights(to_torch("specs/gpt.yaml", overrides=SMALL["gpt"]), tmp_path / "one.safetensors")


def test_unexpected_tensors_are_allowed_when_not_strict(tmp_path: Path) -> None:
    main = small("transformer", seed=1)
    save_weights(main, tmp_path / "main.safetensors")
    decode = small("transformer", "decode", seed=2)
    with pytest.raises(WeightsError, match=r"unexpected tensor 'encoder\.0\.self_attn\.in_proj_weight'"):
        load_weights(decode, tmp_path / "main.safetensors")
    load_weights(decode, tmp_path / "main.safetensors", strict=False)
    # the decoder's stand-in for the shared embedding came from src_embed.weight
    assert torch.equal(decode.get_parameter("tgt_embed.weight"), main.get_parameter("src_embed.weight"))


def test_unreadable_and_absent_files(tmp_path: Path) -> None:
    model = small("lenet5")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        load_weights(model, tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_weights(model, tmp_path / "junk.safetensors")


def test_did_you_mean_for_a_renamed_tensor(tmp_path: Path) -> None:
    model = small("lenet5")
    state = dict(model.state_dict())
    state["c1.weights"] = state.pop("c1.weight")
    save_weights(state, tmp_path / "renamed.safetensors")
    with pytest.raises(WeightsError, match=r"unexpected tensor 'c1.weights' \[6, 1, 5, 5\] \(did you mean 'c1.weight'\?\)"):
        load_weights(model, tmp_path / "renamed.safetensors")


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_pytorch_state_dict_files_load(tmp_path: Path, suffix: str) -> None:
    a, b, c = small("gpt", seed=1), small("gpt", seed=2), small("gpt", seed=3)
    assert not _same(a, b)
    torch.save(a.state_dict(), tmp_path / f"w{suffix}")  # the tied LM head is listed under both keys
    assert _same(load_weights(b, tmp_path / f"w{suffix}"), a)
    torch.save({"model": a.state_dict(), "step": 3}, tmp_path / f"ckpt{suffix}")  # a training checkpoint
    assert _same(load_weights(c, tmp_path / f"ckpt{suffix}"), a)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("arbitrary code ran",))


def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = small("lenet5")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(model, tmp_path / "module.pt")
    with pytest.raises(WeightsError, match=r"module.pt: not a PyTorch state_dict nnspec will load \(only tensors are "
                                           r"unpickled.*save model.state_dict\(\), not the model\): Unsupported global"):
        load_weights(model, tmp_path / "module.pt")
    torch.save({"c1.weight": _Payload()}, tmp_path / "payload.pt")
    with pytest.raises(WeightsError, match="only tensors are unpickled"):
        load_weights(model, tmp_path / "payload.pt")
    assert "arbitrary code ran" not in capsys.readouterr().out
    torch.save({"c1.weight": 1.0}, tmp_path / "scalar.pt")
    with pytest.raises(WeightsError, match=r"'c1\.weight' is a float, not a tensor"):
        load_weights(model, tmp_path / "scalar.pt")
    whole = (tmp_path / "payload.pt").read_bytes()
    for name, data in (("cut.pt", whole[: len(whole) // 2]), ("pop.pt", b"\x80\x020.")):  # damaged: any error type
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError, match=f"{name}: not a PyTorch state_dict nnspec will load"):
            load_weights(model, tmp_path / name)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing was loaded


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_half_precision_weights_are_cast_with_a_warning_or_kept(tmp_path: Path, suffix: str) -> None:
    source = small("gpt", seed=1)
    half = tmp_path / f"half{suffix}"
    save_weights({k: v.half() for k, v in source.state_dict().items()}, half)
    model = small("gpt", seed=2)
    with pytest.warns(WeightDtypeWarning, match=r"the weights are float16; they are cast to the module's float32 "
                                                r"\(convert the module first, module.to\(torch.float16\), to keep them\)"):
        load_weights(model, half)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(torch.equal(p, q.half().float()) for p, q in zip(model.parameters(), source.parameters(), strict=True))
    save_weights(source, tmp_path / f"full{suffix}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = load_weights(small("gpt", seed=2).half(), half)  # a half module: nothing is cast
        assert {p.dtype for p in kept.parameters()} == {torch.float16}
        load_weights(small("gpt", seed=2), tmp_path / f"full{suffix}")  # float32 into float32: nothing to say


# --- nnspec build ----------------------------------------------------------------------

def test_build_writes_source_and_weights(tmp_path: Path) -> None:
    py, st = tmp_path / "lenet5.py", tmp_path / "lenet5.safetensors"
    result = CliRunner().invoke(build, ["specs/lenet5.yaml", "--emit-python", str(py), "--weights", str(st), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "built lenet5: 10 tensors, 61,706 parameters" in result.output
    assert py.read_text().startswith('"""Lenet5: generated by nnspec')
    model = load_weights(to_torch("specs/lenet5.yaml"), st)
    torch.manual_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), to_torch("specs/lenet5.yaml").state_dict().values(),
                                                 strict=True))
    again = tmp_path / "again.safetensors"
    CliRunner().invoke(build, ["specs/lenet5.yaml", "--weights", str(again), "--seed", "3"])
    assert again.read_bytes() == st.read_bytes()


def test_build_with_set_and_signature(tmp_path: Path) -> None:
    sets = [a for k, v in SMALL["lstm_seq2seq"].items() for a in ("--set", f"{k}={v}")]
    st = tmp_path / "step.safetensors"
    result = CliRunner().invoke(build, ["specs/lstm_seq2seq.yaml", *sets, "--signature", "decode_step", "--weights", str(st)])
    assert result.exit_code == 0, result.output
    assert "signature decode_step" in result.output
    assert not any(k.startswith(("encoder", "src_embed")) for k in _keys(st))


def test_build_of_a_bad_spec_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    py, st = tmp_path / "out.py", tmp_path / "out.safetensors"
    result = CliRunner().invoke(build, ["specs/gpt.yaml", "--signature", "decode", "--emit-python", str(py),
                                        "--weights", str(st)])
    assert result.exit_code == 1
    assert "error[unknown-signature]" in result.output
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_what_torch_cannot_lower(tmp_path: Path) -> None:
    spec = tmp_path / "tied_norm.yaml"
    spec.write_text("name: t\ninputs: {x: {shape: [batch, 4]}}\nnodes:\n  a: {op: layer_norm, in: x}\n"
                    "  b: {op: layer_norm, in: a, tie: a}\noutputs: {y: b}\n")
    out = tmp_path / "t.py"
    result = CliRunner().invoke(build, [str(spec), "--emit-python", str(out)])
    assert result.exit_code == 1
    assert "cannot tie weight(s) weight of op 'layer_norm'" in result.output
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_build_writes_a_torch_state_dict_for_pt_and_bin(tmp_path: Path, suffix: str) -> None:
    pt, st = tmp_path / f"lenet5{suffix}", tmp_path / "lenet5.safetensors"
    for out in (pt, st):
        result = CliRunner().invoke(build, ["specs/lenet5.yaml", "--weights", str(out), "--seed", "3"])
        assert result.exit_code == 0, result.output
    assert pt.read_bytes()[:2] == b"PK"  # torch.save's zip archive, not safetensors under a .pt name
    state = torch.load(pt, weights_only=True)
    model = to_torch("specs/lenet5.yaml")
    model.load_state_dict(state)
    assert _same(model, load_weights(to_torch("specs/lenet5.yaml"), st))


def test_build_refuses_a_weights_suffix_it_does_not_write(tmp_path: Path) -> None:
    result = CliRunner().invoke(build, ["specs/lenet5.yaml", "--weights", str(tmp_path / "w.npz")])
    assert result.exit_code == 2
    assert "--weights" in result.output and "must end in .safetensors" in result.output and ".pt" in result.output
    assert list(tmp_path.iterdir()) == []
