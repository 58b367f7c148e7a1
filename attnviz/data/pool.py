"""A fixed pool of training scenes rendered once, with the teacher's outputs cached beside them.

Distillation needs the teacher's answer for every training image. Running the teacher (EfficientNet-Lite0 at
224 px) on fresh scenes each epoch would cost more than training the student on a CPU, so the pool renders
``n`` scenes once at the teacher's resolution, keeps them as uint8 at the student's, stores the teacher's
ImageNet probabilities, and varies the scenes between epochs by a horizontal flip (the teacher's answer does not
change under it). The pool is cached as one ``.pt`` file keyed by the scene recipe, so a second run (the plain
cross-entropy comparison, each attention type) reads it in a second.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .scenes import SceneConfig, SceneDataset

__all__ = ["ScenePool", "build_pool"]


class ScenePool(Dataset):
    """Pooled scenes: items ``(image (3, S, S) float in [0, 1], label, target (K,))``.

    Args:
        images: (N, S, S, 3) uint8.
        labels: (N,) int64.
        targets: (N, K) soft targets (e.g. the teacher's prior-corrected class probabilities); one-hot of the
            labels when ``None``.
        seed: flips are a pure function of ``(seed, epoch, index)``.
    """

    def __init__(self, images: Tensor, labels: Tensor, targets: Tensor | None = None, *, seed: int = 0) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images must be (N, S, S, 3) uint8, got {tuple(images.shape)} {images.dtype}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()
        k = int(self.labels.max()) + 1 if targets is None else targets.shape[1]
        self.targets = F.one_hot(self.labels, k).float() if targets is None else targets.float()
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Flip a different half of the pool in epoch ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        x = self.images[index].permute(2, 0, 1).float().div_(255)  # (3, S, S)
        key = f"{self.seed}/{self.epoch}/{index}".encode()
        if int.from_bytes(hashlib.sha256(key).digest()[:1], "little") & 1:
            x = x.flip(-1)
        return x, int(self.labels[index]), self.targets[index]


def _key(dataset: SceneDataset, student_size: int, teacher: str | None) -> str:
    """The cache key of a pool's recipe; the length is left out (scene ``i`` does not depend on it), so a larger
    pool extends a cached smaller one."""
    scenes = {k: v for k, v in dataset.fingerprint().items() if k != "length"}
    blob = json.dumps({"scenes": scenes, "student": student_size, "teacher": teacher}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cached(cache: Path, split: str, key: str, n: int) -> tuple[int, dict | None]:
    """The largest cached pool of this recipe with at most ``n`` scenes: ``(its size, its tensors)``."""
    best, state = 0, None
    for f in cache.glob(f"pool-{split}-{key}-*.pt"):
        m = int(f.stem.rsplit("-", 1)[1])
        if best < m <= n:
            best, state = m, f
    if state is None:
        return 0, None
    loaded = torch.load(state, map_location="cpu", weights_only=True)
    return best, {k: v[:best] for k, v in loaded.items()}


def build_pool(
    root: str | Path,
    n: int,
    *,
    config: SceneConfig,
    student_size: int,
    seed: int = 0,
    split: str = "train",
    teacher: bool = True,
    cache: str | Path | None = None,
    workers: int = 2,
    device: torch.device | str = "cpu",
    log=print,
) -> tuple[ScenePool, Tensor | None, dict]:
    """Render ``n`` scenes of ``split`` at ``config.size`` (the teacher's resolution), keep them at
    ``student_size``, and run the teacher on them (see :mod:`attnviz.data.teacher`). With ``cache``, the pool is read
    from there, or extended from a smaller cached pool of the same recipe, and written there.

    Returns:
        ``(pool, p1000, fingerprint)``: the pool with one-hot targets (the caller turns ``p1000`` (N, 1000), the
        teacher's ImageNet probabilities or ``None``, into soft targets) and the scene recipe for model cards.
    """
    from .teacher import TEACHER_SHA256

    scenes = SceneDataset(root, split, n, seed=seed, config=config)
    key = _key(scenes, student_size, TEACHER_SHA256[:8] if teacher else None)
    have, state = (0, None) if cache is None else _cached(Path(cache), split, key, n)
    if have:
        log(f"scene pool: {have} {split} scenes from the cache")
    if have < n:
        state = _render(scenes, range(have, n), state, student_size, teacher, workers, torch.device(device), log)
        if cache is not None:
            path = Path(cache) / f"pool-{split}-{key}-{n}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
    assert state is not None
    return ScenePool(state["images"], state["labels"], seed=seed), state.get("p1000"), scenes.fingerprint()


def _render(
    scenes: SceneDataset,
    indices: range,
    state: dict | None,
    student_size: int,
    teacher: bool,
    workers: int,
    device: torch.device,
    log,
) -> dict:
    """``state`` extended by the scenes at ``indices`` (and the teacher's probabilities for them)."""
    net = None
    if teacher:
        from .teacher import load_teacher, teacher_probs

        net = load_teacher().to(device)
    loader = DataLoader(Subset(scenes, indices), batch_size=64, num_workers=workers)  # drawn in parallel workers
    images, labels, probs = [], [], []
    if state is not None:
        images, labels = [state["images"]], [state["labels"]]
        probs = [state["p1000"]] if "p1000" in state else []
    for i, (x, y, _) in enumerate(loader):  # x: (B, 3, T, T) in [0, 1] at the teacher's size
        x = x.to(device)
        if net is not None:
            probs.append(teacher_probs(net, x).half())  # (B, 1000), on the CPU
        small = F.interpolate(x, size=(student_size, student_size), mode="bilinear", antialias=True)
        images.append((small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())  # (B, S, S, 3)
        labels.append(y)
        if i % 10 == 0:
            log(f"scene pool: {indices.start + min(len(indices), (i + 1) * 64)}/{indices.stop} scenes")
    out = {"images": torch.cat(images), "labels": torch.cat(labels)}
    if probs:
        out["p1000"] = torch.cat(probs)
    return out
