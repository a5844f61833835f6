"""Data-parallel training across processes (``torchrun``): DDP over gloo (CPU) or NCCL (CUDA).

Every rank holds the whole model; each optimizer step's items are split across ranks without
overlap, and gradients are averaged by DDP. Launch with::

    torchrun --nproc_per_node N -m tunesmith train CONFIG ...

A single process (no ``WORLD_SIZE`` in the environment) runs with no process group at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return DistInfo(rank=rank, world=world, local_rank=local)


def rank_device(info: DistInfo, device: str) -> str:
    """Each rank's device: ``cuda:<local_rank>`` under torchrun with CUDA, else as configured."""
    if info.enabled and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return device


def all_reduce_sum(value: float, info: DistInfo, device: torch.device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """``obj`` from rank 0 on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _plain(obj: Any) -> Any:
    """Tensors as (marker, dtype, shape, values): all_gather_object mis-unpickles tensor storage."""
    if isinstance(obj, torch.Tensor):
        return ("__tensor__", str(obj.dtype), list(obj.shape), obj.cpu().flatten().tolist())
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _tensors(obj: Any) -> Any:
    if isinstance(obj, tuple) and len(obj) == 4 and obj[0] == "__tensor__":
        dtype = getattr(torch, obj[1].removeprefix("torch."))
        return torch.tensor(obj[3], dtype=dtype).reshape(obj[2])
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_tensors(v) for v in obj)
    return obj


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (tensors included), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, _plain(obj))
    return [_tensors(o) for o in out]


def shard(items: list[Any], info: DistInfo) -> list[Any]:
    """This rank's contiguous share of one micro-batch round (``len(items)`` = world x micro)."""
    per = len(items) // info.world
    return items[info.rank * per : (info.rank + 1) * per]


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
