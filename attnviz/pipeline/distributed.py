"""Where one process of a torchrun job runs: its device and process-group backend (training and ``attnviz stats``
share them)."""

from __future__ import annotations

import os

import torch

__all__ = ["backend_for", "resolve_device", "torchrun_env"]


def resolve_device(
    requested: torch.device | str | None, local_rank: int = 0, n_gpus: int = 0, local_world: int = 1
) -> torch.device:
    """The device one training process runs on (a pure function: the caller passes what it knows).

    Args:
        requested: ``None`` (a GPU when there is one, else the CPU), ``"cpu"``, ``"cuda"`` (this rank's GPU) or
            ``"cuda:N"``.
        local_rank: the process's rank on its node (torchrun's ``LOCAL_RANK``; 0 outside torchrun).
        n_gpus: CUDA devices visible to the process (``torch.cuda.device_count()``).
        local_world: processes on this node (torchrun's ``LOCAL_WORLD_SIZE``; 1 outside torchrun).

    Returns:
        ``cpu``, or ``cuda:LOCAL_RANK`` for ``None``/``"cuda"`` (always with an index: ``set_device`` needs one),
        or ``cuda:N`` as asked.

    Raises:
        ValueError: CUDA asked for without a GPU, a GPU index that does not exist, more ranks on this node than
            GPUs (two ranks cannot share a GPU under NCCL: start fewer, or pass ``cpu``), or one ``cuda:N`` for
            several ranks of a node.
    """
    if requested is None:
        requested = "cuda" if n_gpus > 0 else "cpu"
    try:
        dev = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"training runs on 'cpu' or 'cuda[:N]', not {requested!r}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"training runs on 'cpu' or 'cuda[:N]', not {str(dev)!r}")
    if n_gpus < 1:
        raise ValueError(f"device {str(dev)!r} was asked for, but no CUDA GPU is available")
    if dev.index is not None:
        if dev.index >= n_gpus:
            raise ValueError(f"device {str(dev)!r} does not exist: this machine has {n_gpus} GPU(s)")
        if local_world > 1:
            raise ValueError(
                f"device {str(dev)!r} would put all {local_world} ranks of this node on one GPU; pass 'cuda' "
                "(rank i trains on cuda:i) or 'cpu'"
            )
        return dev
    if local_rank >= n_gpus:
        raise ValueError(
            f"{max(local_world, local_rank + 1)} ranks on this node but {n_gpus} GPU(s): rank {local_rank} has no GPU "
            f"of its own (NCCL cannot share one); start torchrun with --nproc_per_node {n_gpus}, or train on 'cpu'"
        )
    return torch.device("cuda", local_rank)


def backend_for(device: torch.device) -> str:
    """The process-group backend for ranks training on ``device``: NCCL for a GPU, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def torchrun_env() -> tuple[int, int, int, int]:
    """(rank, local rank, local world size, world size) from torchrun's environment; (0, 0, 1, 1) outside it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1, 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1)))
    return int(os.environ.get("RANK", "0")), local_rank, local_world, world
