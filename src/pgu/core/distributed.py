"""Several processes, one result: who this process is, and sums that do not depend on how many
processes share the work.

Under ``torchrun`` every process runs the same program; ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` say which one it is. :func:`init_from_env` joins them in a process group (gloo
for CPU tensors, NCCL for CUDA tensors); without it, or with one process, every helper here
is a no-op and code runs exactly as in a plain single process.

Floating-point addition is not associative, so an all-reduce of per-rank partial sums gives
bytes that depend on the number of ranks. :func:`ordered_chunk_sum` instead cuts the work into
chunks fixed by the data alone, computes each chunk's float64 sum on one rank, gathers them and
adds them on every rank in chunk order: ((0 + S_0) + S_1) + ... for any number of ranks, the
same bytes as a single process adding the same chunk sums in a loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)


def launch_world_size() -> int:
    """Number of processes the launcher started (``WORLD_SIZE``; 1 when not launched by one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes in the process group (1 when there is none)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank: the process group's, else the launcher's ``RANK``, else 0.

    Falling back to ``RANK`` means that a program started by ``torchrun`` without a process
    group still knows which process is rank 0 (the one that writes outputs).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0, the process that logs progress and writes outputs."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (no-op without a multi-process group)."""
    if is_distributed():
        dist.barrier()


def init_from_env() -> bool:
    """Join the process group described by the launcher's environment, if there is one.

    Backends: gloo for CPU tensors and, when CUDA is available, NCCL for CUDA tensors (the
    ``"cpu:gloo,cuda:nccl"`` form routes each collective by its tensors' device). With CUDA,
    this process's default GPU becomes ``cuda:LOCAL_RANK``, so ``device="cuda"`` means "my GPU".

    Returns:
        True if this call created the group (the caller then owns :func:`shutdown`); False
        when there is nothing to do (one process, or a group already exists).
    """
    if launch_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend)
    logger.info(
        "process group: rank %d of %d, backend %s", dist.get_rank(), dist.get_world_size(), backend
    )
    return True


def shutdown() -> None:
    """Leave and destroy the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _group_rank() -> int:
    """Rank within a multi-process group; 0 without one (even if ``RANK`` is set)."""
    return dist.get_rank() if is_distributed() else 0


def shard(n: int) -> tuple[int, int]:
    """This rank's contiguous part ``[start, stop)`` of ``n`` items (sizes differ by at most 1)."""
    w, r = world_size(), _group_rank()
    return n * r // w, n * (r + 1) // w


def all_reduce_sum(values: list[float], device: str | torch.device = "cpu") -> list[float]:
    """Sum a few Python numbers over all processes (float64; for counts and logged metrics)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``module``'s buffers (e.g. BatchNorm running statistics) from rank ``src`` to all."""
    if not is_distributed():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src)


def ordered_chunk_sum(
    n_chunks: int,
    chunk_sum: Callable[[int], Mapping[str, Tensor]],
    zeros: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """Σ_c chunk_sum(c) added in chunk order, the same bytes for any number of processes.

    Chunks are dealt round-robin: in round j, rank r computes chunk j·W + r. The W chunk sums
    of a round are all-gathered (one key at a time, so at most W tensors of one key are in
    flight) and every rank adds them to its running totals in chunk order. With one process
    this is the plain loop ``total += chunk_sum(c)`` for c = 0, 1, ...

    Every rank must call this with the same ``n_chunks`` and keys (it is a collective).

    Args:
        n_chunks: number of chunks, fixed by the data (not by the number of processes).
        chunk_sum: computes chunk c's partial sums ``{key: tensor}``, shaped like ``zeros``.
        zeros: ``{key: zero tensor}`` giving each total's shape, dtype and device.

    Returns:
        ``{key: total}``, identical on every rank.
    """
    totals = {k: z.clone() for k, z in zeros.items()}
    w, r = world_size(), _group_rank()
    for first in range(0, n_chunks, w):
        c = first + r
        # a rank without a chunk in the last round still takes part in the collectives
        local = chunk_sum(c) if c < n_chunks else zeros
        if w == 1:
            for k, total in totals.items():
                total += local[k]
            continue
        for k, total in totals.items():
            gathered = [torch.empty_like(total) for _ in range(w)]
            dist.all_gather(gathered, local[k].contiguous())
            for j in range(min(w, n_chunks - first)):  # chunk order: first, first+1, ...
                total += gathered[j]
    return totals
