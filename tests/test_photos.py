"""The real-photo test set: the committed folder, PhotoDataset's scenes and masks, evaluate_photos, attnviz eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnviz import build_model
from attnviz.data import PhotoDataset
from attnviz.data.photos import PHOTO_SCALE, photos_dir
from attnviz.sources.demo import demo_categories, demo_file
from attnviz.train.evaluate import evaluate_photos, photo_summary

MANIFEST = json.loads((photos_dir() / "manifest.json").read_text())
PHOTOS = {e["file"]: e["class"] for e in MANIFEST["photos"]}


def test_manifest_lists_every_file_and_each_loads() -> None:
    folder = photos_dir()
    listed = {e["file"] for e in MANIFEST["photos"] + MANIFEST["backgrounds"]}
    assert {p.name for p in folder.iterdir()} == listed | {"manifest.json"}  # nothing unlisted, nothing missing
    assert sum(p.stat().st_size for p in folder.iterdir()) < 600_000
    classes = set(demo_categories())
    for e in MANIFEST["photos"]:
        assert e["class"] in classes and e["source"] and e["licence"]
        with Image.open(folder / e["file"]) as im:
            assert im.mode == "RGB" and max(im.size) <= 384 and list(im.size) == e["size"]
    for e in MANIFEST["backgrounds"]:
        assert e["source"] and e["licence"]
        with Image.open(folder / e["file"]) as im:
            assert im.mode == "RGB" and max(im.size) <= 256


def test_scenes_are_a_function_of_seed_photo_and_placement() -> None:
    a = PhotoDataset(demo_categories(), size=64, placements=3, seed=5)
    b = PhotoDataset(demo_categories(), size=64, placements=3, seed=5)
    c = PhotoDataset(demo_categories(), size=64, placements=3, seed=6)
    assert len(a) == 3 * len(PHOTOS) and a.photo_names == b.photo_names
    for i in (0, 4, len(a) - 1):
        (xa, ya, ma), (xb, yb, mb) = a[i], b[i]
        assert torch.equal(xa, xb) and ya == yb and torch.equal(ma, mb)
        assert not torch.equal(xa, c[i][0])
    assert not torch.equal(a[0][0], a[1][0])  # two placements of one photo differ
    # a photo's scenes do not depend on which other photos are in the set
    fruit = PhotoDataset(["fruit"], size=64, placements=3, seed=5)
    i = a.photo_names.index("apple.jpg")
    assert torch.equal(fruit[fruit.photo_names.index("apple.jpg")][0], a[i][0])


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


@pytest.mark.parametrize("size", [64, 128])
def test_mask_is_exactly_the_pasted_photo(size: int) -> None:
    ds = PhotoDataset(demo_categories(), size=size, placements=4, seed=1)
    for i in range(0, len(ds), 3):
        image, label, mask = ds[i]
        img = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        m = mask.numpy()
        y0, x0, y1, x1 = _box(m)
        h, w = y1 - y0, x1 - x0
        assert m.sum() == h * w  # a filled rectangle, fully inside the image
        assert PHOTO_SCALE[0] * size - 1 <= max(h, w) <= PHOTO_SCALE[1] * size + 1
        name = ds.photo_of(i)
        assert ds.classes[label] == PHOTOS[name]
        with Image.open(photos_dir() / name) as im:
            photo = im.convert("RGB")
        assert abs(w / h - photo.width / photo.height) < 2 / min(w, h)  # aspect kept
        expected = np.asarray(photo.resize((w, h), Image.Resampling.BILINEAR))
        assert np.array_equal(img[y0:y1, x0:x1], expected)
        # the same photo one pixel off (where the image allows) is not what the image holds: the mask is not shifted
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            if min(y0 + dy, x0 + dx) >= 0 and max(y1 + dy, x1 + dx) <= size:
                assert not np.array_equal(img[y0 + dy : y1 + dy, x0 + dx : x1 + dx], expected)


def test_classes_filter_the_photos_and_no_match_is_a_clear_error(tmp_path: Path) -> None:
    ds = PhotoDataset(["vehicle", "fruit"], placements=1)
    assert {PHOTOS[f] for f in ds.photos} == {"vehicle", "fruit"}
    assert sorted(ds.photos + ds.skipped) == sorted(PHOTOS)
    assert all(PHOTOS[f] not in ("vehicle", "fruit") for f in ds.skipped)
    assert all(ds.classes[ds[i][1]] == PHOTOS[ds.photo_of(i)] for i in range(len(ds)))
    assert ds.fingerprint()["skipped"] == ds.skipped
    with pytest.raises(ValueError, match=r"no photo .* is of the classes \['disc', 'square'\]; the photos show"):
        PhotoDataset(["disc", "square"])
    with pytest.raises(ValueError, match="placements"):
        PhotoDataset(["fruit"], placements=0)


def test_evaluate_photos_on_the_shipped_plain_checkpoint() -> None:
    from attnviz.sources.checkpoint import read_card

    path = demo_file(None)
    card = read_card(path)
    model = build_model("resnet18", None, weights=str(path))
    r = evaluate_photos(model, card["classes"], card["mean"], card["std"], card["input_size"], placements=2)
    assert 0 <= r["accuracy"] <= 1 and r["images"] == 2 * len(PHOTOS) and "predictions" not in r
    assert set(r["per_photo"]) == set(PHOTOS) and all(v in (0, 0.5, 1) for v in r["per_photo"].values())
    assert np.mean(list(r["per_photo"].values())) == pytest.approx(r["accuracy"], abs=1e-4)
    assert r["photos"]["placements"] == 2 and r["photos"]["skipped"] == []
    lo, hi = r["accuracy_ci"]  # over photos
    assert lo <= r["accuracy"] <= hi
    s = photo_summary(r)
    assert s["accuracy"] == r["accuracy"] and s["per_photo"] == r["per_photo"] and s["accuracy_ci"] == [lo, hi]
    assert s["best_block"] is None and s["average_pointing"] is None  # no attention blocks, no maps


def test_photo_summary_takes_the_best_block_not_a_stage() -> None:
    loc = {
        "layer1.0": {"pointing": 0.4, "energy": 0.3},
        "layer3.1": {"pointing": 0.7, "energy": 0.5},
        "stage1": {"pointing": 0.9, "energy": 0.3},
        "average": {"pointing": 0.95, "energy": 0.4},
    }
    s = photo_summary({"accuracy": 0.5, "localisation": loc, "per_photo": {"a.jpg": 0.5}})
    assert s["best_block"] == "layer3.1" and s["best_block_pointing"] == 0.7 and s["average_pointing"] == 0.95


@pytest.fixture()
def photo_class_scenes(tmp_path: Path, cutouts) -> Path:
    """A tiny objects/ folder (drawn cut-outs, as tests/conftest.py's scene_root) named after photo classes."""
    root = tmp_path / "scenes"
    # file names as scene_root's: the split is a hash of the name, and these put instances in every split
    cutouts(root, {"fruit": ("disc", "ellipse"), "mammal": ("square", "rectangle"), "vehicle": ("triangle", "polygon")})
    return root


def _tiny_models(scenes: Path, models: Path) -> list[str]:
    """A random plain ResNet-18 and an SE delta on it, as demo files in ``models``; returns the classes."""
    from attnviz.data import SceneConfig, SceneDataset
    from attnviz.sources.checkpoint import save_checkpoint, tensors_sha256

    train = SceneDataset(scenes, "train", 1, config=SceneConfig(size=48))
    card = {
        "arch": "resnet18",
        "classes": train.classes,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "input_size": 48,
        "data": {"train": train.fingerprint()},
    }
    plain = build_model("resnet18", num_classes=3)
    base = save_checkpoint(demo_file(None, models), plain.state_dict(), {**card, "attention": None})
    se = build_model("resnet18", "se", num_classes=3)
    delta = {k: v for k, v in se.state_dict().items() if ".attn." in k or k.startswith("fc.")}
    ref = {"file": base.name, "sha256": tensors_sha256(plain.state_dict())}
    save_checkpoint(demo_file("se", models), delta, {**card, "attention": "se", "base": ref})
    return train.classes


def test_eval_cli_reports_and_stores_real_photo_scores(photo_class_scenes: Path, tmp_path: Path) -> None:
    from attnviz.cli.main import main as cli
    from attnviz.sources.checkpoint import read_card

    models = tmp_path / "models"
    classes = _tiny_models(photo_class_scenes, models)
    out, table = tmp_path / "scores.json", tmp_path / "table.md"
    args = ["eval", "--data", str(photo_class_scenes), "--models", str(models), "--attention", "se", "--scenes", "20"]
    assert cli([*args, "--placements", "2", "--json", str(out), "--markdown", str(table), "--write-cards"]) == 0
    results = json.loads(out.read_text())
    shown = {f for f, c in PHOTOS.items() if c in classes}
    for key in ("none", "se"):
        p = results[key]["real_photos"]
        assert {"accuracy", "best_block_pointing", "average_pointing", "per_photo", "localisation"} <= set(p)
        assert 0 <= p["accuracy"] <= 1 and set(p["per_photo"]) == shown and p["images"] == 2 * len(shown)
        assert set(p["photos"]["skipped"]) == set(PHOTOS) - shown
        stored = read_card(demo_file(None if key == "none" else "se", models))
        assert stored["real_photos"]["per_photo"] == p["per_photo"] and "real_photos" not in stored["test"]
        assert "predictions" not in stored["test"] and len(results[key]["predictions"]) == 20  # per scene: JSON only
    assert "centre prior" in results["none"]["real_photos"]["baselines"]
    text = table.read_text()
    assert "real-photo top-1 %" in text and "real-photo stage-avg pointing %" in text
    assert "| baseline | pointing % | energy % | real-photo pointing % |" in text
    assert cli([*args[:-1], "4", "--no-photos", "--json", str(out), "--markdown", str(table)]) == 0
    assert "real_photos" not in json.loads(out.read_text())["se"] and "real-photo" not in table.read_text()


def test_real_photo_accuracy_interval_counts_photos_not_placements() -> None:
    """Ten photos, each right at all 40 placements or at none (what the demo networks do): the interval over photos
    is several times wider than a Wilson interval that took the 400 scenes as independent."""
    from attnviz.stats.intervals import bootstrap_mean
    from attnviz.stats.localisation import wilson

    per_photo = [1.0] * 4 + [0.0] * 6
    lo, hi = bootstrap_mean(per_photo)
    w_lo, w_hi = wilson(0.4, 400)
    assert lo < 0.4 < hi and hi - lo > 4 * (w_hi - w_lo)
    assert bootstrap_mean([1.0]) != bootstrap_mean([1.0])  # one photo: no interval (nan)


def _subset_folder(out: Path, files: list[str]) -> Path:
    """A photo folder with some of the shipped photos (and every background), its manifest cut to match."""
    out.mkdir()
    manifest = {**MANIFEST, "photos": [e for e in MANIFEST["photos"] if e["file"] in files]}
    for e in manifest["photos"] + manifest["backgrounds"]:
        (out / e["file"]).write_bytes((photos_dir() / e["file"]).read_bytes())
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_eval_cli_scores_another_photo_folder_and_refuses_a_broken_one(photo_class_scenes: Path, tmp_path) -> None:
    from attnviz.cli.main import main as cli

    models = tmp_path / "models"
    _tiny_models(photo_class_scenes, models)
    folder = _subset_folder(tmp_path / "photos", ["apple.jpg", "motorcycle.jpg"])
    out = tmp_path / "scores.json"
    args = ["eval", "--data", str(photo_class_scenes), "--models", str(models), "--attention", "se", "--scenes", "8"]
    assert cli([*args, "--placements", "2", "--photo-folder", str(folder), "--json", str(out)]) == 0
    photos = json.loads(out.read_text())["se"]["real_photos"]
    assert set(photos["per_photo"]) == {"apple.jpg", "motorcycle.jpg"} and photos["images"] == 4
    assert photos["photos"]["manifest_sha256"] != PhotoDataset(["fruit"]).manifest_sha256
    # the cards describe the shipped photos: another folder's scores are not written into them
    assert cli([*args, "--photo-folder", str(folder), "--write-cards"]) == 2
    (folder / "motorcycle.jpg").unlink()
    assert cli([*args, "--photo-folder", str(folder)]) == 2
    assert cli([*args, "--photo-folder", str(tmp_path / "nowhere")]) == 2


def test_read_manifest_names_what_is_wrong(tmp_path: Path) -> None:
    from attnviz.data.photos import read_manifest

    folder = _subset_folder(tmp_path / "photos", ["apple.jpg"])
    assert [e["file"] for e in read_manifest(folder)["photos"]] == ["apple.jpg"]
    manifest = folder / "manifest.json"
    good = manifest.read_text()
    for text, message in [
        ("{not json", "not valid JSON"),
        (json.dumps({"photos": []}), "needs 'photos'"),
        (json.dumps({**json.loads(good), "photos": [{"file": "apple.jpg"}]}), "needs 'photos'"),
        (json.dumps({**json.loads(good), "backgrounds": []}), "lists no backgrounds"),
        (
            json.dumps({**json.loads(good), "photos": [{"file": "pear.jpg", "class": "fruit"}]}),
            r"missing \['pear.jpg'\]",
        ),
    ]:
        manifest.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_manifest(folder)
        with pytest.raises(ValueError, match=message):
            PhotoDataset(["fruit"], folder=folder)
    manifest.unlink()
    with pytest.raises(ValueError, match=r"needs a manifest\.json"):
        read_manifest(folder)
