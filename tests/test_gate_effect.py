"""The channel gates' gate effect view (attnviz.capture.kinds.gate_effect) and the border-peak rate
(attnviz.stats.localisation.border_peaks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attnviz.blocks import SqueezeExcite
from attnviz.capture import AttentionRecorder
from attnviz.capture.kinds import VIEW_NAMES, gate_effect
from attnviz.capture.views import build_views
from attnviz.checks import spearman
from attnviz.stats.localisation import border_peaks, ring_share

from .images import photo


class SEModule(nn.Module):
    """A squeeze-and-excitation module as the model repositories write theirs (no attnviz tap: found by discovery)."""

    def __init__(self, channels: int, rd: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.fc2(self.act(self.fc1(s))).sigmoid()


class Net(nn.Module):
    """conv-bn -> SE -> residual add -> ReLU -> classifier (the SE sits on the residual branch, as in SE-ResNet)."""

    def __init__(self, se: nn.Module, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.se = se
        self.fc = nn.Linear(c, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.stem(x))
        out = self.se(self.bn(self.conv(x)))
        out += x  # in place, as torchvision's blocks do
        return self.fc(torch.relu(out).mean((2, 3)))


def _image() -> Tensor:
    a = np.asarray(photo((40, 32)), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None]  # (1, 3, 32, 40)


def _reference(net: Net, x: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A (C, h, w) the activation the gate multiplies, g (C,), the gate-weighted mean) by plain hooks."""
    seen: dict[str, Tensor] = {}
    h = net.se.register_forward_hook(lambda m, a, o: seen.update(a=a[0][0].clone(), o=o[0].clone()))
    try:
        with torch.no_grad():
            net(x)
    finally:
        h.remove()
    a, o = seen["a"].double().numpy(), seen["o"].double().numpy()
    g = (o / a).reshape(a.shape[0], -1)[:, 0]  # out = g * A, so any position gives g
    return a, g, o.mean(0)


def _views(net: Net, x: Tensor, view: str | None = None) -> np.ndarray:
    with AttentionRecorder(net, activations=True) as rec, torch.no_grad():
        net(x)
    result = type("R", (), {"maps": rec.maps, "activations": {k: v[0].numpy() for k, v in rec.activations.items()}})
    (v,) = [v for v in build_views(result(), view=view) if v.kind == "channel"]
    return v.spatial


@pytest.mark.parametrize("se", [lambda c: SEModule(c), lambda c: SqueezeExcite(c, hidden=4)], ids=["found", "tap"])
def test_gate_effect_is_the_gate_minus_its_mean_times_the_activation(se) -> None:
    torch.manual_seed(0)
    net = Net(se(16)).eval()
    nn.init.normal_(net.bn.weight, 1.0, 0.5)
    nn.init.normal_(net.bn.bias, 0.0, 0.5)
    x = _image()
    a, g, weighted = _reference(net, x)
    plain = ((g - g.mean())[:, None, None] * a).sum(0) / len(g)  # (1/C) sum_c (g_c - mean g) A_c, one loop
    for _ in range(2):  # the first forward reads the sites by discovery, the later ones through hooks
        np.testing.assert_allclose(_views(net, x), plain, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_views(net, x, "gate-weighted"), weighted, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gate_effect(g, weighted, a.mean(0)), plain, rtol=1e-4, atol=1e-6)
    assert {"gate-effect", "gate-weighted"} <= set(VIEW_NAMES)


def test_gate_effect_follows_the_gates_and_the_gate_weighted_view_hardly_does() -> None:
    """The activations stay (the layers below the gate are untouched), the gate's weights are re-drawn: the gate
    effect changes (the randomisation test of Adebayo et al. 2018), the gate-weighted mean activation much less."""
    torch.manual_seed(1)
    net = Net(SEModule(16)).eval()
    nn.init.normal_(net.bn.weight, 1.0, 0.5)
    nn.init.normal_(net.bn.bias, 0.0, 0.5)
    x = _image()
    a0, g0, _ = _reference(net, x)
    new0, old0 = _views(net, x), _views(net, x, "gate-weighted")
    rho_new, rho_old = [], []
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in net.se.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * p.std() + p.mean())
        a1, g1, _ = _reference(net, x)
        np.testing.assert_allclose(a1, a0, rtol=1e-6, atol=1e-7)  # the activations are the same
        assert np.abs(g1 - g0).max() > 0.05  # the gates are not
        rho_new.append(spearman(new0, _views(net, x)))
        rho_old.append(spearman(old0, _views(net, x, "gate-weighted")))
    assert np.mean(rho_old) > 0.9, rho_old
    assert np.mean(rho_new) < 0.5, rho_new
    assert np.mean(rho_old) - np.mean(rho_new) > 0.4


def test_a_uniform_gate_has_no_effect() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 5, 6))
    g = np.full(8, 0.3)
    np.testing.assert_allclose(gate_effect(g, (g[:, None, None] * a).mean(0), a.mean(0)), 0.0, atol=1e-12)


def test_border_peaks_on_constructed_maps() -> None:
    maps = torch.zeros(5, 6, 8)
    maps[0, 0, 3] = 1.0  # top row
    maps[1, 2, 4] = 1.0  # inside
    maps[2, 3, 7] = 1.0  # right column
    maps[3, 1, 1] = maps[3, 5, 0] = 1.0  # a tie: one inside, one on the ring
    # maps[4] flat: every position ties, the ring's share
    got = border_peaks(maps)
    ring = ring_share((6, 8))
    assert ring == pytest.approx(1 - 4 * 6 / 48)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 1.0, 0.5, ring]))
    assert border_peaks(maps[1:2], ring=2).item() == 0.0 and border_peaks(maps[3:4], ring=2).item() == 1.0
    assert ring_share((6, 8), ring=2) == pytest.approx(1 - 2 * 4 / 48)
    assert ring_share((2, 2)) == 1.0
    # a spatially shuffled map peaks on the ring as often as the ring's share of the positions
    shuffled = torch.rand(4000, 6, 8)
    assert border_peaks(shuffled).mean().item() == pytest.approx(ring, abs=0.03)


def test_stats_report_the_border_peak_rate_against_the_ring() -> None:
    from attnviz.capture import AttentionMap
    from attnviz.stats.accumulate import accumulate, finalize, new_partial

    data = torch.zeros(4, 8, 8)
    data[0, 0, 0] = data[1, 7, 3] = data[2, 4, 4] = data[3, 3, 5] = 1.0  # two peaks on the ring, two inside
    m = AttentionMap("layer1.0.attn.tap", "spatial", data, (8, 8))
    partial = new_partial()
    accumulate(partial, [m], {}, torch.zeros(4, dtype=torch.long))
    accumulate(partial, [m], {}, torch.zeros(4, dtype=torch.long))  # sums and counts merge
    res = finalize(partial, ["a"])
    (row,) = res["views"]
    assert row["border_peaks"] == pytest.approx(0.5) and row["border_ring"] == pytest.approx(ring_share((8, 8)))
    assert res["summary"]["border_peaks"] == {"stage1": pytest.approx({"rate": 0.5, "ring": 1 - 36 / 64})}


def test_render_names_the_channel_view(tmp_path) -> None:
    import json
    import shutil

    from attnviz.cli.main import main

    from .images import ASSET

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(ASSET, src / "cat.jpg")
    labels = {}
    for view in ("gate-effect", "gate-weighted"):
        out = tmp_path / view
        args = ["render", str(src), "--attention", "se", "--weights", "demo", "--size", "64", "--out", str(out)]
        assert main([*args, "--device", "cpu", "--workers", "0", "--channel-view", view]) == 0
        sidecar = json.loads((out / "cat" / "result.json").read_text())
        labels[view] = {m["view"] for m in sidecar["maps"]}
        assert sidecar["settings"].get("view") == (None if view == "gate-effect" else view)
    assert labels["gate-effect"] == {"gate effect vs uniform gating"}
    assert labels["gate-weighted"] == {"gate-weighted mean activation (its peaks favour the zero-padded border)"}
