"""Pointing game and energy in mask: the one implementation ``attnviz eval`` and ``attnviz stats`` share.

For every map that yields a spatial view (the view the app overlays, :func:`attnviz.capture.views.spatial_view`; for
pairwise attention the attention each position *receives*, averaged over queries and heads, since no single
query is privileged; for token attention the kind's default view, the class token's attention over the patch
grid, head mean, as in the app and the checks), each map is upsampled bilinearly to the image and min-max
normalised, then scored:

* pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016): the map's
  maximum lies inside the object mask dilated by ``tolerance`` pixels. A flat map points nowhere (a miss).
* energy in mask: the share of the map's mass inside the mask, next to the mask's share of the image (what a
  uniform map scores).

Scores are kept as sums and counts (:class:`LocalisationScores`), so partial scores of dataset shards merge
exactly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..capture.recorder import AttentionRecorder
from ..capture.views import spatial_view, view_activations

__all__ = [
    "LocalisationScores",
    "aggregate",
    "block_maps",
    "border_peaks",
    "centre_prior",
    "localise",
    "ring_share",
    "score_maps",
    "to_image",
    "wilson",
]


@dataclass
class LocalisationScores:
    """Running sums of pointing-game hits and mask energy for named maps."""

    hits: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    energy: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, name: str, hit: Tensor, energy: Tensor) -> None:
        self.hits[name] += float(hit.sum())
        self.energy[name] += float(energy.sum())
        self.count[name] += int(hit.numel())

    def merge(self, other: LocalisationScores) -> None:
        """Add ``other``'s sums and counts (a shard's scores): exact, never an average of averages."""
        for name, c in other.count.items():
            self.hits[name] += other.hits[name]
            self.energy[name] += other.energy[name]
            self.count[name] += c

    def to_dict(self) -> dict[str, dict[str, float]]:
        """Plain dicts (for files and ``torch.distributed`` objects)."""
        return {"hits": dict(self.hits), "energy": dict(self.energy), "count": dict(self.count)}

    @classmethod
    def from_dict(cls, d: dict[str, dict]) -> LocalisationScores:
        s = cls()
        s.hits.update(d.get("hits", {}))
        s.energy.update(d.get("energy", {}))
        s.count.update(d.get("count", {}))
        return s

    def table(self) -> dict[str, dict[str, float]]:
        """``{name: {"pointing": rate, "energy": mean share}}``, in insertion order."""
        return {
            n: {"pointing": round(self.hits[n] / c, 4), "energy": round(self.energy[n] / c, 4)}
            for n, c in self.count.items()
        }


def _dilate(mask: Tensor, pixels: int) -> Tensor:
    if pixels <= 0:
        return mask
    k = 2 * pixels + 1  # a square window is a row window then a column window: the same result, k + k not k * k
    rows = F.max_pool2d(mask[:, None].float(), (1, k), stride=1, padding=(0, pixels))
    return F.max_pool2d(rows, (k, 1), stride=1, padding=(pixels, 0))[:, 0] > 0


#: positions within this share of a map's range below its maximum tie with it (float32 noise is about 1e-7)
TIE = 1e-5


def score_maps(maps: Tensor, masks: Tensor, tolerance: int = 0) -> tuple[Tensor, Tensor]:
    """Pointing-game hits and energy in mask for a batch.

    Args:
        maps: (B, H, W) non-negative maps at the image's resolution (e.g. min-max normalised).
        masks: (B, H, W) bool object masks.
        tolerance: the pointing game accepts a maximum within this many pixels of the mask.

    Returns:
        hits (B,) in [0, 1] and energy (B,) share of each map's mass inside its mask.

    Ties are scored explicitly: every position within ``TIE * spread`` of the maximum is a peak, and the hit is the
    share of peaks inside the (dilated) mask, the expected hit of a random choice among them. An ``argmax`` would
    pick the first of tied positions, and which one comes first depends on float reduction order (thread count,
    batching); a single clear peak scores 0 or 1 as usual. A flat map scores 0.
    """
    b = maps.shape[0]
    flat = maps.reshape(b, -1)
    top = flat.amax(1, keepdim=True)  # (B, 1)
    spread = top[:, 0] - flat.amin(1)
    peaks = flat >= top - TIE * spread[:, None]  # (B, HW) the maximum and its ties
    inside = _dilate(masks, tolerance).reshape(b, -1)
    share = (peaks & inside).sum(1).float() / peaks.sum(1).float()
    hits = share * (spread > 1e-6).float()
    m = masks.reshape(b, -1).float()
    energy = (flat * m).sum(1) / flat.sum(1).clamp(min=1e-12)
    return hits, energy


def wilson(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval (Wilson 1927) of a hit rate over ``n`` scenes. Hits scored as a share of tied
    peaks (:func:`score_maps`) are fractional; the interval then treats ``rate * n`` as the count of successes,
    which a map without ties meets exactly. ``n = 0``: (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(float(rate), 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def ring_share(size: tuple[int, int], ring: int = 1) -> float:
    """The share of an (h, w) feature map's positions in its outer ring ``ring`` cells wide: where the peak of a
    map without any position preference (a spatially shuffled one) lies this often."""
    h, w = size
    inner = max(h - 2 * ring, 0) * max(w - 2 * ring, 0)
    return 1.0 - inner / (h * w)


def border_peaks(maps: Tensor, ring: int = 1) -> Tensor:
    """(B,) the share of each (h, w) map's peak on the feature map's outer ring ``ring`` cells wide: 1 where the
    maximum lies there, 0 inside; tied maxima (within :data:`TIE` of the map's spread, as :func:`score_maps`) count
    by their share on the ring, and a flat map counts the ring's share (:func:`ring_share`), as a random pick would.
    Compare with :func:`ring_share`: zero padding makes convolutions see the border differently, and a view that
    peaks there far more often shows the padding, not the object."""
    b, h, w = maps.shape
    flat = maps.reshape(b, -1).float()
    top = flat.amax(1, keepdim=True)  # (B, 1)
    spread = top[:, 0] - flat.amin(1)
    peaks = flat >= top - TIE * spread[:, None]  # (B, HW) the maximum and its ties (every position when flat)
    edge = torch.ones(h, w, dtype=torch.bool, device=maps.device)
    edge[ring : h - ring, ring : w - ring] = False
    return (peaks & edge.reshape(1, -1)).sum(1).float() / peaks.sum(1).float()


def centre_prior(size: tuple[int, int], sigma: float = 0.25) -> Tensor:
    """(H, W) Gaussian centred on the image, ``sigma`` as a fraction of each side: the centre-bias baseline."""
    h, w = size
    y = (torch.arange(h, dtype=torch.float32) + 0.5) / h - 0.5
    x = (torch.arange(w, dtype=torch.float32) + 0.5) / w - 0.5
    return torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))


def to_image(m: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) -> (B, H, W) bilinear, min-max normalised per image to [0, 1]."""
    up = F.interpolate(m[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).amin(1)[:, None, None]
    hi = up.flatten(1).amax(1)[:, None, None]
    return (up - lo) / (hi - lo).clamp(min=1e-12)


def block_maps(rec: AttentionRecorder) -> dict[str, tuple[int | None, Tensor]]:
    """block path -> (stage, (B, h, w) map) from a recorder's maps, one per block (its spatial view); the
    recorder must have kept activations (channel-only blocks are viewed as their gate-weighted activation)."""
    return views_of(rec.maps, rec.activations)


def views_of(maps: list, acts: dict[str, Tensor], view: str | None = None) -> dict[str, tuple[int | None, Tensor]]:
    """:func:`block_maps` from maps (batch B) and activations (block path -> (B, h, w)); ``view``: a named spatial
    view (:data:`~attnviz.capture.kinds.VIEW_NAMES`), ``None``: each kind's default."""
    out: dict[str, tuple[int | None, Tensor]] = {}
    for m, act in zip(maps, view_activations(maps, acts), strict=True):
        if m.block in out and m.kind != "spatial":
            continue  # one view per block; a spatial gate (CBAM) wins over the channel view
        if m.kind == "pairwise" and m.size is not None:
            b = m.data.shape[0]  # data (B, heads, N, N)
            received = m.data.mean(dim=(1, 2)).reshape(b, *m.size)  # (B, h, w): attention each key receives
            out[m.block] = (m.stage, received)
            continue
        views = []
        for i in range(m.data.shape[0]):
            a = None if act is None else act[i].numpy()
            rows = None if m.rows is None else m.rows[i].numpy()
            data = m.data[i].numpy()
            spatial, _, _ = spatial_view(m.kind, data, m.size, a, None, rows, m.window, view, qgrid=m.qgrid)
            if spatial is None:
                break
            views.append(torch.as_tensor(np.ascontiguousarray(spatial)))
        if len(views) == m.data.shape[0]:
            out[m.block] = (m.stage, torch.stack(views))
    return out


def aggregate(blocks: dict[str, tuple[int | None, Tensor]], size: tuple[int, int]) -> dict[str, Tensor]:
    """Per block, per stage (mean of its blocks) and ``average`` (mean of the stages), all (B, H, W) in [0, 1]."""
    out: dict[str, Tensor] = {}
    stages: dict[int, list[Tensor]] = defaultdict(list)
    for name, (stage, m) in blocks.items():
        img = to_image(m, size)
        out[name] = img
        if stage is not None:
            stages[stage].append(img)
    stage_maps = {f"stage{s}": torch.stack(v).mean(0) for s, v in sorted(stages.items())}
    out.update(stage_maps)
    if stage_maps:
        out["average"] = torch.stack(list(stage_maps.values())).mean(0)
    return out


def localise(
    blocks: dict[str, tuple[int | None, Tensor]],
    masks: Tensor,
    tolerance: int,
    scores: LocalisationScores,
    baseline: LocalisationScores | None = None,
) -> None:
    """Score a batch's block views (:func:`block_maps`) against ``masks`` (B, H, W) per block, per stage and for
    the stage average, adding to ``scores``; the centre prior is added to ``baseline`` when given."""
    size = (int(masks.shape[1]), int(masks.shape[2]))
    for name, img in aggregate(blocks, size).items():
        scores.add(name, *score_maps(img, masks, tolerance))
    if baseline is not None:
        prior = centre_prior(size).expand(masks.shape[0], *size)
        baseline.add("centre prior", *score_maps(prior, masks, tolerance))
