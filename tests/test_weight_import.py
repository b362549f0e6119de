"""Weight import: Hugging Face checkpoints (built locally from configs, random weights) through the
shipped maps give HF's logits and greedy tokens in PyTorch and onnxruntime; every key is accounted
for, and bad checkpoints and maps fail naming the key."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from nnspec.backends import load_weights, run_onnx, to_onnx, to_torch
from nnspec.backends.cli import cli
from nnspec.backends.weightmap import CheckpointError, MapError, WeightImportError, import_weights, load_map, read_checkpoint
from nnspec.builder import load_spec

transformers = pytest.importorskip("transformers")  # the test extras install it; there is no hub

GPT_SETS = {"vocab": 97, "n_ctx": 32, "d_model": 32, "layers": 2, "heads": 4}
BERT_SETS = {"vocab": 89, "hidden": 32, "layers": 2, "heads": 4, "intermediate": 48, "max_len": 40}
GPT_MAP, BERT_MAP = "specs/maps/gpt2_hf.yaml", "specs/maps/bert_hf.yaml"


def _perturb(model: torch.nn.Module) -> None:
    """Give biases and LayerNorm their own values: a transform the map forgets then shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name or "LayerNorm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def _hf_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=97, n_positions=32, bos_token_id=0,
                                  eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    _perturb(model)
    return model


def _hf_bert() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                                  vocab_size=89, max_position_embeddings=40, pad_token_id=0)
    model = transformers.BertForPreTraining(cfg).eval()
    _perturb(model)
    return model


def _save(model: torch.nn.Module, path: Path) -> Path:
    """safetensors (tied tensors once, as transformers saves them) or a .bin state_dict."""
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        ptrs: set[int] = set()
        kept = {}
        for k, v in model.state_dict().items():
            if v.data_ptr() not in ptrs:
                ptrs.add(v.data_ptr())
                kept[k] = state[k]
        save_file(kept, str(path))
    else:
        torch.save(state, path)
    return path


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _greedy(step: Any, prompt: torch.Tensor, n: int) -> list[int]:
    tokens = prompt.clone()
    for _ in range(n):
        nxt = torch.as_tensor(step(tokens))[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens[0, prompt.shape[1]:].tolist()


@pytest.mark.parametrize("fmt", [".safetensors", ".bin"])
def test_gpt2_import_matches_hugging_face(tmp_path: Path, fmt: str) -> None:
    hf = _hf_gpt2()
    ckpt = _save(hf, tmp_path / f"model{fmt}")
    out = tmp_path / "gpt.safetensors"
    sets = [a for k, v in GPT_SETS.items() for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(cli, ["import-weights", "specs/gpt.yaml", str(ckpt), "--map", GPT_MAP, "-o", str(out),
                                      *sets], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    spec = load_spec("specs/gpt.yaml", GPT_SETS)
    ours = load_weights(to_torch(spec).eval(), out)
    tokens = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(tokens).logits.numpy()
        got = ours(tokens=tokens).numpy()
    assert _rel(got, ref) <= 1e-5
    model = to_onnx(spec, str(out))
    ort = run_onnx(model, {"tokens": tokens.numpy()})["logits"]
    assert _rel(ort, ref) <= 1e-5
    prompt = tokens[:1, :4]
    with torch.no_grad():
        want = _greedy(lambda t: hf(t).logits, prompt, 8)
        assert _greedy(lambda t: ours(tokens=t), prompt, 8) == want
    assert _greedy(lambda t: run_onnx(model, {"tokens": t.numpy()})["logits"], prompt, 8) == want


@pytest.mark.parametrize("fmt", [".safetensors", ".bin"])
def test_bert_import_matches_hugging_face(tmp_path: Path, fmt: str) -> None:
    hf = _hf_bert()
    ckpt = _save(hf, tmp_path / f"model{fmt}")
    spec = load_spec("specs/bert.yaml", BERT_SETS)
    state = import_weights(spec, ckpt, BERT_MAP).state_dict
    ours = to_torch(spec).eval()
    ours.load_state_dict(state)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 89, (2, 16), generator=g)
    types = (torch.arange(16) >= 9).long().expand(2, 16).contiguous()
    pad = torch.zeros(2, 16, dtype=torch.bool)
    pad[1, 12:] = True  # the second sequence is padded
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=(~pad).long())
        mlm, nsp = ours(input_ids=ids, token_type_ids=types, padding_mask=pad)
    keep = ~pad.numpy()
    assert _rel(mlm.numpy()[keep], ref.prediction_logits.numpy()[keep]) <= 1e-5
    assert _rel(nsp.numpy(), ref.seq_relationship_logits.numpy()) <= 1e-5
    got = run_onnx(to_onnx(spec, state), {"input_ids": ids.numpy(), "token_type_ids": types.numpy(),
                                          "padding_mask": pad.numpy()})
    assert _rel(got["mlm_logits"][keep], ref.prediction_logits.numpy()[keep]) <= 1e-5
    assert _rel(got["nsp_logits"], ref.seq_relationship_logits.numpy()) <= 1e-5
    assert (got["mlm_logits"][keep].argmax(-1) == ref.prediction_logits.numpy()[keep].argmax(-1)).all()


def test_sharded_safetensors_index(tmp_path: Path) -> None:
    hf = _hf_gpt2()
    state = {k: v.detach().clone().contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    keys = sorted(state)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, str(tmp_path / name))
        weight_map.update(dict.fromkeys(part, name))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert read_checkpoint(index).keys() == state.keys()
    spec = load_spec("specs/gpt.yaml", GPT_SETS)
    assert import_weights(spec, index, GPT_MAP).state_dict.keys() == to_torch(spec).state_dict().keys()


def test_shard_outside_the_index_folder_is_refused(tmp_path: Path) -> None:
    save_file({"x": torch.zeros(1)}, str(tmp_path / "outside.safetensors"))
    (tmp_path / "sub").mkdir()
    index = tmp_path / "sub" / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"x": "../outside.safetensors"}}))
    with pytest.raises(CheckpointError, match="not a file beside the index"):
        read_checkpoint(index)


def _gpt_state() -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in _hf_gpt2().state_dict().items()}


def _gpt_import(state: dict[str, torch.Tensor], **kw: Any) -> Any:
    return import_weights(load_spec("specs/gpt.yaml", GPT_SETS), state, GPT_MAP, **kw)


def test_every_key_is_accounted_for() -> None:
    state = _gpt_state()
    state["transformer.h.0.attn.rotary.weight"] = torch.zeros(3)
    del state["transformer.h.1.ln_2.bias"]
    state["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(32, 127)
    with pytest.raises(WeightImportError) as err:
        _gpt_import(state)
    text = str(err.value)
    assert "unmapped checkpoint tensor 'transformer.h.0.attn.rotary.weight' [3]" in text
    assert "'h.1.ln_2.bias': the checkpoint has no 'transformer.h.1.ln_2.bias'" in text
    assert "'h.0.c_fc.weight': the spec needs [128, 32], the map makes [127, 32]" in text
    assert "3 problems" in text


def test_allow_missing_is_explicit() -> None:
    state = _gpt_state()
    del state["transformer.ln_f.bias"]
    with pytest.raises(WeightImportError, match=r"ln_f\.bias"):
        _gpt_import(state)
    result = _gpt_import(state, allow_missing=True)
    assert result.missing == ["ln_f.bias"] and "ln_f.bias" not in result.state_dict


def test_an_untied_checkpoint_is_refused() -> None:
    state = _gpt_state()
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    with pytest.raises(WeightImportError, match=re.escape("tie: 'lm_head.weight' differs from 'transformer.wte.weight'")):
        _gpt_import(state)


def test_dtype_mismatch_names_the_key() -> None:
    state = _gpt_state()
    state["transformer.ln_f.weight"] = torch.ones(32, dtype=torch.int64)
    message = "'ln_f.weight': the spec needs float32, 'transformer.ln_f.weight' is int64"
    with pytest.raises(WeightImportError, match=re.escape(message)):
        _gpt_import(state)


def test_fp16_checkpoint_stays_fp16_with_a_note() -> None:
    state = {k: v.half() for k, v in _gpt_state().items()}
    result = _gpt_import(state)
    assert {t.dtype for t in result.state_dict.values()} == {torch.float16}
    assert any("float16" in n for n in result.notes)
    cast = _gpt_import(state, dtype="float32")
    assert {t.dtype for t in cast.state_dict.values()} == {torch.float32}
    assert cast.notes == ["cast float16 weights to float32"]


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("arbitrary code ran",))


def test_pickles_that_are_not_tensors_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Payload()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="only tensors are unpickled"):
        read_checkpoint(evil)
    assert "arbitrary code ran" not in capsys.readouterr().out
    odd = tmp_path / "odd.pt"
    torch.save({"w": torch.zeros(1), "step": 3}, odd)
    with pytest.raises(CheckpointError, match="'step' is a int, not a tensor"):
        read_checkpoint(odd)
    nested = tmp_path / "trained.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 4}, nested)
    assert list(read_checkpoint(nested)) == ["w"]
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a checkpoint nnspec can read"):
        read_checkpoint(junk)


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "m", "weights": {"a.weight": {"from": "x", "concat": ["y", "z"]}}}, "exactly one of 'from'"),
    ({"name": "m", "weights": {"a.weight": {"from": "x.{j}"}}}, "does not bind"),
    ({"name": "m", "weights": {"a.weight": {"from": "x", "spin": 1}}}, "Extra inputs are not permitted"),
    ({"name": "m", "weights": {"a.weight": {"from": "x", "split": {"parts": 2, "index": 2}}}}, "out of range"),
])
def test_bad_maps_say_what_is_wrong(data: dict[str, Any], message: str) -> None:
    with pytest.raises(MapError, match=message):
        load_map(data)


def test_split_reshape_and_shifted_indices() -> None:
    """A user's own checkpoint: a fused layer split, 1-based layer numbers, a flat tensor reshaped."""
    spec = load_spec("specs/gpt.yaml", {**GPT_SETS, "layers": 1})
    want = to_torch(spec).state_dict()
    fused = torch.cat([want["h.0.c_fc.weight"], want["h.0.c_proj.weight"].t()], dim=0)  # (256, 32)
    ckpt = {f"layer1.{k.removeprefix('h.0.')}": v for k, v in want.items() if k.startswith("h.0.")}
    del ckpt["layer1.c_fc.weight"], ckpt["layer1.c_proj.weight"]
    ckpt |= {"layer1.fused": fused, "emb": want["wte.weight"], "pos": want["wpe.weight"].reshape(-1),
             "norm.weight": want["ln_f.weight"], "norm.bias": want["ln_f.bias"]}
    wmap = {"name": "mine", "weights": {
        "wte.weight": "emb", "wpe.weight": {"from": "pos", "reshape": [32, 32]},
        "ln_f.weight": "norm.weight", "ln_f.bias": "norm.bias",
        "h.{i}.c_fc.weight": {"from": "layer{i+1}.fused", "split": {"sizes": [128, 128], "index": 0}},
        "h.{i}.c_proj.weight": {"from": "layer{i+1}.fused", "split": {"parts": 2, "index": 1}, "transpose": True},
        **{f"h.{{i}}.{k}": f"layer{{i+1}}.{k}" for k in ("ln_1.weight", "ln_1.bias", "attn.in_proj_weight",
                                                        "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
                                                        "ln_2.weight", "ln_2.bias", "c_fc.bias", "c_proj.bias")}}}
    got = import_weights(spec, ckpt, wmap).state_dict
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_cli_errors_exit_1_and_write_nothing(tmp_path: Path) -> None:
    state = _gpt_state()
    del state["transformer.wpe.weight"]
    ckpt = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items() if k != "lm_head.weight"}, str(ckpt))
    out = tmp_path / "w.safetensors"
    sets = [a for k, v in GPT_SETS.items() for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(cli, ["import-weights", "specs/gpt.yaml", str(ckpt), "--map", GPT_MAP, "-o", str(out),
                                      *sets])
    assert result.exit_code == 1
    assert "'wpe.weight': the checkpoint has no 'transformer.wpe.weight'" in result.stderr
    assert not out.exists()
    result = CliRunner().invoke(cli, ["import-weights", "specs/gpt.yaml", str(ckpt), "--map", GPT_MAP, "-o",
                                      str(tmp_path / "w.pt"), *sets])
    assert result.exit_code == 2 and "FILE.safetensors" in result.output


def test_torchvision_resnet50_map_gives_the_reference_outputs(tmp_path: Path) -> None:
    """A torchvision-layout ResNet-50 (the zoo's reference, at reduced width), batch-norm statistics
    and all, through specs/maps/resnet50_torchvision.yaml."""
    import zoo_references as refs
    from op_cases import SMALL_SPECS
    from test_zoo_vision import randomise

    ref = randomise(refs.ResNet(num_classes=10, width=8))
    ckpt = tmp_path / "resnet50.pt"
    torch.save(ref.state_dict(), ckpt)
    spec = load_spec("specs/resnet50.yaml", SMALL_SPECS["resnet50"])
    state = import_weights(spec, ckpt, "specs/maps/resnet50_torchvision.yaml").state_dict
    ours = to_torch(spec).eval()
    ours.load_state_dict(state)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = ref(x).numpy(), ours(image=x).numpy()
    assert _rel(got, want) <= 1e-5
    assert _rel(run_onnx(to_onnx(spec, state), {"image": x.numpy()})["logits"], want) <= 1e-5


def test_the_most_specific_rule_wins_and_ties_are_errors() -> None:
    spec = load_spec("specs/gpt.yaml", {**GPT_SETS, "layers": 1})
    want = to_torch(spec).state_dict()
    ckpt = {f"m.{k}": v for k, v in want.items()}
    wmap: dict[str, Any] = {"name": "m", "weights": {"{*}": "m.{*}", "ln_f.weight": "m.ln_f.weight"}}
    assert import_weights(spec, ckpt, wmap).state_dict.keys() == want.keys()
    wmap["weights"]["h.0.{*}"] = "m.h.0.{*}"
    wmap["weights"]["{*}bias"] = "m.{*}bias"  # 4 literal characters, as "h.0.": h.0.ln_1.bias is ambiguous
    with pytest.raises(WeightImportError, match=r"several rules of the map give it"):
        import_weights(spec, ckpt, wmap)


def test_llama_import_matches_hugging_face(tmp_path: Path) -> None:
    """LlamaForCausalLM with grouped-query attention (4 heads, 2 kv heads), RMSNorm weights perturbed."""
    sets = {"vocab_size": 61, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2}
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**sets, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=64,
                                   tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    ckpt = _save(hf, tmp_path / "model.safetensors")
    spec = load_spec("specs/llama.yaml", sets)
    state = import_weights(spec, ckpt, "specs/maps/llama_hf.yaml").state_dict
    ours = to_torch(spec).eval()
    ours.load_state_dict(state)
    ids = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want, got = hf(ids).logits.numpy(), ours(ids).numpy()
    assert _rel(got, want) <= 1e-5
    inputs = {i.name for i in to_onnx(spec, state).graph.input}
    feed = {name: ids.numpy() for name in inputs}
    assert _rel(next(iter(run_onnx(to_onnx(spec, state), feed).values())), want) <= 1e-5
