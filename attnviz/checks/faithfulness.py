"""Faithfulness of a saliency map, the math without a model: the perturbed inputs of deletion/insertion curves
(Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018) and of ROAD
(Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022), and their areas.

* Order: the map is upsampled bilinearly to the image and its pixels ranked highest first (ties by position).
* Deletion: after step k of S, the first round(k/S * H*W) pixels of the order are replaced by a baseline (here the
  dataset mean: zero in the normalised input); a faithful map makes the class probability fall fast (low AUC).
* Insertion: from a blurred copy of the image, the same pixels are revealed; a faithful map makes it rise fast
  (high AUC). RISE blurs for insertion; the blur keeps the start image natural, where a grey start would be
  out of distribution.
* AUC: trapezoid rule over the fraction of pixels changed (0..1).
* ROAD: the pixels removed (most relevant first, MoRF, or least relevant first, LeRF) are filled by the
  noisy-linear imputation, so the removal's shape leaks no class information: each removed pixel equals the
  weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal, as the paper's code), a sparse symmetric linear
  system in the removed pixels (a graph Laplacian restricted to them) solved here by a sparse direct factorisation
  (scipy's SuperLU, one per removed set, shared by the colour channels, as the paper's code solves it) or, without
  scipy, by conjugate gradients in torch, then Gaussian noise (std 0.01 in input units) is added to the imputed
  pixels only. MoRF: lower mean probability over the fractions = more faithful; LeRF:
  higher.

Inputs are torch tensors (B, C, H, W) in the model's normalised space; maps are (h, w) arrays at any resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ROAD_FRACTIONS",
    "ROAD_NOISE",
    "SOLVERS",
    "STEPS",
    "Curves",
    "auc",
    "centre_prior",
    "curve_inputs",
    "deletion_inputs",
    "gaussian_blur",
    "insertion_inputs",
    "pixel_order",
    "random_map",
    "road_impute",
    "road_inputs",
    "road_solver",
    "step_counts",
    "step_masks",
    "upsample",
]

STEPS = 24  #: deletion/insertion steps (25 points, fractions 0, 1/24, ..., 1)
ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)  #: shares of pixels ROAD removes
ROAD_NOISE = 0.01  #: the noise's standard deviation on imputed pixels (the paper's NoisyLinearImputer default)
SOLVERS = ("auto", "direct", "cg")  #: ROAD's solvers: direct (scipy), cg (torch), auto (direct when scipy imports)
BLUR_SIGMA = 5.0  #: insertion's start image: Gaussian blur of this sigma in pixels (RISE: kernel 11, sigma 5)

# the 8 neighbours and their weights in ROAD's noisy-linear imputation: (dy, dx, weight)
_NEIGHBOURS = [(dy, dx, 1 / 6 if dy == 0 or dx == 0 else 1 / 12) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


@dataclass
class Curves:
    """One map's four curves and their summaries.

    Attributes:
        deletion, insertion: the target's probability at fractions 0, 1/S, ..., 1 (S + 1 values).
        road_morf, road_lerf: the probability at each of ``fractions`` removed (most / least relevant first).
        fractions: ROAD's fractions.
    """

    deletion: list[float]
    insertion: list[float]
    road_morf: list[float]
    road_lerf: list[float]
    fractions: list[float] = field(default_factory=lambda: list(ROAD_FRACTIONS))

    def json(self) -> dict[str, Any]:
        """``{"deletion": AUC, "insertion": AUC, "road_morf": mean, "road_lerf": mean, "curves": {...}}``."""
        return {
            "deletion": auc(self.deletion),
            "insertion": auc(self.insertion),
            "road_morf": float(np.mean(self.road_morf)),
            "road_lerf": float(np.mean(self.road_lerf)),
            "curves": {
                "deletion": list(self.deletion),
                "insertion": list(self.insertion),
                "road_morf": list(self.road_morf),
                "road_lerf": list(self.road_lerf),
            },
        }


def auc(y: Sequence[float], x: Sequence[float] | None = None) -> float:
    """Area under ``y`` by the trapezoid rule over ``x`` (default: evenly spaced fractions 0..1)."""
    yy = np.asarray(y, dtype=np.float64)
    if yy.size < 2:
        raise ValueError(f"a curve needs at least 2 points, got {yy.size}")
    xx = np.linspace(0.0, 1.0, yy.size) if x is None else np.asarray(x, dtype=np.float64)
    if xx.shape != yy.shape:
        raise ValueError(f"x and y differ in length: {xx.size} and {yy.size}")
    return float(((yy[1:] + yy[:-1]) * np.diff(xx)).sum() / 2)


def upsample(m: np.ndarray | Tensor, shape: tuple[int, int]) -> Tensor:
    """``m`` (h, w) resized bilinearly (half-pixel centres) to ``shape`` (H, W), float32."""
    t = torch.as_tensor(np.asarray(m, dtype=np.float32) if not isinstance(m, Tensor) else m, dtype=torch.float32)
    if tuple(t.shape) == tuple(shape):
        return t.clone()
    return F.interpolate(t[None, None], size=tuple(shape), mode="bilinear", align_corners=False)[0, 0]


def pixel_order(m: np.ndarray | Tensor, shape: tuple[int, int]) -> Tensor:
    """(H*W,) flat pixel indices of the image, the map's highest first (map upsampled to ``shape``; ties: the
    lower index first)."""
    v = upsample(m, shape).reshape(-1)
    return torch.sort(-v, stable=True).indices


def step_counts(n: int, steps: int) -> list[int]:
    """Pixels changed after each of ``steps`` steps: round(k / steps * n) for k = 0..steps."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return [round(k * n / steps) for k in range(steps + 1)]


def step_masks(order: Tensor, shape: tuple[int, int], counts: Sequence[int]) -> Tensor:
    """(K, H, W) bool: in row k, the first ``counts[k]`` pixels of ``order``."""
    n = shape[0] * shape[1]
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    c = torch.as_tensor(list(counts), dtype=torch.long)
    return (rank[None, :] < c[:, None]).reshape(len(c), *shape)


def gaussian_blur(x: Tensor, sigma: float = BLUR_SIGMA) -> Tensor:
    """``x`` (B, C, H, W) blurred by a separable Gaussian (radius 3 sigma, reflected edges)."""
    if sigma <= 0:
        return x.clone()
    r = max(1, math.ceil(3 * sigma))
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)  # reflection needs the pad below the side
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def deletion_inputs(x: Tensor, masks: Tensor, baseline: Tensor) -> Tensor:
    """(K, C, H, W): ``x`` (1, C, H, W) with the pixels of each mask (K, H, W) taken from ``baseline`` (1, C, H, W)
    or (C,) / scalar."""
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    if base.dim() == 1:
        base = base.view(1, -1, 1, 1)
    return torch.where(masks[:, None].to(x.device), base.expand_as(x), x)


def insertion_inputs(x: Tensor, masks: Tensor, start: Tensor) -> Tensor:
    """(K, C, H, W): ``start`` (1, C, H, W) with the pixels of each mask (K, H, W) revealed from ``x``."""
    return torch.where(masks[:, None].to(x.device), x, start)


def _neighbour_sum(v: Tensor, weights: bool = True) -> Tensor:
    """Sum over each pixel's in-image neighbours of w * v (``weights=False``: of the weights alone), (N, 1, H, W).
    Eight shifted slices of the zero-padded input (out-of-image neighbours count nothing): a one-channel 3x3
    convolution is far slower on CPU."""
    src = v if weights else torch.ones_like(v)
    h, w = v.shape[-2:]
    pad = F.pad(src, (1, 1, 1, 1))
    out = torch.zeros_like(v)
    for dy, dx, wt in _NEIGHBOURS:
        out += wt * pad[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    return out


def _cg(v: Tensor, r: Tensor, u: Tensor, tol: float, max_iter: int) -> Tensor:
    """Conjugate gradients for ROAD's system on the removed pixels ``r`` (N, 1, H, W; 1 = removed) of ``v``, from
    ``u``: d_i u_i - sum_{j removed} w_ij u_j = sum_{j kept} w_ij v_j. Every removed pixel must reach a kept one."""
    keep = 1 - r
    d = _neighbour_sum(v, weights=False)  # (N, 1, H, W) the weight of each pixel's in-image neighbours

    def apply(z: Tensor) -> Tensor:  # A z on the removed pixels
        return (d * z - _neighbour_sum(z * r)) * r

    rhs = _neighbour_sum(v * keep) * r
    u = u * r
    res = rhs - apply(u)
    p = res.clone()
    rs = (res * res).sum((1, 2, 3))
    limit = (tol**2) * (rhs * rhs).sum((1, 2, 3))
    tiny = torch.finfo(v.dtype).tiny
    for _ in range(max_iter):
        active = rs > limit  # (N,) systems not yet converged; the others stay as they are
        if not bool(active.any()):
            break
        ap = apply(p)
        pap = (p * ap).sum((1, 2, 3))
        alpha = torch.where(active & (pap > tiny), rs / pap.clamp(min=tiny), 0.0).view(-1, 1, 1, 1)
        u = u + alpha * p
        res = res - alpha * ap
        rs_new = (res * res).sum((1, 2, 3))
        beta = torch.where(active, rs_new / rs.clamp(min=tiny), 0.0).view(-1, 1, 1, 1)
        p = res + beta * p
        rs = torch.where(active, rs_new, rs)
    return u


def _solve(v: Tensor, r: Tensor, tol: float, max_iter: int, coarsest: int = 8) -> Tensor:
    """The imputed values on the removed pixels (zero elsewhere), coarse to fine (cascadic multigrid): the problem
    at half resolution (a coarse pixel is kept when any of its 2x2 pixels is, with their mean) gives the start of
    the conjugate gradients at this one, so the smooth part of the solution needs few steps at full resolution."""
    keep = 1 - r
    h, w = v.shape[-2:]
    if min(h, w) >= 2 * coarsest:
        kc = F.avg_pool2d(keep, 2, ceil_mode=True)
        vc = F.avg_pool2d(v * keep, 2, ceil_mode=True) / kc.clamp(min=1e-12)
        rc = (kc == 0).to(v.dtype)
        uc = vc * (1 - rc) + _solve(vc * (1 - rc), rc, tol, max_iter, coarsest)
        u = F.interpolate(uc, size=(h, w), mode="bilinear", align_corners=False)
    else:
        n = keep.sum((2, 3), keepdim=True)
        u = ((v * keep).sum((2, 3), keepdim=True) / n.clamp(min=1)).expand_as(v)
    return _cg(v, r, u, tol, max_iter)


def road_solver(solver: str = "auto") -> str:
    """The solver ``solver`` stands for: ``"direct"`` (a sparse factorisation, needs scipy) or ``"cg"`` (conjugate
    gradients in torch); ``"auto"`` is direct when scipy imports, else cg."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown ROAD solver {solver!r}; one of {', '.join(SOLVERS)}")
    if solver == "cg":
        return "cg"
    try:
        import scipy.sparse.linalg  # noqa: F401
    except ImportError:
        if solver == "direct":
            raise ImportError("the direct ROAD solver needs scipy (pip install scipy), or use solver='cg'") from None
        return "cg"
    return "direct"


def _direct(v: np.ndarray, rem: np.ndarray) -> np.ndarray:
    """ROAD's system for one removed set ``rem`` (H, W) bool, factorised once and solved for every image of ``v``
    (K, H, W) float64 (the colour channels, and images sharing the set): (K, H, W) with the removed pixels imputed.

    The matrix A = D - W_rr on the removed pixels (D: each pixel's in-image neighbour weight, W_rr: the weights
    between removed pixels) is the grid's weighted Laplacian restricted to them, symmetric positive definite when a
    kept pixel exists; SuperLU with a symmetric minimum-degree ordering factorises it (a 224 x 224 image with 90 %
    removed: about 0.1-0.4 s on one CPU core). Against the conjugate gradients it is exact rather than within a
    tolerance, a little faster on an idle CPU (a curve set's ten systems 0.8 s against 0.9 s), and far less
    sensitive to contention: on a loaded 2-core machine 1 s against 26-29 s (bench/faithfulness.py)."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl

    h, w = rem.shape
    flat = rem.reshape(-1)
    out = v.copy()
    ri = np.flatnonzero(flat)  # (n,) the removed pixels, flat
    if ri.size == 0:
        return out
    if ri.size == flat.size:  # nothing kept to take the mean of: the dataset mean (0)
        out[:] = 0.0
        return out
    col = np.full(flat.size, -1, dtype=np.int64)
    col[ri] = np.arange(ri.size)
    yy, xx = np.divmod(ri, w)
    diag = np.zeros(ri.size)
    rows, cols, vals = [np.arange(ri.size)], [np.arange(ri.size)], []
    vk = v.reshape(v.shape[0], -1)  # (K, H*W)
    rhs = np.zeros((ri.size, v.shape[0]))  # (n, K) sum over kept neighbours of w_ij v_j
    for dy, dx, wt in _NEIGHBOURS:
        y, x = yy + dy, xx + dx
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        diag[inside] += wt
        k = np.flatnonzero(inside)
        j = y[inside] * w + x[inside]
        gone = flat[j]
        rows.append(k[gone])
        cols.append(col[j[gone]])
        vals.append(np.full(int(gone.sum()), -wt))
        rhs[k[~gone]] += wt * vk[:, j[~gone]].T
    a = sp.csc_matrix(
        (np.concatenate([diag, *vals]), (np.concatenate(rows), np.concatenate(cols))), shape=(ri.size, ri.size)
    )
    lu = spl.splu(a, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    vk = out.reshape(v.shape[0], -1)
    vk[:, ri] = lu.solve(rhs).T
    return out


def road_impute(
    x: Tensor,
    removed: Tensor,
    *,
    noise: float = ROAD_NOISE,
    generator: torch.Generator | None = None,
    solver: str = "auto",
    tol: float = 1e-4,
    max_iter: int = 300,
) -> Tensor:
    """ROAD's noisy-linear imputation (Rong et al., ICML 2022): every removed pixel becomes the weighted mean of its
    in-image neighbours (removed or not), the one solution of the sparse symmetric system

        d_i u_i - sum_{j removed} w_ij u_j = sum_{j kept} w_ij x_j   for each removed pixel i   (d_i = sum_j w_ij),

    per image and channel, plus Gaussian noise of std ``noise`` on the imputed pixels; kept pixels are returned
    unchanged. With everything removed there is no kept pixel to be the mean of: the image becomes 0 (the dataset
    mean in normalised input) plus noise.

    Solvers: ``"direct"`` factorises the system once per distinct removed set (scipy's SuperLU, in float64) and
    solves it for every channel and image sharing the set: exact up to rounding, as the paper's code (its
    ``spsolve``). ``"cg"``: conjugate gradients (matrix-free: shifted slices per step) started from the same
    problem solved at half resolution (recursively), within ``tol`` of the exact solution; the defaults keep the
    imputed values within a few 1e-3 of it on a 224 x 224 image (a third of the noise or less). ``"auto"``: direct
    when scipy imports, else cg. The noise is drawn the same way for both.

    Args:
        x: (B, C, H, W) images.
        removed: (B, H, W) or (H, W) bool, the pixels to impute.
        noise: the noise's standard deviation (0: none).
        generator: the noise's generator (seeded by the caller for reproducible curves).
        solver: ``"auto"``, ``"direct"`` or ``"cg"`` (:func:`road_solver`).
        tol: cg only: stop when the residual's norm is below ``tol`` times the right-hand side's (per image and
            channel).
        max_iter: cg only: most conjugate-gradient steps per resolution.
    """
    b, c, h, w = x.shape
    rem = removed.to(x.device).bool()
    rem = rem.expand(b, h, w) if rem.dim() == 2 else rem
    r = rem[:, None].expand(b, c, h, w).reshape(b * c, 1, h, w).to(x.dtype)  # (N, 1, H, W) 1 on removed pixels
    v = x.reshape(b * c, 1, h, w) * (1 - r)
    if road_solver(solver) == "direct":
        masks = rem.cpu().numpy()  # (B, H, W)
        vals = v.detach().reshape(b, c, h, w).cpu().numpy().astype(np.float64)
        done = np.empty_like(vals)
        groups: dict[bytes, list[int]] = {}
        for i in range(b):  # images sharing a removed set share one factorisation
            groups.setdefault(np.packbits(masks[i]).tobytes(), []).append(i)
        for idx in groups.values():
            got = _direct(vals[idx].reshape(len(idx) * c, h, w), masks[idx[0]])  # (len(idx) * C, H, W)
            done[idx] = got.reshape(len(idx), c, h, w)
        out = torch.from_numpy(done).to(dtype=x.dtype, device=x.device).reshape(b * c, 1, h, w)
    else:
        none_kept = (r.sum((2, 3), keepdim=True) == h * w).to(x.dtype)  # singular: nothing to take the mean of
        u = _solve(v, r * (1 - none_kept), tol, max_iter)
        out = v + u * r
    if noise > 0:
        z = torch.randn(out.shape, generator=generator, dtype=out.dtype).to(out.device)
        out = out + noise * z * r
    return out.reshape(b, c, h, w)


def road_inputs(
    x: Tensor,
    order: Tensor,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    *,
    most_first: bool = True,
    noise: float = ROAD_NOISE,
    generator: torch.Generator | None = None,
    solver: str = "auto",
) -> Tensor:
    """(len(fractions), C, H, W): ``x`` (1, C, H, W) with each fraction of its pixels removed in ``order``
    (``most_first``: MoRF, else LeRF: the order reversed) and imputed by :func:`road_impute`."""
    h, w = x.shape[-2:]
    n = h * w
    o = order if most_first else order.flip(0)
    masks = step_masks(o, (h, w), [round(f * n) for f in fractions])
    return road_impute(x.expand(len(fractions), -1, -1, -1), masks, noise=noise, generator=generator, solver=solver)


def curve_inputs(
    x: Tensor,
    m: np.ndarray | Tensor,
    *,
    steps: int = STEPS,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    baseline: Tensor | float = 0.0,
    start: Tensor | None = None,
    noise: float = ROAD_NOISE,
    seed: int = 0,
    solver: str = "auto",
) -> tuple[Tensor, list[int]]:
    """Every input of one map's four curves in one batch: (deletion S+1, insertion S+1, MoRF F, LeRF F) images,
    and the four lengths.

    Args:
        x: (1, C, H, W) the normalised image.
        m: the map (h, w), any resolution.
        baseline: deletion's replacement, (1, C, H, W), (C,) or a scalar (0: the dataset mean in normalised input).
        start: insertion's start image (default: ``x`` blurred, :func:`gaussian_blur`).
        seed: the ROAD noise's seed (the same for every map: maps differ only in their order).
        solver: ROAD's solver (:func:`road_impute`).
    """
    h, w = x.shape[-2:]
    order = pixel_order(m, (h, w))
    masks = step_masks(order, (h, w), step_counts(h * w, steps))
    base = torch.as_tensor(baseline, dtype=x.dtype) if not isinstance(baseline, Tensor) else baseline
    dele = deletion_inputs(x, masks, base if base.dim() else base.view(1).expand(x.shape[1]))
    ins = insertion_inputs(x, masks, gaussian_blur(x) if start is None else start)
    g = torch.Generator().manual_seed(seed)
    morf = road_inputs(x, order, fractions, most_first=True, noise=noise, generator=g, solver=solver)
    lerf = road_inputs(x, order, fractions, most_first=False, noise=noise, generator=g, solver=solver)
    return torch.cat([dele, ins, morf, lerf]), [len(dele), len(ins), len(morf), len(lerf)]


def centre_prior(shape: tuple[int, int], sigma: float = 0.25) -> np.ndarray:
    """(h, w) a centred Gaussian, standard deviation ``sigma`` times each side (the centre-bias baseline)."""
    h, w = shape
    yy = ((np.arange(h) + 0.5) / h - 0.5) / sigma
    xx = ((np.arange(w) + 0.5) / w - 0.5) / sigma
    return np.exp(-0.5 * (yy[:, None] ** 2 + xx[None, :] ** 2)).astype(np.float32)


def random_map(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(h, w) i.i.d. uniform values from a generator seeded by ``seed`` and the shape (the chance baseline)."""
    rng = np.random.default_rng([seed, shape[0], shape[1]])
    return rng.random(shape, dtype=np.float32)
