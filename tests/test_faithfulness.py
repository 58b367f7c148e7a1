"""attnviz.checks.faithfulness: deletion/insertion (Petsiuk et al., BMVC 2018) and ROAD (Rong et al., ICML 2022):
the AUC of known curves, which pixels each step changes, the noisy-linear imputation against a plain dense solve, a
model whose class depends on one region only (a map pointing at it must beat the random map and the centre prior),
and result.json's ``checks.<block>.faithfulness`` from ``render --checks``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from attnviz.checks import centre_prior, faithfulness, random_map
from attnviz.checks.faithfulness import (
    _NEIGHBOURS,
    ROAD_NOISE,
    auc,
    curve_inputs,
    deletion_inputs,
    insertion_inputs,
    pixel_order,
    road_impute,
    road_inputs,
    road_solver,
    step_counts,
    step_masks,
)
from attnviz.cli.main import main
from tests.images import photo


def test_auc_of_known_curves() -> None:
    assert auc([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert auc(np.linspace(1, 0, 25)) == pytest.approx(0.5)
    assert auc([0.0, 1.0, 0.0]) == pytest.approx(0.5)
    assert auc([0.2, 0.4], [0.0, 0.5]) == pytest.approx(0.15)  # trapezoid over the given fractions
    assert auc([1.0, 0.0, 0.0, 0.0, 0.0]) == pytest.approx(0.125)  # a drop in the first quarter
    with pytest.raises(ValueError, match="at least 2"):
        auc([1.0])


def test_deletion_and_insertion_change_exactly_the_pixels_of_each_step() -> None:
    h, w, steps = 6, 5, 7
    rng = np.random.default_rng(0)
    m = rng.permutation(h * w).reshape(h, w).astype(np.float32)  # distinct values: one order
    order = pixel_order(m, (h, w))
    assert order.tolist() == np.argsort(-m.ravel()).tolist()
    counts = step_counts(h * w, steps)
    assert counts[0] == 0 and counts[-1] == h * w and counts == sorted(counts)
    x = torch.rand(1, 3, h, w) + 1  # no pixel equals the baseline or the start
    start = torch.full_like(x, -5.0)
    dele = deletion_inputs(x, step_masks(order, (h, w), counts), torch.zeros(3))
    ins = insertion_inputs(x, step_masks(order, (h, w), counts), start)
    for k, n in enumerate(counts):
        top = set(np.argsort(-m.ravel())[:n].tolist())  # the n highest pixels of the map
        changed = set(torch.nonzero((dele[k] != x[0]).any(0).reshape(-1)).reshape(-1).tolist())
        assert changed == top
        assert torch.all(dele[k].reshape(3, -1)[:, sorted(top)] == 0)
        revealed = set(torch.nonzero((ins[k] == x[0]).all(0).reshape(-1)).reshape(-1).tolist())
        assert revealed == top


def _dense_solve(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's system built cell by cell and solved densely: each removed pixel = the weighted mean of its
    in-image neighbours (1/6 direct, 1/12 diagonal)."""
    c, h, w = x.shape
    cells = [(i, j) for i in range(h) for j in range(w) if removed[i, j]]
    idx = {cell: k for k, cell in enumerate(cells)}
    a = np.zeros((len(cells), len(cells)))
    b = np.zeros((len(cells), c))
    for k, (i, j) in enumerate(cells):
        for dy, dx, wt in _NEIGHBOURS:
            y, z = i + dy, j + dx
            if 0 <= y < h and 0 <= z < w:
                a[k, k] += wt
                if removed[y, z]:
                    a[k, idx[(y, z)]] -= wt
                else:
                    b[k] += wt * x[:, y, z]
    out = x.copy()
    sol = np.linalg.solve(a, b)
    for k, (i, j) in enumerate(cells):
        out[:, i, j] = sol[k]
    return out


@pytest.mark.parametrize("solver", ["direct", "cg"])
@pytest.mark.parametrize("share", [0.2, 0.6, 0.95])
def test_road_imputation_equals_a_plain_solve_and_keeps_the_other_pixels(share: float, solver: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 13, 17, generator=g, dtype=torch.float64)
    removed = torch.rand(13, 17, generator=g) < share
    want = _dense_solve(x[0].numpy(), removed.numpy())
    got = road_impute(x, removed, noise=0.0, tol=1e-12, max_iter=2000, solver=solver)
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-8)
    noisy = road_impute(x, removed, noise=0.01, generator=torch.Generator().manual_seed(0), solver=solver)
    keep = ~removed
    assert torch.equal(noisy[0][:, keep], x[0][:, keep])  # kept pixels bit for bit, noise or not
    assert not torch.equal(noisy[0][:, removed], got[0][:, removed])  # the noise is on the imputed ones


def test_the_direct_solve_equals_conjugate_gradients_per_image_and_set() -> None:
    """The fast path (one sparse factorisation per removed set, shared by the channels and by images with the same
    set) against the torch reference solved to tight tolerance: scattered and blob-shaped sets, a batch mixing
    distinct and repeated sets, everything removed (the mean, 0) and nothing removed."""
    g = torch.Generator().manual_seed(2)
    h, w = 40, 48
    x = torch.randn(6, 3, h, w, generator=g, dtype=torch.float64)
    order = pixel_order(centre_prior((5, 6)), (h, w))
    blob = step_masks(order, (h, w), [round(0.7 * h * w)])[0]  # one connected blob in the middle
    scattered = torch.rand(h, w, generator=g) < 0.5
    removed = torch.stack([blob, scattered, blob, torch.ones(h, w, dtype=torch.bool), ~blob, torch.zeros_like(blob)])
    want = road_impute(x, removed, noise=0.0, solver="cg", tol=1e-12, max_iter=5000)
    got = road_impute(x, removed, noise=0.0, solver="direct")
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-8)
    assert torch.equal(got[3], torch.zeros(3, h, w))  # nothing kept: the dataset mean
    assert torch.equal(got[5], x[5])  # nothing removed: the image
    # the noise is drawn the same way by both solvers, so the noisy images differ by the solve only
    a = road_impute(x, removed, generator=torch.Generator().manual_seed(0), solver="direct")
    b = road_impute(x, removed, generator=torch.Generator().manual_seed(0), solver="cg", tol=1e-12, max_iter=5000)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-8)


def test_curves_with_the_default_cg_tolerance_stay_within_the_noise_of_the_direct_solve() -> None:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    m = random_map((8, 8), 1)
    fast, lens = curve_inputs(x, m, solver="direct")
    slow, _ = curve_inputs(x, m, solver="cg")
    cut = lens[0] + lens[1]
    assert torch.equal(fast[:cut], slow[:cut])  # deletion and insertion do not impute
    assert (fast[cut:] - slow[cut:]).abs().max() < 0.5 * ROAD_NOISE  # ROAD: the cg tolerance, below the noise
    assert not torch.equal(fast[cut:], slow[cut:])  # (two solvers ran)


def test_without_scipy_road_falls_back_to_conjugate_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    order = pixel_order(random_map((4, 4), 2), (16, 16))
    want = road_inputs(x[:1], order, noise=0.0, solver="cg")
    assert road_solver("auto") == "direct"  # scipy is installed here
    monkeypatch.setitem(sys.modules, "scipy.sparse.linalg", None)  # import scipy.sparse.linalg fails
    assert road_solver("auto") == "cg"
    with pytest.raises(ImportError, match="needs scipy"):
        road_solver("direct")
    with pytest.raises(ValueError, match="unknown ROAD solver"):
        road_solver("lu")
    assert torch.equal(road_inputs(x[:1], order, noise=0.0), want)


class RegionNet(nn.Module):
    """A classifier whose two logits depend only on the image's top-left ``side`` x ``side`` corner: the mean of
    that corner decides class 0 against class 1."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.5], [-1.5]]))
            self.head.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        s = x[:, :, : self.side, : self.side].mean((1, 2, 3))  # (B,)
        return self.head(s[:, None])  # (B, 2)


def test_a_map_on_the_deciding_region_beats_random_and_the_centre_prior() -> None:
    side, size = 8, 32
    torch.manual_seed(0)
    x = 0.3 * torch.randn(1, 3, size, size) - 1.0
    x[:, :, :side, :side] += 2.0  # the evidence for class 0 (blurred, it mixes with the background's -1)
    model = RegionNet(side).eval()
    grid = (8, 8)
    pointing = np.zeros(grid, dtype=np.float32)
    pointing[: side * grid[0] // size, : side * grid[1] // size] = 1.0
    pointing += 0.01 * np.random.default_rng(0).random(grid, dtype=np.float32)  # an order inside and outside
    maps = {"pointing": pointing, "centre": centre_prior(grid), "random": random_map(grid, 0)}
    res = {k: c.json() for k, c in faithfulness(model, x, maps, target=0).items()}
    for other in ("centre", "random"):
        assert res["pointing"]["deletion"] < res[other]["deletion"] - 0.05
        assert res["pointing"]["insertion"] > res[other]["insertion"] + 0.05
        assert res["pointing"]["road_morf"] < res[other]["road_morf"]
        assert res["pointing"]["road_lerf"] > res[other]["road_lerf"]
    curves = res["pointing"]["curves"]
    assert len(curves["deletion"]) == len(curves["insertion"]) == 25 and len(curves["road_morf"]) == 5


def test_one_batch_per_map_holds_every_curve() -> None:
    x = torch.randn(1, 3, 16, 16)
    batch, lens = curve_inputs(x, random_map((4, 4), 3), steps=20, fractions=(0.25, 0.5))
    assert lens == [21, 21, 2, 2] and batch.shape == (46, 3, 16, 16)
    assert torch.equal(batch[0], x[0]) and torch.equal(batch[20], torch.zeros(3, 16, 16))  # deletion: x -> mean
    assert torch.equal(batch[41], x[0])  # insertion ends at the image


def test_render_checks_writes_faithfulness(tmp_path: Path) -> None:
    src = tmp_path / "cat.png"
    photo((72, 64)).save(src)
    out = tmp_path / "out"
    args = ["render", str(src), "--attention", "cbam", "--out", str(out), "--device", "cpu", "--size", "48"]
    assert main([*args, "--faithfulness", "--workers", "0"]) == 2  # part of the checks: said, nothing written
    assert not out.exists()
    assert main([*args, "--checks", "--faithfulness", "--workers", "0"]) == 0
    sidecar = json.loads((out / "cat" / "result.json").read_text())
    assert sidecar["checks_info"]["faithfulness"]["steps"] == 24
    for block in sidecar["checks"].values():
        f = block["faithfulness"]
        assert set(f) == {"attention", "gradcam", "centre", "random"}
        for scores in f.values():
            assert {"deletion", "insertion", "road_morf", "road_lerf", "curves"} <= set(scores)
            assert all(0 <= scores[k] <= 1 for k in ("deletion", "insertion", "road_morf", "road_lerf"))
            assert len(scores["curves"]["deletion"]) == 25


def test_stats_reports_faithfulness_per_stage_with_intervals(tmp_path: Path) -> None:
    from attnviz.checks import block_faithfulness
    from attnviz.stats.run import run_stats

    data = tmp_path / "data"
    for i in range(3):
        (data / "cat").mkdir(parents=True, exist_ok=True)
        photo((40 + 4 * i, 36)).save(data / "cat" / f"{i}.png")
    out = tmp_path / "stats"
    summary = run_stats(
        data, out, attention="cbam", size=32, workers=0, progress=False, log=lambda s: None,
        faithfulness=block_faithfulness, faithful_images=2,
    )  # fmt: skip
    assert summary is not None
    rows = pd.read_csv(out / "tables" / "faithfulness.csv")
    assert set(rows["method"]) == {"attention", "gradcam", "centre", "random"}
    assert set(rows["stage"].astype(str)) == {"all", "1", "2", "3", "4"}
    assert (rows["images"] == 2).all()  # the first 2 of 3 images
    assert ((rows["ci_low"] <= rows["mean"] + 1e-12) & (rows["mean"] <= rows["ci_high"] + 1e-12)).all()
    assert "attention deletion" in summary["faithfulness"]
    assert "Faithfulness over 2 images" in (out / "report.md").read_text()
