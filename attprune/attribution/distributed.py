"""Attribution across processes (torch.distributed, launched by torchrun).

Inside an initialised process group every rank reads the same, unsharded batches and scores
batch i when ``i % world_size == rank`` (DistributedSampler's round-robin, at batch
granularity: no batch is scored twice, a short last round just leaves some ranks idle).
Each rank keeps sums and counts; one all-reduce at the end gives every rank the scores
of all examples.  gloo on CPU, nccl on GPU (the sums travel on the current CUDA device).

    torchrun --nproc-per-node 4 -m attprune score --model DIR --data train.csv --out scores/
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_and_size() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_size()[0] == 0


def mine(index: int) -> bool:
    """Whether this rank scores batch ``index``."""
    rank, size = rank_and_size()
    return index % size == rank


def all_reduce_sums(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise sums over ranks (returned on the tensors' own device and dtype)."""
    if rank_and_size()[1] == 1:
        return tensors
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    flat = torch.cat([t.flatten().to(torch.float64) for t in tensors])
    flat = flat.to(device) if device is not None else flat
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].view(t.shape).to(t.device, t.dtype))
        start += t.numel()
    return out


def init_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); True if this call did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True


def barrier() -> None:
    if rank_and_size()[1] > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
