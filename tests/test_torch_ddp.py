"""A built module trains under DistributedDataParallel (gloo, two processes on CPU): after one
step on different halves of a batch, both replicas hold the weights that one process gets
from the whole batch."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from nnspec.backends.pytorch import to_torch

SPEC = "specs/lenet5.yaml"


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return torch.randn(8, 1, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(to_torch(SPEC))
        x, y = _batch()
        half = slice(rank * 4, rank * 4 + 4)
        _step(model, x[half], y[half])
        torch.save(model.module.state_dict(), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # two spawned interpreters import torch: about 20 s on two cores
def test_ddp_two_processes_on_cpu(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(0)
    single = to_torch(SPEC)
    initial = {k: v.clone() for k, v in single.state_dict().items()}
    _step(single, *_batch())  # mean loss over 8 = the average of the two ranks' mean losses over 4
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for key, want in single.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert torch.allclose(ranks[0][key], want, atol=1e-6), key
        assert not torch.equal(want, initial[key]), key  # the step changed every weight
