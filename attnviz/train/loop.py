"""Training and fine-tuning: one loop for the shipped demo models and for ``attnviz train`` on a user's folder.

The loop is plain PyTorch: AdamW with a warm-up and cosine decay, label smoothing, bf16 autocast on CUDA,
validation each epoch, the best checkpoint (by validation accuracy) saved with its model card, and a resume
file with the optimiser state. Under ``torchrun`` (``WORLD_SIZE`` > 1) it runs DistributedDataParallel, its backend
chosen from the device the rank trains on (NCCL for a GPU, gloo for the CPU: ``--device cpu`` on a GPU host runs
gloo); each rank of a node takes its own GPU (``cuda:LOCAL_RANK``), and more ranks than GPUs on a node is an error
that says so (NCCL cannot share one GPU between ranks). Only rank 0 writes files.

``freeze_backbone`` trains what an inserted attention block needs to fit a trained backbone: the attention
parameters (including convolutions a block replaces), every BatchNorm (affine and running statistics: the
features they see change) and the classifier. The checkpoint then holds only those tensors (a *delta*) and
names the backbone file it builds on.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data.teacher import soft_cross_entropy
from ..pipeline.distributed import backend_for, resolve_device, torchrun_env
from ..sources.checkpoint import read_checkpoint, save_checkpoint, tensors_sha256
from ..sources.own import attention_modules
from .augment import random_convolution

__all__ = [
    "TrainConfig",
    "delta_keys",
    "evaluate_accuracy",
    "fit",
    "freeze_for_attention",
]


@dataclass
class TrainConfig:
    """Settings of one training run (stored in the model card).

    With ``distill`` > 0 the training items carry a soft target as their third element, ``(image, label,
    target (K,))`` (e.g. :class:`attnviz.data.pool.ScenePool` with the teacher's targets; Hinton et al. 2015).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    freeze_backbone: bool = False
    num_workers: int = 1
    seed: int = 0
    half_checkpoint: bool = False
    distill: float = 0.0  # weight a of the soft-target term: (1 - a) * CE(label) + a * CE(teacher's target)
    randconv: float = 0.0  # share of training images passed through a random convolution (attnviz.train.augment)


def freeze_for_attention(model: nn.Module) -> list[str]:
    """Freeze everything except attention modules, BatchNorm layers and ``fc``; return the trainable names."""

    prefixes = tuple(p + "." for p in attention_modules(model))
    norm_params = {
        f"{m_name}.{p_name}"
        for m_name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p_name, _ in m.named_parameters(recurse=False)
    }
    names = []
    for name, p in model.named_parameters():
        keep = name.startswith(prefixes) or name.startswith("fc.") or name in norm_params
        p.requires_grad_(keep)
        if keep:
            names.append(name)
    return names


def delta_keys(model: nn.Module) -> list[str]:
    """State-dict keys a frozen-backbone fine-tune changes: trainable parameters plus BatchNorm buffers."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    bn_buffers = {
        f"{m_name}.{b_name}"
        for m_name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b_name, _ in m.named_buffers(recurse=False)
    }
    return [k for k in model.state_dict() if k in trainable or k in bn_buffers]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return (x - mean) / std  # (B, 3, H, W) in [0, 1] -> model input


@torch.inference_mode()
def evaluate_accuracy(
    model: nn.Module, loader: DataLoader, mean: list[float], std: list[float], device: torch.device | str = "cpu"
) -> float:
    """Top-1 accuracy of ``model`` over ``loader`` (batches of ``(image in [0, 1], label, ...)``); summed over
    ranks under DDP."""
    device = torch.device(device)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    was_training = model.training
    model.eval()
    counts = torch.zeros(2, device=device, dtype=torch.float64)  # (correct, seen): one sync at the end
    for batch in loader:
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(_normalize(x, m, s))
        counts[0] += (logits.argmax(1) == y).sum()
        counts[1] += y.numel()
    if dist.is_initialized():
        dist.all_reduce(counts)
    model.train(was_training)
    return float(counts[0] / counts[1].clamp(min=1))


def _progress(total: int, desc: str, enabled: bool) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with huggingface_hub
        return None
    return tqdm(total=total, desc=desc, leave=False, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    *,
    out: str | Path,
    card: dict[str, Any],
    device: torch.device | str | None = None,
    base: str | Path | None = None,
    resume: bool = False,
    best: float = -1.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``model`` and save the best checkpoint (by validation accuracy) to ``out`` with ``card``.

    Args:
        model: from :func:`attnviz.build_model`, with the classifier sized for the data.
        train_set, val_set: items ``(image (3, H, W) in [0, 1], label, ...)``; a ``set_epoch(epoch)`` method,
            when present, is called each epoch (fresh generated scenes).
        config: the settings; ``freeze_backbone`` trains only what :func:`freeze_for_attention` leaves.
        out: the ``.safetensors`` path of the best checkpoint; ``<out>.last.pt`` holds the resume state.
        card: model card fields (arch, attention, classes, mean, std, input_size, data ...); training settings,
            history and metrics are added.
        base: the backbone checkpoint a frozen-backbone run builds on; the saved file is then a delta naming it.
        resume: continue from ``<out>.last.pt`` when it exists.
        best: validation accuracy a checkpoint must beat to be saved (e.g. that of the weights ``model`` starts
            from, so a continued run never replaces a better file).
        device: ``None`` (this rank's GPU when there is one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
            see :func:`resolve_device`. Under torchrun the process group is started here (backend from the
            device, :func:`backend_for`) and destroyed on return, unless the caller had started one.

    Returns:
        the final card (also written beside ``out`` as JSON).

    Raises:
        ValueError: a device this process cannot train on (see :func:`resolve_device`).
    """
    rank, local_rank, local_world, world = torchrun_env()
    device = resolve_device(device, local_rank, torch.cuda.device_count(), local_world)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the process group: NCCL binds this rank to its GPU
    started = world > 1 and not dist.is_initialized()
    if started:
        dist.init_process_group(backend_for(device))
    try:
        if world > 1:
            rank = dist.get_rank()
        return _fit(model, train_set, val_set, config, out, card, device, base, resume, best, log, rank, world)
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()  # a group this call started ends with it, also on an error


def _fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    out: str | Path,
    card: dict[str, Any],
    device: torch.device,
    base: str | Path | None,
    resume: bool,
    best: float,
    log: Callable[[str], None],
    rank: int,
    world: int,
) -> dict[str, Any]:
    torch.manual_seed(config.seed + rank)
    out = Path(out)
    last = out.with_name(out.name + ".last.pt")
    model.to(device, memory_format=torch.channels_last)  # faster convolutions on CPU (oneDNN) and tensor cores
    trainable = freeze_for_attention(model) if config.freeze_backbone else [n for n, _ in model.named_parameters()]
    keep = set(trainable)
    params = [p for n, p in model.named_parameters() if n in keep]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    train_sampler = DistributedSampler(train_set, shuffle=True, seed=config.seed) if world > 1 else None
    val_sampler = DistributedSampler(val_set, shuffle=False) if world > 1 else None
    pin = device.type == "cuda"
    train_loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=train_sampler is None,
        sampler=train_sampler,
        num_workers=config.num_workers,
        pin_memory=pin,
        drop_last=len(train_set) >= config.batch_size * world,
        persistent_workers=False,
    )
    val_loader = DataLoader(
        val_set, batch_size=config.batch_size, sampler=val_sampler, num_workers=config.num_workers, pin_memory=pin
    )
    steps_per_epoch = max(1, len(train_loader))
    total, warmup = config.epochs * steps_per_epoch, int(config.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr_factor(step, total, warmup))
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if pin else None)
    mean = torch.tensor(card["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(card["std"], device=device).view(1, 3, 1, 1)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    start, history, saved = 0, [], False
    if resume and last.is_file():
        state = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best, history = int(state["epoch"]), float(state["best"]), list(state["history"])
        if rank == 0:
            log(f"resumed from {last.name} at epoch {start} (best val acc {best:.3f})")

    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        net.train()
        running = torch.zeros(2, device=device, dtype=torch.float64)  # (loss sum, samples): no sync per step
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", rank == 0)
        for batch in train_loader:
            x = batch[0].to(device, non_blocking=True)
            if config.randconv > 0:
                x = random_convolution(x, config.randconv)
            x = x.contiguous(memory_format=torch.channels_last)
            y = batch[1].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = net(_normalize(x, mean, std))
                loss = loss_fn(logits, y)
                if config.distill > 0:
                    target = batch[2].to(device, non_blocking=True)  # (B, K) soft target
                    loss = (1 - config.distill) * loss + config.distill * soft_cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running[0] += loss.detach() * y.numel()
            running[1] += y.numel()
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        if world > 1:
            dist.all_reduce(running)
        val_acc = evaluate_accuracy(model, val_loader, card["mean"], card["std"], device)
        row = {
            "epoch": epoch + 1,
            "train_loss": round(float(running[0] / running[1].clamp(min=1)), 4),
            "val_acc": round(val_acc, 4),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        history.append(row)
        improved = val_acc > best
        best = max(best, val_acc)
        if rank == 0:
            log(
                f"epoch {row['epoch']}/{config.epochs}: loss {row['train_loss']:.3f}, val acc {val_acc:.3f}"
                f"{' (best, saved)' if improved else ''}, {row['seconds']:.0f} s"
            )
            if improved:
                _save(model, out, card, config, history, base, device)
                saved = True
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch + 1,
                "best": best,
                "history": history,
            }
            torch.save(state, last.with_suffix(".tmp"))
            last.with_suffix(".tmp").replace(last)
    if rank == 0 and (saved or resume) and out.is_file():  # a run that never beat ``best`` leaves the file as it was
        _finish_card(out, card, config, history, base, device)
    if world > 1:
        dist.barrier()
    return card


def _card(card: dict, config: TrainConfig, history: list, base: str | Path | None, device: torch.device) -> dict:
    card = dict(card)
    card["training"] = {
        **asdict(config),
        "device": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        ),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "torch": torch.__version__,
        "history": history,
    }
    card["val_acc"] = max((h["val_acc"] for h in history), default=None)
    if base is not None:
        from ..sources.weights import load_checkpoint_file

        card["base"] = {"file": Path(base).name, "sha256": tensors_sha256(load_checkpoint_file(base))}
    return card


def _save(model: nn.Module, out: Path, card: dict, config: TrainConfig, history: list, base, device) -> None:
    sd = model.state_dict()
    if config.freeze_backbone and base is not None:
        sd = {k: sd[k] for k in delta_keys(model)}
    save_checkpoint(out, sd, _card(card, config, history, base, device), half=config.half_checkpoint)


def _finish_card(out: Path, card: dict, config: TrainConfig, history: list, base, device) -> None:
    """Rewrite the best checkpoint's card with the whole history (the tensors are those of the best epoch)."""

    sd, _ = read_checkpoint(out)
    full = _card(card, config, history, base, device)
    card.clear()
    card.update(full)
    save_checkpoint(out, sd, full)
