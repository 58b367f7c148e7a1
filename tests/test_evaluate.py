"""Localisation scores: pointing game and energy in mask, the baselines, and evaluate_model end to end."""

from __future__ import annotations

import pytest
import torch

from attnviz import build_model
from attnviz.data import SceneConfig, SceneDataset
from attnviz.train.evaluate import centre_prior, evaluate_model, markdown_table, score_maps, summary_row


def _mask() -> torch.Tensor:
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 2:5, 2:5] = True  # 9 of 100 pixels
    return mask


def test_pointing_game_hit_miss_and_tolerance() -> None:
    m = torch.zeros(1, 10, 10)
    m[0, 3, 3] = 1.0
    assert score_maps(m, _mask())[0].item() == 1.0
    m = torch.zeros(1, 10, 10)
    m[0, 6, 6] = 1.0  # two pixels from the mask's corner (4, 4)
    assert score_maps(m, _mask())[0].item() == 0.0
    assert score_maps(m, _mask(), tolerance=1)[0].item() == 0.0
    assert score_maps(m, _mask(), tolerance=2)[0].item() == 1.0
    flat = torch.ones(1, 10, 10)  # a flat map points nowhere: a miss even when the mask covers everything
    assert score_maps(flat, torch.ones(1, 10, 10, dtype=torch.bool))[0].item() == 0.0


def test_energy_in_mask_is_the_mass_share() -> None:
    m = torch.ones(1, 10, 10)
    assert score_maps(m, _mask())[1].item() == pytest.approx(0.09)  # a uniform map scores the mask's area
    m[0, 2:5, 2:5] = 10.0
    assert score_maps(m, _mask())[1].item() == pytest.approx(90 / (90 + 91))


def test_centre_prior_peaks_in_the_centre() -> None:
    p = centre_prior((9, 13))
    assert p.shape == (9, 13) and divmod(int(p.argmax()), 13) == (4, 6)
    assert torch.allclose(p, p.flip(0)) and torch.allclose(p, p.flip(1))


@pytest.mark.parametrize("attention", ["cbam", "mhsa", "se", "da"])
def test_evaluate_model_scores_every_stage_and_the_average(scene_root, attention: str) -> None:
    ds = SceneDataset(scene_root, "test", 6, config=SceneConfig(size=64))
    model = build_model("resnet18", attention, num_classes=3)
    r = evaluate_model(model, ds, mean=[0.5] * 3, std=[0.25] * 3, batch_size=3, baselines=True)
    assert r["images"] == 6 and 0 <= r["accuracy"] <= 1 and 0 < r["mask_share"] < 1
    loc = r["localisation"]
    stages = sorted(k for k in loc if k.startswith("stage"))
    expected = {"cbam": 4, "se": 4, "mhsa": 1, "da": 2}[attention]
    assert len(stages) == expected and "average" in loc
    assert all(0 <= v["pointing"] <= 1 and 0 <= v["energy"] <= 1 for v in loc.values())
    assert set(r["baselines"]) >= {"centre prior", "activation stage1", "activation average"}
    row = summary_row(attention, r, r)
    assert row["delta"] == 0 and row["best_stage"] in stages
    table = markdown_table([row], r["baselines"], r["mask_share"])
    assert f"| {attention} |" in table and "| centre prior |" in table


def test_findings_name_the_stages_above_and_below_the_prior() -> None:
    from attnviz.train.evaluate import findings

    row = {"stage_pointing": {"stage2": 0.85, "stage3": 0.3}, "average_pointing": 0.6, "centre_prior": 0.44}
    text = findings(row)
    assert "stage 2 85 %" in text and "centre prior 44 %" in text
    assert "Stage 2 maps find the object more often" in text and "Stage 3 maps do not beat the prior" in text
    assert findings({"stage_pointing": {}}).startswith("no spatial view")


def test_eval_cli_scores_checkpoints_and_writes_cards(scene_root, tmp_path) -> None:
    """attnviz eval on a folder of demo-style checkpoints (a backbone and a delta naming it): the table, the
    scores in each card, and the delta still loading after its base's card was rewritten."""
    from attnviz.cli.main import main as cli
    from attnviz.sources.checkpoint import read_card, save_checkpoint, tensors_sha256
    from attnviz.sources.demo import demo_file

    config = SceneConfig(size=48)
    train = SceneDataset(scene_root, "train", 1, config=config)
    card = {
        "arch": "resnet18",
        "classes": train.classes,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "input_size": 48,
        "data": {"train": train.fingerprint()},
    }
    plain = build_model("resnet18", num_classes=3)
    base = save_checkpoint(demo_file(None, tmp_path), plain.state_dict(), {**card, "attention": None})
    cbam = build_model("resnet18", "cbam", num_classes=3)
    delta = {k: v for k, v in cbam.state_dict().items() if ".attn." in k or k.startswith("fc.")}
    ref = {"file": base.name, "sha256": tensors_sha256(plain.state_dict())}
    save_checkpoint(demo_file("cbam", tmp_path), delta, {**card, "attention": "cbam", "base": ref})
    table = tmp_path / "table.md"
    args = ["eval", "--data", str(scene_root), "--models", str(tmp_path), "--attention", "cbam", "se"]
    assert cli([*args, "--scenes", "6", "--write-cards", "--markdown", str(table)]) == 0
    text = table.read_text()
    assert "| none (plain) |" in text and "| cbam |" in text and "| se |" not in text  # no se checkpoint here
    for attention in (None, "cbam"):
        scores = read_card(demo_file(attention, tmp_path))["test"]
        assert scores["images"] == 6 and scores["summary"]["attention"] == (attention or "none (plain)")
    assert "centre prior" in read_card(demo_file("cbam", tmp_path))["test"]["findings"]
    assert build_model("resnet18", "cbam", weights=str(demo_file("cbam", tmp_path))).fc.out_features == 3


def _scored(predictions: list[int], labels: list[int]) -> dict:
    """An evaluate_model(..., predictions=True) result with nothing but the top-1 (no spatial maps)."""
    hits = sum(p == y for p, y in zip(predictions, labels, strict=True))
    return {
        "accuracy": round(hits / len(labels), 4),
        "images": len(labels),
        "localisation": {},
        "baselines": {},
        "predictions": predictions,
        "labels": labels,
    }


def test_paired_delta_interval_resamples_scenes_together() -> None:
    """Two networks that agree on all but 10 of 400 scenes: the difference (-2.5 points) has a narrow paired
    interval that excludes 0, though each accuracy alone is only known to about ±5 points."""
    from attnviz.stats.localisation import wilson
    from attnviz.train.evaluate import paired_delta_ci

    labels = [i % 8 for i in range(400)]
    plain = _scored([y if i < 200 else (y + 1) % 8 for i, y in enumerate(labels)], labels)  # 50 %
    typed = _scored([y if i < 190 else (y + 1) % 8 for i, y in enumerate(labels)], labels)  # 47.5 %
    lo, hi = paired_delta_ci(typed, plain)
    assert lo < -0.025 < hi < 0 and hi - lo < 0.04
    w_lo, w_hi = wilson(0.5, 400)
    assert w_hi - w_lo > 2 * (hi - lo)
    row = summary_row("se", typed, plain)
    assert row["delta"] == -0.025 and row["delta_ci"] == [lo, hi] and row["accuracy_ci"][0] < 0.475
    assert summary_row(None, plain, plain)["delta_ci"] is None  # plain against itself: no interval
    assert paired_delta_ci(typed, {**plain, "labels": labels[::-1]}) is None  # other scenes: not paired
    assert paired_delta_ci({k: v for k, v in typed.items() if k != "predictions"}, plain) is None
    table = markdown_table([summary_row(None, plain, plain), row], {}, 0.1)
    assert f"| se | 47.5 | -2.5 [{100 * lo:+.1f}, {100 * hi:+.1f}] |" in table
    assert "| none (plain) | 50.0 | +0.0 |" in table


def test_overall_counts_types_near_plain_and_averages_photos_over_types() -> None:
    from attnviz.train.evaluate import overall

    labels = [i % 8 for i in range(400)]
    plain = _scored([y if i < 200 else (y + 1) % 8 for i, y in enumerate(labels)], labels)
    near = _scored([y if i < 195 else (y + 1) % 8 for i, y in enumerate(labels)], labels)  # -1.25: near
    far = _scored([y if i < 100 else (y + 1) % 8 for i, y in enumerate(labels)], labels)  # -25: far
    rows = [summary_row(None, plain, plain), summary_row("se", near, plain), summary_row("eca", far, plain)]
    photos = {"a.jpg": 1.0, "b.jpg": 0.0, "c.jpg": 1.0, "d.jpg": 0.0}
    results = {"se": {"real_photos": {"per_photo": photos}}, "eca": {"real_photos": {"per_photo": photos}}}
    lines = overall(rows, results)
    assert lines[0].startswith("within 3 points of plain on the test scenes: 1 of 2 types (se)")
    assert lines[0].endswith("with the whole paired interval: 1 (se)")
    assert lines[1].startswith("real photos, top-1 averaged over the 2 types: 50.0 % [") and "over 4 photos" in lines[1]
    assert overall(rows[:1], {}) == []
