"""Train the seed GPT with FSDP2 per block and activation checkpointing, under torchrun.

    torchrun --nproc_per_node 2 examples/fsdp_gpt.py --steps 20                # CPU (gloo)
    torchrun --nproc_per_node 8 examples/fsdp_gpt.py --backend nccl --full     # GPT-2 small on GPUs

Each block call of the spec is a module of its own (``model.h[3]`` is a ``Block``), so the
standard recipe applies unchanged: ``fully_shard`` on every block, then on the root; each block
gathers its weights just before its forward and frees them after. The signatures (``with_past``,
``padded``) call methods of the blocks that run through the block's ``__call__`` like ``forward``;
``register_fsdp_methods`` tells FSDP2 that they are forward methods of the root. ``to_torch(...,
checkpoint=True)`` recomputes each block's activations in backward instead of keeping them.
Every rank trains on its own slice of random token batches; rank 0 prints the loss.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnspec.backends.pytorch import register_fsdp_methods, to_torch
from nnspec.backends.pytorch.blocks import BlockModule

SMALL = {"vocab": 64, "n_ctx": 32, "d_model": 32, "layers": 2, "heads": 2, "dropout": 0.0}
"""A reduced GPT that trains in seconds on CPU; --full builds GPT-2 small."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(Path(__file__).resolve().parents[1] / "specs" / "gpt.yaml"))
    parser.add_argument("--full", action="store_true", help="the spec's own sizes instead of a reduced GPT")
    parser.add_argument("--backend", default="gloo")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4, help="sequences per rank")
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--save", help="write the trained state_dict (full tensors) here, from rank 0")
    args = parser.parse_args()

    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type, (world,))

    torch.manual_seed(0)  # the same initial weights on every rank
    model = to_torch(args.spec, overrides=None if args.full else SMALL, device=device, checkpoint=True)
    for block in model.modules():
        if isinstance(block, BlockModule):
            fully_shard(block, mesh=mesh)  # one all-gather per block, just before its forward
    fully_shard(model, mesh=mesh)  # the embeddings, the final norm and the (tied) LM head
    register_fsdp_methods(model)  # model.with_past, model.padded gather the root's weights too
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    wte = model.get_submodule("wte")
    assert isinstance(wte, torch.nn.Embedding)
    vocab = wte.num_embeddings

    gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own data
    for step in range(args.steps):
        tokens = torch.randint(0, vocab, (args.batch, args.seq + 1), generator=gen).to(device)
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        if rank == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)

    state = {k: v.full_tensor() for k, v in model.state_dict().items()}  # gathers: every rank takes part
    if rank == 0 and args.save:
        torch.save(state, args.save)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
