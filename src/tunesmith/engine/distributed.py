"""Data-parallel training across processes (``torchrun``): DDP over gloo (CPU) or NCCL (CUDA).

Every rank holds the whole model; each optimizer step's items are split across ranks without
overlap, and gradients are averaged by DDP. Launch with::

    torchrun --nproc_per_node N -m tunesmith train CONFIG ...

A single process (no ``WORLD_SIZE`` in the environment) runs with no process group at all.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
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


def all_gather_rows(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every rank's rows of ``x`` (``[n_r, ...]``, ``n_r`` may differ by rank) concatenated in
    rank order, with gradients: ``torch.distributed.nn.functional.all_gather``, whose backward
    hands each rank the gradient of its own rows summed over every rank's loss. Used where a
    loss needs the whole global batch (contrastive in-batch negatives)."""
    if not info.enabled:
        return x
    import torch.distributed.nn.functional as dist_nn

    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(info.world)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device))
    counts = [int(n) for n in sizes]
    pad = max(counts) - x.shape[0]  # the collective needs one shape on every rank
    padded = torch.cat([x, x.new_zeros(pad, *x.shape[1:])]) if pad else x
    parts = dist_nn.all_gather(padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])


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


def leave() -> None:
    """Leave the process group after a run, once the method's modules are freed (``gc``), so
    the DDP reducer no longer holds the group when it is destroyed."""
    if dist.is_available() and dist.is_initialized():
        import gc

        gc.collect()
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- wrapping


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The transformer blocks of a causal LM or a BERT-style encoder (peft-wrapped or not, with
    or without a task head): FSDP's sharding units."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = base.get_decoder()  # an encoder model returns its backbone (BertModel)
    layers = getattr(inner, "layers", None)
    if layers is None:  # BERT and its kin keep their blocks in encoder.layer
        layers = getattr(getattr(inner, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(f"{type(base).__name__}: no decoder layers found to shard with FSDP")
    return list(layers)


def wrap_for_training(
    module: torch.nn.Module, model: Any, info: DistInfo, device: torch.device, parallel: str
) -> torch.nn.Module:
    """``module`` (which calls ``model``) as the step runs it: alone, DDP-replicated, or FSDP2
    (``fully_shard`` on every decoder layer, then on the root: parameters, gradients and
    optimizer state are sharded across ranks and gathered layer by layer)."""
    if not info.enabled:
        return module
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in decoder_layers(model):
            fully_shard(layer)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def is_fsdp(module: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def grad_sync(module: Any, on: bool) -> contextlib.AbstractContextManager[None]:
    """Gradient accumulation: skip the cross-rank gradient reduction until the last micro-batch."""
    if is_fsdp(module):
        module.set_requires_gradient_sync(on)
        return contextlib.nullcontext()
    if not on and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


def full_state_dict(module: Any, prefix: str = "model.") -> dict[str, torch.Tensor] | None:
    """FSDP: the whole model's weights gathered to CPU on rank 0 (a collective: every rank must
    call it; other ranks get an empty dict). Not sharded: None, save the model directly."""
    if not is_fsdp(module):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(
        module, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return {k.removeprefix(prefix): v for k, v in sd.items()}


def save_sharded(module: Any, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Each rank writes its own shard of the weights and optimizer state (torch DCP)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))


def load_sharded(module: Any, optimizer: torch.optim.Optimizer, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(
        module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
