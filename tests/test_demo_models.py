"""The shipped demo checkpoints (models/): one per attention type, small, self-describing, loading
offline with the measured scores in their cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnviz import analyze, build_model
from attnviz.data import SceneConfig
from attnviz.sources.checkpoint import read_card
from attnviz.sources.demo import DEMO_ARCH, demo_dir, demo_file
from attnviz.sources.select import demo_attentions
from attnviz.train.evaluate import evaluate_photos

NAMES = [None, *demo_attentions()]  # what the page runs on the demo weights (sk, epsa: sk_pre, epsa_pre)
ROOT = Path(__file__).resolve().parent.parent


def test_models_folder_is_small_and_complete() -> None:
    files = sorted(demo_dir().glob("*"))
    assert sum(f.stat().st_size for f in files) < 64e6  # sk_pre, epsa_pre: 13 + 19 MB of trained dense 3x3 branches
    for attention in NAMES:
        path = demo_file(attention)
        assert path.is_file(), f"missing demo checkpoint {path.name}"
        assert json.loads(path.with_suffix(".json").read_text()) == read_card(path)


@pytest.mark.parametrize("attention", NAMES)
def test_demo_checkpoint_loads_with_its_card(attention: str | None) -> None:
    card = read_card(demo_file(attention))
    assert card["arch"] == DEMO_ARCH and card["attention"] == attention
    assert len(card["classes"]) == 8 and card["input_size"] >= 96
    assert card["training"]["history"] and card["training"]["device"]
    test = card["test"]
    assert 0 < test["accuracy"] <= 1 and test["images"] >= 500
    recipe = SceneConfig.from_dict(card["data"]["train"]["config"])
    assert SceneConfig.from_dict(test["test_split"]["config"]) == recipe.held_out()  # without training augmentation
    photos = card["real_photos"]
    assert 0 <= photos["accuracy"] <= 1 and photos["images"] >= 80
    assert {"chelsea.jpg", "motorcycle.jpg", "flower.jpg"} <= set(photos["per_photo"])
    if attention is not None:
        assert card["base"]["file"] == demo_file(None).name
        spatial = [k for k in test["localisation"] if k.startswith("stage")]
        assert spatial, "every attention type yields a spatial view"
    model = build_model(DEMO_ARCH, attention, weights="demo")
    assert model.fc.out_features == 8 and not model.untrained_attention
    assert model.weights_meta["categories"] == card["classes"]
    with torch.inference_mode():
        assert torch.isfinite(model(torch.rand(1, 3, 128, 128))).all()


def test_app_default_is_trained() -> None:
    result = analyze(ROOT / "assets" / "chelsea_cat.jpg", attention="cbam", weights="demo")
    assert not result.warning and result.model["measured"]["stage_pointing"]
    assert result.predictions[0][0] in read_card(demo_file("cbam"))["classes"]


def test_demo_refuses_what_was_not_shipped() -> None:
    with pytest.raises(ValueError, match="demo checkpoints are resnet18 only, not resnet50"):
        build_model("resnet50", "cbam", weights="demo")
    with pytest.raises(ValueError, match="these weights have 8 classes, not num_classes=1000"):
        build_model("resnet18", "cbam", weights="demo", num_classes=1000)


def test_real_photo_scores_in_the_card_are_reproducible() -> None:
    """Re-measuring the plain checkpoint on the real photos gives the numbers its card and the README carry."""
    card = read_card(demo_file(None))
    stored = card["real_photos"]
    model = build_model(DEMO_ARCH, None, weights="demo")
    torch.manual_seed(0)
    fresh = evaluate_photos(
        model, card["classes"], card["mean"], card["std"], card["input_size"],
        placements=stored["photos"]["placements"], seed=stored["photos"]["seed"],
    )  # fmt: skip
    assert fresh["accuracy"] == pytest.approx(stored["accuracy"], abs=1e-3)
    assert fresh["per_photo"] == pytest.approx(stored["per_photo"], abs=1e-3)


def test_status_line_carries_the_real_photo_score() -> None:
    from attnviz.app.status import measured_line

    result = analyze(ROOT / "assets" / "rocket.jpg", attention="se", weights="demo", size=96)
    measured = result.model["measured"]
    card = read_card(demo_file("se"))
    assert measured["real_photos_accuracy"] == card["real_photos"]["accuracy"]
    assert measured["accuracy"] == card["test"]["summary"]["accuracy"]
    line = measured_line(measured)
    assert f"real photos pasted on textures: top-1 {100 * card['real_photos']['accuracy']:.0f} %" in line


def _runs(card: dict) -> list[dict]:
    """The card's own run, then each earlier run it continued from, innermost (the first run) last."""
    runs, link = [card], card.get("continued_from")
    while link:
        runs.append(link)
        link = link.get("continued_from")
    return runs


def test_continued_run_keeps_every_earlier_run() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("attnviz_train_demo", ROOT / "scripts" / "train_demo.py")
    train_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_demo)
    first = {"val_acc": 0.3, "training": {"epochs": 1}, "test": {"accuracy": 0.3}}
    second = {"val_acc": 0.4, "training": {"epochs": 2}, "continued_from": train_demo._continued_from(first)}
    third = train_demo._continued_from(second)  # what a third run's card records
    assert [r["val_acc"] for r in _runs({"continued_from": third})[1:]] == [0.4, 0.3]
    assert "test" not in third["continued_from"]  # scores of an earlier file are not carried over


def test_block_continued_on_a_new_backbone_has_no_floor() -> None:
    """A block's earlier score was measured with its old backbone: it guards a continuation on the same backbone,
    and is no bar for one on a retrained backbone (else the old block would stay beside a backbone it never saw)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("attnviz_train_demo", ROOT / "scripts" / "train_demo.py")
    train_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_demo)
    previous = {"val_acc": 0.47, "training": {"epochs": 2}, "base": {"file": "b.safetensors", "sha256": "aa"}}
    same = train_demo._continued_from(previous, backbone_sha256="aa")
    assert "other_backbone" not in same and train_demo._floor(same) == 0.47
    other = train_demo._continued_from(previous, backbone_sha256="bb")
    assert other["other_backbone"] == previous["base"] and other["val_acc"] == 0.47  # the record is kept
    assert train_demo._floor(other) == -1.0
    assert train_demo._floor(train_demo._continued_from({"val_acc": 0.4})) == 0.4  # a backbone's own continuation


@pytest.mark.parametrize("attention", [n for n in NAMES if n])
def test_shipped_cards_keep_their_first_run(attention: str) -> None:
    runs = _runs(read_card(demo_file(attention)))
    for run in runs:
        assert 0 < run["val_acc"] <= 1 and run["training"]["epochs"] >= 1
    # a continued file only replaces one it beat on validation, so the scores rise along the chain, except where a
    # block was continued on a retrained backbone (its record names the old one): that score is no floor
    cut = next((i for i, r in enumerate(runs) if r.get("other_backbone")), len(runs))
    for part in (runs[:cut], runs[cut:]):
        assert [r["val_acc"] for r in part] == sorted((r["val_acc"] for r in part), reverse=True)
    assert runs[-1]["training"]["lr"] in (1e-3, 2e-3)  # the block's first run (README, "Training")
    if attention == "coord":  # 1 epoch, then 2 + 2 + 2 more, then 1 on the retrained backbone (README, "Training")
        assert [r["training"]["epochs"] for r in runs] == [1, 2, 2, 2, 1]
        assert [bool(r.get("other_backbone")) for r in runs] == [False, True, False, False, False]
