"""Blocks are modules: each block call of a spec is a module named after its block, with its
own forward; repeats are an nn.ModuleList run in a loop. State_dict keys stay the node ids.
Per-block hooks, activation checkpointing and torch.compile work, and so do FSDP2 per block
and DDP across two gloo processes on CPU (one optimiser step equals one process on the whole
batch; GPT's with_past, whose blocks run a method of theirs, equals one process's), and the
README's torchrun recipe."""

from __future__ import annotations

import copy
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from op_cases import SMALL_SPECS

from nnspec.backends.pytorch import SpecModule, register_fsdp_methods, to_torch
from nnspec.backends.pytorch.blocks import BlockModule, Repeat
from nnspec.backends.pytorch.inputs import example_inputs
from nnspec.builder import SpecError, compile_graph, load_spec
from nnspec.builder.schema import json_schema

GPT = {"vocab": 40, "n_ctx": 32, "d_model": 16, "layers": 3, "heads": 2}
BERT = {"vocab": 40, "hidden": 16, "heads": 2, "layers": 2, "intermediate": 32, "max_len": 32}
SPECS = sorted(p.stem for p in Path("specs").glob("*.yaml"))


def _block(model: torch.nn.Module, path: str) -> BlockModule:
    module = model.get_submodule(path)
    assert isinstance(module, BlockModule), path
    return module


def _outputs(value: Any) -> tuple[torch.Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def _loss(model: torch.nn.Module, x: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A loss that reads every output (a mean over the batch, so halves average to the whole)."""
    return sum((o.float().pow(2).mean() for o in _outputs(model(*x))), torch.zeros(()))


# --- the module tree ----------------------------------------------------------------------

def test_gpt_blocks_are_modules_in_a_module_list() -> None:
    model = to_torch("specs/gpt.yaml", overrides=GPT)
    h = model.get_submodule("h")
    assert isinstance(h, Repeat) and isinstance(h, torch.nn.ModuleList)
    assert len(h) == 3
    assert all(isinstance(b, BlockModule) and type(b).__name__ == "Block" for b in h)
    assert "Pre-LN residual block" in (type(h[0]).__doc__ or "")
    assert "self.h(drop)" in model.code  # the top level calls the loop, not each layer's ops
    assert "self.ln_1(x)" in _block(model, "h.1").code  # each block runs its own layers, named relative to it
    text = repr(model)
    assert "(0-2): 3 x Block(" in text


@pytest.mark.parametrize("name", SPECS)
def test_every_block_call_is_a_module_and_keys_stay(name: str) -> None:
    """Every block call of the spec is a BlockModule at its path; the parameter names are exactly the
    weights the checked graph declares, as before blocks became modules."""
    g = compile_graph(load_spec(f"specs/{name}.yaml", SMALL_SPECS[name]))
    model = to_torch(g)
    for path, call in g.graph["calls"].items():
        module = model.get_submodule(path)
        assert isinstance(module, BlockModule), path
        assert module.meta["block"] == call.block
    declared = {f"{n.id}.{w}" for n in (g.nodes[i]["node"] for i in g.graph["order"]) for w in n.weights}
    assert {k for k, _ in model.named_parameters()} == declared


def test_a_forward_hook_on_one_block_sees_its_output() -> None:
    model = to_torch("specs/gpt.yaml", overrides=GPT).eval()
    seen: list[tuple[int, ...]] = []
    _block(model, "h.1").register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape)))
    model(torch.randint(0, 40, (2, 5)))
    assert seen == [(2, 5, 16)]


# --- signatures run through the blocks --------------------------------------------------------

PAST = {"batch": 2, "seq": 3, "past_sequence_length": 4}


def test_signature_methods_call_the_blocks_and_their_hooks_fire() -> None:
    """GPT's with_past and padded call methods of the blocks (``h[i].with_past``, a loop of
    ``h[i].padded``) instead of the layers inside them: a pre-hook on a block fires for them, and
    tells which method runs; outputs do not depend on the hook."""
    model = to_torch("specs/gpt.yaml", overrides=GPT).eval()
    seen: list[tuple[str | None, tuple[int, ...]]] = []
    block = _block(model, "h.0")
    block.register_forward_pre_hook(lambda m, args: seen.append((m.running, tuple(args[0].shape))))
    for sig in ("with_past", "padded", "padded_with_past"):
        code = model.signature(sig).code
        assert "ln_1" not in code and "attn" not in code, sig  # no layer of a block is called from outside it
        seen.clear()
        getattr(model, sig)(*example_inputs(model.signature(sig), PAST))
        assert seen == [(sig, (2, 3, 16))], sig
    assert set(block.methods) == {"with_past", "padded", "padded_with_past"}
    assert [loop.name for loop in model.get_submodule("h").loops] == ["padded"]  # with_past: each copy its past
    seen.clear()
    model(torch.randint(0, 40, (2, 5)))
    assert seen == [(None, (2, 5, 16))]


def test_a_signature_whose_block_body_is_forwards_runs_forward() -> None:
    """The Transformer's encode and decode run the layers' forward (the same graph); the cache
    signatures of decode reuse the main graph's methods instead of compiling their own."""
    model = to_torch("specs/transformer.yaml", overrides=SMALL_SPECS["transformer"]).eval()
    assert "self.encoder(" in model.signature("encode").code
    assert set(_block(model, "encoder.0").methods) == set()
    assert set(_block(model, "decoder.0").methods) == {"with_past", "cross_kv"}
    assert ".with_past(" in model.signature("decode_with_past").code
    calls: list[str | None] = []
    _block(model, "encoder.1").register_forward_pre_hook(lambda m, args: calls.append(m.running))
    model.encode(*example_inputs(model.signature("encode"), {"batch": 2, "src_len": 5}))
    assert calls == [None]


def test_checkpointing_applies_in_signature_methods() -> None:
    """With checkpointing on, a block's layers run again in backward when a signature (with_past)
    called it, and the gradients equal those without."""
    x = None
    grads, runs = [], []
    for on in (False, True):
        torch.manual_seed(0)
        model = to_torch("specs/gpt.yaml", overrides=GPT, checkpoint=on)
        x = x or example_inputs(model.signature("with_past"), PAST)
        count = [0]
        model.get_submodule("h.1.ln_1").register_forward_hook(lambda *_, count=count: count.__setitem__(0, count[0] + 1))
        torch.manual_seed(1)  # train mode: dropout must draw the same masks when recomputed
        sum(o.float().pow(2).mean() for o in model.with_past(*x)).backward()
        grads.append({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
        runs.append(count[0])
    assert runs == [1, 2]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-5, msg=k)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_keep_block_methods_over_their_own_weights(how: str) -> None:
    model = to_torch("specs/gpt.yaml", overrides=GPT).eval()
    clone = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    x = example_inputs(model.signature("with_past"), PAST)
    want = model.with_past(*x)
    assert set(_block(clone, "h.2").methods) == set(_block(model, "h.2").methods)
    for a, b in zip(clone.with_past(*x), want, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    with torch.no_grad():
        clone.get_parameter("h.1.c_fc.weight").add_(1.0)
    assert not torch.equal(clone.with_past(*x)[0], want[0])  # the clone's methods read the clone's weights
    torch.testing.assert_close(model.with_past(*x)[0], want[0], atol=0, rtol=0)


def test_copies_that_differ_stay_modules_and_the_parent_calls_each() -> None:
    """VGG-16's stages repeat a conv whose input width differs in the first copy: each copy is its
    own module, called in turn where the copies' calls do not chain uniformly."""
    model = to_torch("specs/vgg16.yaml", overrides=SMALL_SPECS["vgg16"]).eval()
    blocks = [m for m in model.modules() if isinstance(m, BlockModule)]
    assert blocks
    x = example_inputs(model, {"batch": 2})
    assert model(*x).shape[0] == 2


# --- activation checkpointing and compile --------------------------------------------------

@pytest.mark.parametrize(("name", "overrides"), [("gpt", GPT), ("bert", BERT), ("transformer", None)])
def test_checkpointing_gives_the_same_gradients(name: str, overrides: dict[str, Any] | None) -> None:
    overrides = overrides or SMALL_SPECS[name]
    torch.manual_seed(0)
    plain = to_torch(f"specs/{name}.yaml", overrides=overrides)
    torch.manual_seed(0)
    ckpt = to_torch(f"specs/{name}.yaml", overrides=overrides, checkpoint=True)
    assert any(isinstance(m, BlockModule) and m.checkpoint_activations for m in ckpt.modules())
    x = example_inputs(plain, {"batch": 2, "seq": 7, "src_len": 6, "tgt_len": 5})
    grads = []
    for model in (plain, ckpt):  # train mode: dropout must draw the same masks when recomputed
        torch.manual_seed(1)
        _loss(model, x).backward()
        grads.append({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-5, msg=k)


def test_checkpointing_keeps_fewer_activations() -> None:
    """Saved tensors for backward, counted by the autograd hooks: far fewer with checkpointing."""
    sizes = []
    for on in (False, True):
        torch.manual_seed(0)
        model = to_torch("specs/gpt.yaml", overrides={**GPT, "layers": 4, "dropout": 0.0}, checkpoint=on)
        total = [0]

        def pack(t: torch.Tensor, total: list[int] = total) -> torch.Tensor:
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = _loss(model, (torch.randint(0, 40, (4, 32)),))
        loss.backward()
        sizes.append(total[0])
    assert sizes[1] * 2 < sizes[0], sizes


def test_checkpoint_by_block_name_and_per_call() -> None:
    model = to_torch("specs/transformer.yaml", overrides=SMALL_SPECS["transformer"], checkpoint=["decoder_layer"])
    flags = {type(m).__name__: m.checkpoint_activations for m in model.modules() if isinstance(m, BlockModule)}
    assert flags == {"EncoderLayer": False, "DecoderLayer": True}
    _block(model, "encoder.0").checkpoint_activations = True
    assert _block(model, "encoder.0").checkpoint_activations and not _block(model, "encoder.1").checkpoint_activations


def _transformer(**marks: bool) -> dict[str, Any]:
    """The seed Transformer as data, with ``checkpoint:`` set on the named blocks."""
    spec = yaml.safe_load(Path("specs/transformer.yaml").read_text())
    for block, on in marks.items():
        spec["blocks"][block]["checkpoint"] = on
    return spec


def test_checkpoint_key_of_a_block_checkpoints_its_calls_only() -> None:
    """``checkpoint: true`` on the decoder layer: its calls recompute their layers in backward (a
    layer inside runs twice per step, one of the encoder once), and gradients stay the same."""
    overrides = SMALL_SPECS["transformer"]
    torch.manual_seed(0)
    plain = to_torch(_transformer(), overrides=overrides)
    torch.manual_seed(0)
    marked = to_torch(_transformer(decoder_layer=True), overrides=overrides)
    flags = {type(m).__name__: m.checkpoint_activations for m in marked.modules() if isinstance(m, BlockModule)}
    assert flags == {"EncoderLayer": False, "DecoderLayer": True}
    x = example_inputs(plain, {"batch": 2, "src_len": 6, "tgt_len": 5})
    grads, runs = [], []
    for model in (plain, marked):
        calls = {"encoder": 0, "decoder": 0}
        for stack in calls:
            def count(*_: Any, stack: str = stack, calls: dict[str, int] = calls) -> None:
                calls[stack] += 1

            model.get_submodule(f"{stack}.0.norm1").register_forward_hook(count)
        torch.manual_seed(1)  # train mode: dropout must draw the same masks when recomputed
        _loss(model, x).backward()
        grads.append({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
        runs.append(calls)
    assert runs == [{"encoder": 1, "decoder": 1}, {"encoder": 1, "decoder": 2}]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-5, msg=k)


def test_checkpoint_argument_overrides_the_spec() -> None:
    spec = _transformer(decoder_layer=True)
    overrides = SMALL_SPECS["transformer"]
    off = to_torch(spec, overrides=overrides, checkpoint=False)
    assert not any(isinstance(m, BlockModule) and m.checkpoint_activations for m in off.modules())
    other = to_torch(spec, overrides=overrides, checkpoint=["encoder_layer"])
    flags = {type(m).__name__: m.checkpoint_activations for m in other.modules() if isinstance(m, BlockModule)}
    assert flags == {"EncoderLayer": True, "DecoderLayer": False}
    with pytest.raises(ValueError, match=r"calls no block 'encoder_layr'.*did you mean 'encoder_layer'"):
        to_torch(spec, overrides=overrides, checkpoint=["encoder_layr"], device="meta")


def test_checkpoint_key_is_validated_and_in_the_schema() -> None:
    spec = _transformer()
    spec["blocks"]["decoder_layer"]["checkpoint"] = "sometimes"
    with pytest.raises(SpecError, match="checkpoint"):
        load_spec(spec)
    block = json_schema()["$defs"]["Block"]["properties"]
    assert block["checkpoint"]["type"] == "boolean" and "activations" in block["checkpoint"]["description"]
    # ONNX and the graph do not change: the key only asks PyTorch to recompute
    marked = compile_graph(load_spec(_transformer(decoder_layer=True), SMALL_SPECS["transformer"]))
    assert marked.graph["checkpoint_blocks"] == ["decoder_layer"]


# dynamo reads .grad of a block's input (an activation, not a leaf) while it guards on it
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_compile_one_block_and_the_whole_model() -> None:
    """torch.compile on one block instance (in place) and on the whole model (aot_eager: the graph
    capture and autograd; inductor's code generation is timed in bench/)."""
    model = to_torch("specs/gpt.yaml", overrides=GPT).eval()
    x = torch.randint(0, 40, (2, 6))
    want = model(x)
    hidden = torch.randn(2, 6, 16)
    block = _block(model, "h.0")
    block_want = block(hidden)
    block.compile(backend="aot_eager", dynamic=False)
    torch.testing.assert_close(block(hidden), block_want)
    torch.testing.assert_close(model(x), want)  # the loop calls the compiled block
    whole = torch.compile(model, backend="aot_eager", dynamic=False)
    torch.testing.assert_close(whole(x), want)


# --- distributed: FSDP2 per block and DDP, two gloo processes --------------------------------

CASES = {"gpt": {**GPT, "dropout": 0.0}, "bert": {**BERT, "dropout": 0.0}}
DIMS = {"batch": 4, "seq": 6}


def _batch(name: str, model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    return example_inputs(model, DIMS, seed=5)


def _past(model: SpecModule) -> tuple[torch.Tensor, ...]:
    return example_inputs(model.signature("with_past"), {**DIMS, "past_sequence_length": 3}, seed=6)


def _step(model: torch.nn.Module, x: tuple[torch.Tensor, ...]) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    _loss(model, x).backward()
    opt.step()


def _worker(rank: int, port: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        mesh = init_device_mesh("cpu", (2,))
        for name, overrides in CASES.items():
            for how in ("fsdp2", "ddp"):
                torch.manual_seed(0)
                model = to_torch(f"specs/{name}.yaml", overrides=overrides)
                x = tuple(t[rank * 2:rank * 2 + 2] for t in _batch(name, model))
                if how == "fsdp2":
                    for block in model.modules():
                        if isinstance(block, BlockModule):
                            fully_shard(block, mesh=mesh)
                    fully_shard(model, mesh=mesh)
                    register_fsdp_methods(model)  # the root's signatures; the blocks' methods need nothing
                    _step(model, x)
                    if "with_past" in model.signatures:  # each block gathers its weights for with_past too
                        with torch.no_grad():  # (after the step: FSDP2 keeps the root unsharded after a no_grad call)
                            torch.save(model.with_past(*_past(model)), f"{out}/{name}-with_past-{rank}.pt")
                    state = {k: v.full_tensor() for k, v in model.state_dict().items()}
                else:
                    wrapped = DistributedDataParallel(model)
                    _step(wrapped, x)
                    state = dict(model.state_dict())
                torch.save(state, f"{out}/{name}-{how}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # two spawned interpreters, four trainings each: about 30 s on two cores
def test_fsdp2_per_block_and_ddp_match_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for name, overrides in CASES.items():
        torch.manual_seed(0)
        single = to_torch(f"specs/{name}.yaml", overrides=overrides)
        initial = {k: v.clone() for k, v in single.state_dict().items()}
        _step(single, _batch(name, single))
        if "with_past" in single.signatures:
            with torch.no_grad():
                past = single.with_past(*_past(single))
            for r in range(2):
                got = torch.load(tmp_path / f"{name}-with_past-{r}.pt")
                for a, b in zip(got, past, strict=True):
                    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"{name} with_past rank {r}")
        for how in ("fsdp2", "ddp"):
            ranks = [torch.load(tmp_path / f"{name}-{how}-{r}.pt") for r in range(2)]
            assert list(ranks[0]) == list(single.state_dict()), (name, how)
            changed = 0
            for key, want in single.state_dict().items():
                torch.testing.assert_close(ranks[0][key], ranks[1][key], atol=0, rtol=0, msg=f"{name} {how} {key}")
                torch.testing.assert_close(ranks[0][key], want, atol=1e-5, rtol=1e-4, msg=f"{name} {how} {key}")
                changed += not torch.equal(want, initial[key])
            assert changed > len(initial) // 2, (name, how)


@pytest.mark.slow  # torchrun starts two interpreters that train a reduced GPT: about 30 s
def test_torchrun_recipe_trains_with_fsdp2_and_checkpointing(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "trained.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                           "examples/fsdp_gpt.py", "--steps", "3", "--save", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = [float(line.rsplit(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("step ")]
    assert len(losses) == 3 and all(loss == loss for loss in losses)
    state = torch.load(out)
    fresh = to_torch("specs/gpt.yaml", overrides={"vocab": 64, "n_ctx": 32, "d_model": 32, "layers": 2, "heads": 2})
    assert list(state) == list(fresh.state_dict())
    fresh.load_state_dict(state)
