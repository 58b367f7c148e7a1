"""Attention against attribution at the same block: Grad-CAM at the attention module's output, and the agreement
scores used by every check (Spearman's rank correlation, IoU of the top 20 % of cells).

Grad-CAM (Selvaraju et al., ICCV 2017) comes from torchcam (frgfm/torch-cam): its ``GradCAM`` takes several target
layers in one forward and one ``torch.autograd.grad`` call (no ``.grad`` is written into the served model's
parameters), returns each map at its layer's own resolution (the grid of the block's map, nothing resampled), removes
its hooks on exit, and needs nothing the runtime does not already have (torch, numpy, matplotlib, pillow), where
pytorch-grad-cam pulls in OpenCV, scikit-learn, SciPy and ttach and resizes every map to the input with OpenCV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..capture.hooks import model_lock
from .blocks import Block

__all__ = ["agreement", "gradcam", "rank", "resize", "spearman", "top_iou"]


def rank(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the flattened ``a``, ties given their average rank (as ``scipy.stats.rankdata``)."""
    v = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    s = v[order]
    first = np.r_[True, s[1:] != s[:-1]]  # the start of each run of equal values
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], v.size]  # exclusive
    avg = (starts + ends - 1) / 2.0 + 1.0
    out = np.empty(v.size)
    out[order] = avg[group]
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps of the same shape (the Pearson correlation of their ranks, ties
    averaged); NaN when either map is constant (as ``scipy.stats.spearmanr``)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {a.shape} and {b.shape}")
    ra, rb = rank(a), rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def top_iou(a: np.ndarray, b: np.ndarray, share: float = 0.2) -> float:
    """Intersection over union of the top ``share`` of cells of two maps of the same shape: k = max(1,
    round(share * n)) cells each, the largest values (ties broken by position, first first)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {a.shape} and {b.shape}")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    k = max(1, round(share * a.size))
    ta = set(np.argsort(-a.ravel(), kind="mergesort")[:k].tolist())
    tb = set(np.argsort(-b.ravel(), kind="mergesort")[:k].tolist())
    return len(ta & tb) / len(ta | tb)


def resize(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``m`` (h, w) resized bilinearly (half-pixel centres) to ``shape``; itself when it has that shape."""
    if tuple(m.shape) == tuple(shape):
        return np.asarray(m, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()


def agreement(view: np.ndarray, other: np.ndarray, share: float = 0.2) -> dict[str, float]:
    """``{"spearman", "top20_iou"}`` of a block's spatial view and another map (Grad-CAM, the randomised view),
    on the view's grid (``other`` is resized to it). A constant map has no ranking: its Spearman is reported as 1 when
    the two maps are equal, else 0 (scipy: NaN)."""
    other = resize(other, view.shape)
    rho = spearman(view, other)
    if math.isnan(rho):
        rho = 1.0 if np.array_equal(np.asarray(view, dtype=np.float32), other) else 0.0
    return {"spearman": rho, "top20_iou": top_iou(view, other, share)}


def gradcam(
    model: nn.Module, x: Tensor, blocks: Sequence[Block], class_idx: int | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """Grad-CAM at the output of each block's attention module, for one image, in one forward and one backward.

    Args:
        model: the network (run as it is; its parameters get no ``.grad``).
        x: (1, 3, H, W) the preprocessed image.
        blocks: from :func:`~attnviz.checks.find_blocks`; blocks without a registered module, or whose output is
            not a (B, C, h, w) feature map, are left out.
        class_idx: the class explained (default: the predicted one).

    Returns:
        (block path -> ReLU(sum_k w_k A_k) at the module's resolution (h, w), float32, unnormalised; the class).
    """
    from torchcam.methods import GradCAM

    named = dict(model.named_modules())
    targets = [b.path for b in blocks if b.feature and b.module is not None and named.get(b.path) is b.module]
    with model_lock(model), torch.inference_mode(False), torch.enable_grad():
        xx = x[:1].detach().clone().requires_grad_(True)
        if not targets:
            return {}, _predicted(model(xx), class_idx)
        handles = []
        grads = [(p, p.grad) for p in model.parameters()]  # torchcam < 0.5 calls backward(): .grad is put back
        try:
            with GradCAM(model, target_layer=targets) as cam:
                # after torchcam's hooks: later in-place ops (out += identity) act on a copy, not on what it keeps
                handles = [named[p].register_forward_hook(_copy_output) for p in targets]
                scores = model(xx)
                cls = _predicted(scores, class_idx)
                cams = cam(class_idx=cls, scores=scores, normalized=False)
        finally:
            for h in handles:
                h.remove()
            for p, g in grads:
                p.grad = g
    return {p: c[0].detach().float().cpu().numpy() for p, c in zip(targets, cams, strict=True)}, cls


def _predicted(scores: object, class_idx: int | None) -> int:
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError("Grad-CAM needs a classifier: the model's output is not class logits (B, classes)")
    return int(scores[0].argmax()) if class_idx is None else int(class_idx)


def _copy_output(module: nn.Module, args: tuple, output: object) -> object:
    return output.clone() if isinstance(output, Tensor) else None
