"""Training on many processes (DDP under torchrun): the process group, main-first data loading, and
keeping every rank's model the one rank 0 saves.

On one process (``WORLD_SIZE`` unset or 1) every function here is a no-op or a plain call.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cutmix.data import Dataset, load_dataset
from cutmix.errors import DataError, UsageError
from cutmix.runinfo import atomic_torch_save

# How long a collective may wait: see setup_distributed.
DIST_TIMEOUT = datetime.timedelta(hours=2)


@dataclass
class Distributed:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str) -> tuple[Distributed, torch.device]:
    """Joins the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world_size <= 1:
        return Distributed(), torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.device(device).type == "cuda"
    if not dist.is_initialized():
        # Rank 0 alone downloads or decodes the data while the others wait in a collective
        # (load_data_main_first): give it longer than NCCL's default of 10 minutes.
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=DIST_TIMEOUT)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device(device)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank), target


def load_data_main_first(spec: str, dist_info: Distributed, progress: bool = True) -> Dataset:
    """``load_dataset(spec)``, under DDP on rank 0 first: it alone downloads, decodes and caches,
    while the other ranks wait, then read the copy or cache it left (no concurrent downloads).

    Rank 0 tells the others whether it succeeded, so a bad ``--data`` ends every rank with its
    message instead of leaving them waiting. (On several machines without a shared cache folder,
    the other machines' processes each load for themselves, after rank 0.)
    """
    if not dist_info.enabled:
        return load_data(spec, progress)
    if dist_info.is_main:
        try:
            dataset = load_data(spec, progress)
        except Exception as exc:
            dist.broadcast_object_list([(isinstance(exc, (UsageError, OSError)), str(exc))], src=0)
            raise
        dist.broadcast_object_list([None], src=0)
        return dataset
    outcome: list[Any] = [None]
    dist.broadcast_object_list(outcome, src=0)  # waits for rank 0's load
    if outcome[0] is not None:
        users_fault, message = outcome[0]
        message = message.removeprefix("--data: ")  # load_data's prefix, said once
        raise (DataError if users_fault else RuntimeError)(f"--data: rank 0 could not load it: {message}")
    return load_data(spec, progress=False)


def load_data(spec: str, progress: bool = True) -> Dataset:
    """``load_dataset(spec)``, its user errors naming the flag they came from (``--data: ...``)."""
    try:
        return load_dataset(spec, progress=progress)
    except DataError as exc:
        if str(exc).startswith("--"):
            raise
        raise DataError(f"--data: {exc}") from exc


def broadcast_buffers(model: nn.Module, dist_info: Distributed) -> None:
    """Makes every rank's buffers (BatchNorm running statistics) rank 0's.

    DDP keeps the parameters equal, and broadcasts rank 0's buffers before each training forward,
    but each rank's last batches still update its own copy, so without this each test shard would
    be scored by a different model and none of them would be the one rank 0 saves. Rank 0's copy,
    not an average: it is what DDP trains on from the next step and what the checkpoint holds, so
    the evaluated model is the saved one and training goes on exactly as before (rank 0 is unchanged).
    """
    if dist_info.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def sum_over_ranks(tensor: torch.Tensor, dist_info: Distributed) -> torch.Tensor:
    """``tensor`` summed over every rank, in place (unchanged on one process); returns it."""
    if dist_info.enabled:
        dist.all_reduce(tensor)
    return tensor


def gather_over_ranks(value: Any, dist_info: Distributed) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order: ``[value]`` on one process."""
    if not dist_info.enabled:
        return [value]
    values: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(values, value)
    return values


def dump_rank_state(model: nn.Module, dist_info: Distributed) -> None:
    """For tests of DDP: every rank saves its final weights where CUTMIX_RANK_STATE_DIR says."""
    target = os.environ.get("CUTMIX_RANK_STATE_DIR")
    if target:
        atomic_torch_save(Path(target) / f"rank{dist_info.rank}.pt", model.state_dict())
