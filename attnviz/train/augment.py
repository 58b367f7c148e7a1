"""Batch augmentations applied inside the training loop (after the data loader, before normalisation).

Random convolutions (Xu et al., "Robust and Generalizable Visual Representation Learning via Random
Convolutions", ICLR 2021): each image goes through a convolution with freshly drawn Gaussian weights,
``w ~ N(0, 1 / (C_in k^2))`` with ``k`` drawn from a few kernel sizes, and the result is mixed with the image,
``x' = a x + (1 - a) RC(x)``, ``a ~ U(0, 1)`` (the paper's RC_mix). A 1x1 kernel remaps colours; larger kernels
also scramble local texture while keeping shapes, so the network cannot lean on the flat colours and clean edges
of drawings, which real photos lack. Unlike the paper we rescale ``RC(x)`` to the image's own per-channel mean and
standard deviation before mixing, so the mixed image stays in the ``[0, 1]`` range the loop normalises from
(the paper's images are standardised first; ours are not), and clamp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["KERNEL_SIZES", "random_convolution"]

KERNEL_SIZES = (1, 3, 5, 7)  # the paper's range for 224 px images is 1..7


def random_convolution(
    x: Tensor,
    p: float,
    *,
    kernel_sizes: tuple[int, ...] = KERNEL_SIZES,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random-convolution augmentation of a batch (RC_mix, Xu et al. 2021).

    Args:
        x: (B, C, H, W) images in [0, 1].
        p: the probability that an image is augmented (each image decides on its own).
        kernel_sizes: odd sizes; each augmented image draws one.
        generator: for reproducible draws (on ``x``'s device).

    Returns:
        (B, C, H, W) in [0, 1]; the images that were not drawn are returned unchanged.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got {tuple(x.shape)}")
    if any(k < 1 or k % 2 == 0 for k in kernel_sizes):
        raise ValueError(f"kernel sizes must be odd and positive, got {kernel_sizes}")
    if p == 0.0:
        return x
    b, c, h, w = x.shape
    dev = x.device
    chosen = torch.rand(b, generator=generator, device=dev) < p  # (B,)
    if not bool(chosen.any()):
        return x
    idx = chosen.nonzero().flatten()  # (N,)
    xs = x[idx].float()  # (N, C, H, W)
    n = len(idx)
    sizes = torch.tensor(kernel_sizes, device=dev)[
        torch.randint(len(kernel_sizes), (n,), generator=generator, device=dev)
    ]  # (N,)
    out = torch.empty_like(xs)
    for k in sizes.unique().tolist():  # one grouped convolution per kernel size: each image its own weights
        sel = (sizes == k).nonzero().flatten()
        m = len(sel)
        weight = torch.randn(m * c, c, k, k, generator=generator, device=dev) / (c * k * k) ** 0.5
        y = F.conv2d(xs[sel].reshape(1, m * c, h, w), weight, padding=k // 2, groups=m)  # (1, m*C, H, W)
        out[sel] = y.reshape(m, c, h, w)
    # per image and channel, back to the input's mean and spread: (N, C, 1, 1)
    mu_x, sd_x = xs.mean((2, 3), keepdim=True), xs.std((2, 3), keepdim=True)
    mu_y, sd_y = out.mean((2, 3), keepdim=True), out.std((2, 3), keepdim=True)
    out = (out - mu_y) / sd_y.clamp(min=1e-6) * sd_x.clamp(min=0.05) + mu_x
    a = torch.rand(n, 1, 1, 1, generator=generator, device=dev)  # (N, 1, 1, 1) mixing weight
    mixed = (a * xs + (1 - a) * out).clamp_(0, 1).to(x.dtype)
    result = x.clone()
    result[idx] = mixed
    return result
