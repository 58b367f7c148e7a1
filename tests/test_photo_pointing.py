"""The separating real-photo pointing test (attnviz.train.pointing): small off-centre photos, the scoring of views
against the centre prior, the plain network's activation map and a random map, and the Wilson intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from attnviz.data import PhotoDataset
from attnviz.data.photos import PHOTO_SCALE, SMALL_PHOTO_SCALE
from attnviz.sources.demo import demo_categories
from attnviz.stats.localisation import wilson
from attnviz.train.pointing import BASELINES, pointing_markdown, pointing_test


class BoxScenes(Dataset):
    """Black scenes with one white ``box`` x ``box`` square in a corner region (never over the centre)."""

    def __init__(self, n: int, size: int = 64, box: int = 16) -> None:
        self.n, self.size, self.box = n, size, box
        corners = [(4, 4), (4, size - box - 4), (size - box - 4, 4), (size - box - 4, size - box - 4)]
        self.places = [corners[i % 4] for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, int, Tensor]:
        y, x = self.places[i]
        image = torch.zeros(3, self.size, self.size)
        image[:, y : y + self.box, x : x + self.box] = 1.0
        return image, 0, image[0] > 0.5


class SpatialGate(nn.Module):
    """A CBAM-style spatial gate (Woo et al., ECCV 2018) with a fixed rule: sigmoid of the channel mean, times
    ``sign``: +1 weights the bright square, -1 the dark background."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.sign = sign

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.sign * 4.0 * x.mean(1, keepdim=True))  # (B, C, H, W) * (B, 1, H, W)


class Block(nn.Module):
    def __init__(self, sign: float | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[:, :, None, None])
            self.conv.bias.zero_()
        self.attn = None if sign is None else SpatialGate(sign)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return x if self.attn is None else self.attn(x)


class Tiny(nn.Module):
    """stem (4 x 4 average pooling) -> layer1 (one block) -> global mean -> fc, named as torchvision's ResNet."""

    def __init__(self, sign: float | None) -> None:
        super().__init__()
        self.stem = nn.AvgPool2d(4)
        self.layer1 = nn.Sequential(Block(sign))
        self.fc = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.layer1(self.stem(x)).mean((2, 3)))


def _run(n: int = 8, batch_size: int = 4, seed: int = 0) -> dict:
    models = {"inside": Tiny(1.0), "outside": Tiny(-1.0)}
    ds = BoxScenes(n)
    return pointing_test(
        models, Tiny(None), ds, mean=[0.5] * 3, std=[0.5] * 3, batch_size=batch_size, tolerance=0.0, seed=seed
    )


def test_views_peaked_inside_score_1_outside_0_and_the_centre_prior_misses_off_centre_boxes() -> None:
    r = _run()
    assert r["scenes"] == 8 and r["columns"] == ["stage1", "average"]
    assert list(r["rows"]) == ["inside", "outside", *BASELINES]
    for c in r["columns"]:
        assert r["rows"]["inside"][c]["pointing"] == 1.0  # the gate's peak is the white square
        assert r["rows"]["outside"][c]["pointing"] == 0.0  # its peak is the black background
        assert r["rows"]["centre prior"][c]["pointing"] == 0.0  # no square covers the centre
        assert r["rows"]["plain activation"][c]["pointing"] == 1.0  # the plain net's channel mean is the image
        rnd = r["rows"]["random"][c]["pointing"]
        assert 0.0 <= rnd < 0.5  # the square covers 1/16 of the scene: chance lands there rarely
    lo, hi = r["rows"]["inside"]["stage1"]["ci"]
    assert (lo, hi) == pytest.approx(wilson(1.0, 8), abs=1e-4) and lo < 1.0 == hi
    assert r["mask_share"] == pytest.approx(1 / 16)
    table = pointing_markdown(r)
    assert (
        "| map | stage 1 | average |" in table and "| inside | 100.0 [" in table and "| *centre prior* | 0.0 [" in table
    )


def test_the_random_baseline_is_seeded_per_scene_not_per_batch() -> None:
    from attnviz.train.pointing import _random_scores

    ds, grids = BoxScenes(8), {1: (16, 16), 2: (8, 8)}
    a, b, c = (_random_scores(ds, grids, 0.0, seed, batch) for seed, batch in ((3, 4), (3, 3), (4, 4)))
    assert list(a) == ["stage1", "stage2", "average"]
    assert a == b  # the same maps whatever the batch size (energy in mask tells maps apart, not only the hit rate)
    assert a["stage1"]["energy"] != c["stage1"]["energy"]  # another seed draws other maps
    r, s = _run(8, 4, seed=3), _run(8, 3, seed=3)
    assert r["rows"] == s["rows"]


def test_wilson_interval() -> None:
    lo, hi = wilson(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson(0.0, 20)[0] == 0.0 and wilson(1.0, 20)[1] == 1.0 and wilson(0.3, 0) == (0.0, 1.0)
    lo, hi = wilson(0.5, 400)
    assert (hi - lo) / 2 < 0.05  # 400 scenes give at most +-5 points


def _longer_side(mask: Tensor) -> int:
    ys, xs = np.nonzero(mask.numpy())
    return max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1)


def test_small_photos_are_pasted_at_20_to_40_percent_off_centre() -> None:
    size = 128
    small = PhotoDataset(demo_categories(), size=size, placements=6, seed=0, scale=SMALL_PHOTO_SCALE)
    default = PhotoDataset(demo_categories(), size=size, placements=6, seed=0)
    assert small.fingerprint()["scale"] == list(SMALL_PHOTO_SCALE) and default.fingerprint()["scale"] == list(
        PHOTO_SCALE
    )
    sides, centred = [], 0
    for i in range(len(small)):
        _, _, mask = small[i]
        sides.append(_longer_side(mask))
        centred += bool(mask[size // 2, size // 2])
    assert SMALL_PHOTO_SCALE[0] * size - 1 <= min(sides) and max(sides) <= SMALL_PHOTO_SCALE[1] * size + 1
    assert centred < len(small) / 2  # uniform positions: most small photos miss the centre
    assert min(_longer_side(default[i][2]) for i in range(len(default))) >= PHOTO_SCALE[0] * size - 1
    with pytest.raises(ValueError, match="scale"):
        PhotoDataset(demo_categories(), scale=(0.5, 0.2))


def test_clusters_pool_the_same_rates_and_resample_the_clusters() -> None:
    """Scored in clusters (a photo's placements), every rate is the same as scored flat (the random maps too: they
    are seeded per item), but the interval resamples the clusters: two clusters, one all hits and one all misses,
    leave the rate anywhere in [0, 1], where Wilson over the 8 scenes would claim about ±30 points."""
    ds = BoxScenes(8)
    ds.places = [(24, 24)] * 4 + ds.places[4:]  # the first 4 scenes' square covers the centre
    kw = {"mean": [0.5] * 3, "std": [0.5] * 3, "batch_size": 3, "tolerance": 0.0, "seed": 5}
    flat = pointing_test({"inside": Tiny(1.0)}, Tiny(None), ds, **kw)
    grouped = pointing_test({"inside": Tiny(1.0)}, Tiny(None), ds, clusters=[range(4), range(4, 8)], **kw)
    assert flat["clusters"] is None and grouped["clusters"] == 2 and grouped["scenes"] == 8
    for name, row in flat["rows"].items():
        for c, cell in row.items():
            assert grouped["rows"][name][c]["pointing"] == pytest.approx(cell["pointing"], abs=1e-4)
    assert grouped["accuracy"] == flat["accuracy"] and grouped["mask_share"] == flat["mask_share"]
    prior_flat, prior_grouped = flat["rows"]["centre prior"]["stage1"], grouped["rows"]["centre prior"]["stage1"]
    assert prior_flat["pointing"] == prior_grouped["pointing"] == 0.5
    assert prior_flat["ci"] == pytest.approx(list(wilson(0.5, 8)), abs=1e-4)
    assert prior_grouped["ci"] == [0.0, 1.0]
