"""attnviz.checks and attnviz.comparison: ablation against hand-made controls (taps, module sites, function sites,
skip paths), Grad-CAM against torchcam and a hand computation, Spearman/IoU against references, the cascading
randomisation (what changes, what must not), compare, and the CLI contracts (render --checks, compare)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import attnviz
from attnviz.checks import (
    Ablation,
    ablate,
    agreement,
    call_order,
    find_blocks,
    gradcam,
    neutral,
    randomise_from,
    randomised_views,
    rank,
    run_checks,
    spearman,
    top_iou,
)
from attnviz.cli.main import main
from tests.images import photo

# -- scores ------------------------------------------------------------------------------------------------------

FIXED_A = np.array([[0.1, 0.5, 0.5], [0.9, 0.2, 0.2], [0.7, 0.0, 0.3]])  # ties on purpose
FIXED_B = np.array([[0.3, 0.4, 0.6], [0.8, 0.1, 0.2], [0.9, 0.05, 0.0]])


def test_rank_and_spearman_match_scipy_or_a_hand_computation() -> None:
    assert rank(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    rng = np.random.default_rng(0)
    pairs = [(FIXED_A, FIXED_B), (rng.random((7, 5)), rng.random((7, 5))), (np.arange(6.0), -np.arange(6.0))]
    try:
        from scipy.stats import spearmanr
    except ImportError:  # the hand computation: Pearson correlation of the average ranks

        def spearmanr(a: np.ndarray, b: np.ndarray) -> tuple[float]:  # type: ignore[misc]
            ra, rb = rank(a), rank(b)
            return (float(np.corrcoef(ra, rb)[0, 1]),)

    for a, b in pairs:
        assert spearman(a, b) == pytest.approx(float(spearmanr(a.ravel(), b.ravel())[0]), abs=1e-12)
    assert spearman(np.arange(6.0), -np.arange(6.0)) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(4), np.arange(4.0)))
    assert agreement(np.ones((2, 2)), np.arange(4.0).reshape(2, 2))["spearman"] == 0.0
    assert agreement(np.ones((1, 1)), np.ones((1, 1)))["spearman"] == 1.0  # equal constant maps agree


def test_top20_iou_by_hand() -> None:
    a = np.arange(10.0)  # top 2: indices 9, 8
    b = np.array([0, 0, 0, 0, 0, 0, 0, 0, 5, 0.0]) + np.arange(10) * 1e-3  # top 2: 8, 9
    assert top_iou(a, b) == 1.0
    c = np.array([9, 8, 0, 0, 0, 0, 0, 0, 0, 7.0])  # top 2: 0, 1 -> disjoint from {8, 9}
    assert top_iou(a, c) == 0.0
    d = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 9.0]) + np.r_[1.0, np.zeros(9)]  # top 2: 9, 0 -> {9} of {0, 8, 9}
    assert top_iou(a, d) == pytest.approx(1 / 3)
    assert agreement(a.reshape(2, 5), a.reshape(2, 5)) == {"spearman": pytest.approx(1.0), "top20_iou": 1.0}


# -- hand-made networks ------------------------------------------------------------------------------------------


class FixedGate(nn.Module):
    """Channel gate with fixed logits: x * sigmoid(logits), through a tap, a gate module, or a function call."""

    def __init__(self, logits: list[float], how: str) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits).view(1, -1, 1, 1))
        self.how = how
        self.gate = nn.Sigmoid() if how == "module" else None  # only one source per block
        self.tap = attnviz.blocks.Tap("channel") if how == "tap" else None

    def forward(self, x: Tensor) -> Tensor:
        z = self.logits.expand(x.shape[0], -1, 1, 1) + 0 * x.mean((2, 3), keepdim=True)
        if self.tap is not None:
            return x * self.tap(torch.sigmoid(z))
        if self.gate is not None:
            return x * self.gate(z)
        return x * z.sigmoid()  # a function call inside the module


class TinyNet(nn.Module):
    """Two constant channels, a gate, and a classifier: logit 0 = 10 * mean(channel 0), logit 1 = 5."""

    def __init__(self, logits: list[float], how: str) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 1)
        nn.init.zeros_(self.stem.weight)
        nn.init.ones_(self.stem.bias)
        self.layer1 = nn.Sequential(FixedGate(logits, how))
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[10.0, 0.0], [0.0, 0.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, 5.0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.layer1(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize("how", ["tap", "module", "function"])
def test_a_gate_at_one_by_construction_changes_nothing(how: str) -> None:
    model = TinyNet([40.0, 40.0], how).eval()  # sigmoid(40) == 1 in float32: the block is the identity already
    x = torch.rand(1, 3, 8, 8)
    blocks = find_blocks(model, x)[0]
    assert [b.path for b in blocks] == ["layer1.0"]
    res = ablate(model, x, blocks)
    assert res.blocks["layer1.0"].top1_prob_delta == 0.0 and not res.blocks["layer1.0"].top1_changed
    assert res.all_off.top1_prob_delta == 0.0


@pytest.mark.parametrize("how", ["tap", "module", "function"])
def test_a_decisive_gate_switched_off_flips_the_decision(how: str) -> None:
    model = TinyNet([-40.0, 40.0], how).eval()  # the gate zeroes channel 0, the evidence for class 0
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        before = model(x)
    res = ablate(model, x)
    assert res.target == 1 and res.prob > 0.99
    eff = res.blocks["layer1.0"]
    assert eff.top1_changed and eff.top1 == 0 and eff.top1_prob_delta < -0.95
    with torch.inference_mode():
        assert torch.equal(model(x), before)  # the ablation is gone afterwards
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_batched_ablation_equals_one_forward_per_block() -> None:
    model = attnviz.build_model("resnet18", "cbam", num_classes=5).eval()
    x = torch.randn(1, 3, 48, 48)
    blocks = find_blocks(model, x)[0]
    res = ablate(model, x, blocks, batch_size=4)  # 10 rows in 3 forwards
    for b in blocks[::3]:
        with Ablation(model, blocks, {b.path: torch.tensor([True])}), torch.inference_mode():
            p = torch.softmax(model(x), 1)[0, res.target]
        assert float(p) == pytest.approx(res.blocks[b.path].prob, abs=1e-5)


def test_neutral_values_per_kind() -> None:
    t = torch.softmax(torch.randn(2, 3, 4, 1, 1), dim=1)
    assert torch.allclose(neutral(t, "softmax", "branch", 1), torch.full_like(t, 1 / 3))
    assert torch.allclose(neutral(t, "output", "branch", None), torch.full_like(t, 1 / 3))  # axis unknown: mean
    assert torch.equal(neutral(torch.rand(2, 5), "sigmoid", "channel", None), torch.ones(2, 5))


def test_sk_off_is_the_mean_of_its_branches() -> None:
    model = attnviz.build_model("resnet18", "sk", num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    blocks = find_blocks(model, x)[0]
    sk = model.layer1[0].conv2
    with torch.inference_mode():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        u = torch.stack([p(stem) for p in sk.paths], 1)  # (1, K, C, H, W)
        with Ablation(model, blocks, {blocks[0].path: torch.tensor([True])}):
            out = sk(stem)
        assert not torch.allclose(sk(stem), u.mean(1), atol=1e-4)
    assert torch.allclose(out, u.mean(1), atol=1e-6)


def test_a_residual_block_off_is_its_skip_path() -> None:
    model = attnviz.build_model("resnet18", "da", num_classes=4).eval()
    with torch.no_grad():
        for m in (model.layer3[2].position, model.layer3[2].channel):  # make the block matter
            (m.alpha if hasattr(m, "alpha") else m.beta).fill_(0.5)
    x = torch.randn(1, 3, 64, 64)
    blocks = find_blocks(model, x)[0]
    assert [b.path for b in blocks] == ["layer3.2", "layer4.2"] and blocks[0].residual
    with Ablation(model, blocks, {"layer3.2": torch.tensor([True])}), torch.inference_mode():
        off = model(x)
    twin = copy.deepcopy(model)
    twin.layer3[2] = nn.Identity()
    with torch.inference_mode():
        assert torch.allclose(off, twin(x), atol=1e-5)
        assert not torch.allclose(off, model(x), atol=1e-3)


# -- Grad-CAM ------------------------------------------------------------------------------------------------------


def test_gradcam_equals_torchcam_and_the_formula_at_the_block() -> None:
    from torchcam.methods import GradCAM

    model = attnviz.build_model("resnet18", "cbam", num_classes=6).eval()
    x = torch.randn(1, 3, 64, 64)
    blocks = find_blocks(model, x)[0]
    cams, cls = gradcam(model, x, blocks, class_idx=2)
    assert cls == 2 and set(cams) == {b.path for b in blocks}
    assert all(p.grad is None for p in model.parameters())
    path = "layer2.1.attn"
    with GradCAM(model, target_layer=path) as ref:
        scores = model(x)
        expected = ref(class_idx=2, scores=scores, normalized=False)[0][0].numpy()
    assert cams[path].shape == (8, 8)
    np.testing.assert_allclose(cams[path], expected, rtol=1e-5, atol=1e-6)
    keep: list[Tensor] = []  # by hand: ReLU(sum_k mean(dY/dA_k) A_k)
    h = model.layer2[1].attn.register_forward_hook(lambda m, a, o: keep.append(o))
    y = model(x)[0, 2]
    h.remove()
    (g,) = torch.autograd.grad(y, keep[0])
    hand = torch.relu((g.mean((2, 3), keepdim=True) * keep[0]).sum(1))[0].detach().numpy()
    np.testing.assert_allclose(cams[path], hand, rtol=1e-4, atol=1e-6)


# -- randomisation -----------------------------------------------------------------------------------------------


def test_randomisation_changes_every_parameter_above_the_block_and_none_below() -> None:
    model = attnviz.build_model("resnet18", "se", num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    twin = copy.deepcopy(model)
    order = call_order(twin, x)
    start = order[id(twin.layer3[0].attn)]
    assert randomise_from(twin, start, order, seed=1) > 0
    before = dict(model.named_parameters())
    above = ("layer3.0.attn", "layer3.0.downsample", "layer3.1", "layer4", "fc")
    for name, p in twin.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == name.startswith(above), name


def test_randomised_views_leave_the_model_untouched_and_warn_for_a_parameter_free_block() -> None:
    model = attnviz.build_model("resnet18", "simam", num_classes=4).eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.inference_mode():
        logits = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    checks = run_checks(model, x, seed=3, gradcam_on=False)
    with torch.inference_mode():
        assert torch.equal(model(x), logits)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # SimAM has no parameters: layers above it cannot change its map, so it is kept exactly -> warning
    for c in checks.blocks.values():
        assert c.randomised_scores is not None and c.randomised_scores["spearman"] == pytest.approx(1.0)
        assert "hardly changes" in c.warning
    se = attnviz.build_model("resnet18", "cbam", num_classes=4).eval()
    blocks = find_blocks(se, x)[0]
    views = randomised_views(se, x, blocks, seed=3)
    assert set(views) == {b.path for b in blocks}
    assert all(v is not None and v.ndim == 2 for v in views.values())


# -- compare and the command line -----------------------------------------------------------------------------


def test_compare_two_types_gives_two_maps_and_their_difference() -> None:
    from attnviz.comparison import compare, compare_files

    img = photo((80, 64))
    a = attnviz.analyze(img, attention="cbam", weights="demo", device="cpu", size=64)
    b = attnviz.analyze(img, attention="spatial", weights="demo", device="cpu", size=64)
    cmp = compare(a, b)
    assert cmp.unit == "block" and len(cmp.pairs) == 8
    for p in cmp.pairs:
        assert p.a.shape == p.b.shape == p.diff.shape
        np.testing.assert_allclose(p.diff, p.a - p.b)
        assert p.a.min() >= 0 and p.b.max() <= 1 and min(p.a.min(), p.b.min()) == 0.0  # one shared min-max
    names = [n for n, _ in compare_files(cmp)]
    assert "00_layer1.0.png" in names and "00_layer1.0.diff.npy" in names and "compare.json" in names
    c2 = compare(a, attnviz.analyze(img, attention="da", weights="demo", device="cpu", size=64))
    assert c2.unit == "stage" and [p.key for p in c2.pairs] == ["stage 3", "stage 4"]


def test_render_checks_contract(tmp_path: Path) -> None:
    src = tmp_path / "cat.png"
    photo((72, 64)).save(src)
    out = tmp_path / "out"
    args = ["render", str(src), "--attention", "cbam", "--out", str(out), "--device", "cpu", "--size", "64"]
    assert main([*args, "--checks", "--workers", "0"]) == 0
    sidecar = json.loads((out / "cat" / "result.json").read_text())
    checks = sidecar["checks"]
    assert list(checks) == [f"layer{s}.{i}.attn" for s in (1, 2, 3, 4) for i in (0, 1)]
    for block in checks.values():
        assert isinstance(block["ablation"]["top1_prob_delta"], float)
        assert isinstance(block["ablation"]["top1_changed"], bool)
        for key in ("gradcam", "randomised"):  # every CBAM block has a spatial view
            assert set(block[key]) >= {"spearman", "top20_iou"}
            assert -1 <= block[key]["spearman"] <= 1 and 0 <= block[key]["top20_iou"] <= 1
    assert set(sidecar["checks_all_off"]) == {"top1_prob_delta", "top1_changed"}
    files = set(sidecar["files"])
    for stem in ("checks/00_layer1.0.attn.gradcam", "checks/07_layer4.1.attn.randomised"):
        assert {f"{stem}.npy", f"{stem}.png"} <= files
        assert (out / "cat" / f"{stem}.npy").is_file()
    assert np.load(out / "cat" / "checks/00_layer1.0.attn.gradcam.npy").shape == (16, 18)
    plain = tmp_path / "plain"
    assert main([*args[:-6], "--out", str(plain), "--device", "cpu", "--size", "64", "--workers", "0"]) == 0
    assert "checks" not in json.loads((plain / "cat" / "result.json").read_text())


def test_compare_cli_writes_png_and_npy(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    photo((64, 64)).save(a)
    photo((64, 80)).transpose(0).save(b)
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--attention", "spatial", "--out", str(out), "--size", "48"]) == 0
    assert (out / "00_layer1.0.png").is_file() and np.load(out / "00_layer1.0.diff.npy").ndim == 2
    assert json.loads((out / "compare.json").read_text())["unit"] == "block"
    assert main(["compare", str(a), "--attention", "spatial", "--out", str(out)]) == 2  # both sides the same
