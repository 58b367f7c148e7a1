"""Networks shaped like public repositories' (tests/repo_nets.py) through the command line and the library, as their
owners run them (issue 18): a fixed pooling head, a detector's output, a shared SE feeding a softmax, a token
softmax, a network without attention; and the pointing game's ties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import attnviz
from attnviz import AttentionRecorder
from attnviz.cli.main import main
from attnviz.stats.localisation import score_maps
from tests.images import ASSET

NETS = Path(__file__).with_name("repo_nets.py")


def _spec(name: str) -> str:
    return f"{NETS}:{name}"


def _render(tmp_path: Path, name: str, *extra: str) -> tuple[int, dict]:
    out = tmp_path / name
    rc = main(["render", str(ASSET), "--model", _spec(name), "--out", str(out), "--workers", "0", *extra])
    results = list(out.glob("*/result.json"))
    return rc, json.loads(results[0].read_text()) if results else {}


def test_a_fixed_pooling_head_is_found_and_rendered(tmp_path, capsys) -> None:
    """The CBAM authors' ResidualNet ends in nn.AvgPool2d(7): it runs at 224 px only. Loading finds that size
    (it used to warm up at 64 px and fail), and every image is stretched to it."""
    model = attnviz.load_model(_spec("residualnet"))
    meta = model.weights_meta
    assert meta["input_size"] == [224, 224] and meta["fixed_input_size"] is True
    assert "AvgPool2d(7)" in model.input_note
    rc, result = _render(tmp_path, "residualnet")
    assert rc == 0, capsys.readouterr().err
    assert result["image"]["input_size"] == [224, 224]  # the cat photo is not square: stretched to the pool's size
    kinds = [m["kind"] for m in result["maps"]]
    assert kinds == ["channel", "spatial"] * 3
    assert [m["shape"] for m in result["maps"] if m["kind"] == "spatial"] == [[28, 28], [14, 14], [7, 7]]


def test_a_declared_size_is_used_and_a_wrong_one_is_named(tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match=r"at the declared size; at 64 x 64.*--size N"):
        attnviz.load_model(_spec("residualnet"), input_size=64)
    rc, _ = _render(tmp_path, "residualnet", "--size", "64")
    err = capsys.readouterr().err
    assert rc == 2 and "64 x 64" in err and "--size" in err
    model = attnviz.load_model(_spec("plain_cnn"), input_size=96)  # any size runs: the declared one is kept
    assert model.weights_meta["input_size"] == [96, 96] and model.weights_meta["fixed_input_size"] is False


def test_a_detector_renders_its_maps_without_predictions(tmp_path, capsys) -> None:
    """A detection output is not logits: maps, no predictions, said once; the head's cls.sigmoid() inside
    torch.cat((box, cls.sigmoid()), 1) is the output activation, not attention (it used to be 'unclassified', and
    render crashed on result.predictions[0])."""
    rc, result = _render(tmp_path, "detector", "--checks")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "no predictions" in captured.out
    assert captured.err.count("not class logits") == 1 and "ablation and Grad-CAM skipped" in captured.err
    assert result["predictions"] == [] and result["unclassified"] == []
    # the checks that need no class ran: the randomisation check per block, no ablation
    assert set(result["checks"]) == {"backbone.2", "backbone.4"} and result["checks_all_off"] is None
    assert all("randomised" in c and "ablation" not in c for c in result["checks"].values())
    assert "not class logits" in result["checks_info"]["note"]
    assert [m["name"] for m in result["maps"]] == ["backbone.2.sigmoid()", "backbone.4.sigmoid()"]  # SE: sites
    (skip,) = result["skipped"]
    assert skip["site"] == "detect.sigmoid()" and "output activation" in skip["why"]


def test_the_app_checks_a_detector_without_a_class(tmp_path) -> None:
    from attnviz.app.config import AppConfig
    from attnviz.app.handlers import Handlers

    spec = _spec("detector")
    app = Handlers(AppConfig(device="cpu", offline=True, export_root=tmp_path / "exports", served=spec, model=spec))
    state, predictions, *_ = app.run_analysis(str(ASSET), "none", spec, "random")
    assert not predictions
    state, chart, view, cam, randomised, text, sanity = app.run_checks(state, "turbo", 0.5, "map", None)
    assert chart is None and cam is None and view is not None and randomised is not None
    assert "ablation and Grad-CAM skipped" in text and "Sanity check" in sanity


def test_a_shared_se_feeding_a_softmax_is_part_of_it() -> None:
    """EPSANet: one SE module's sigmoid, called four times per block, only feeds the softmax across scales, which
    weights the features: 2 branch maps, not 8 channel maps beside them."""
    model = attnviz.load_model(_spec("epsanet"))
    with AttentionRecorder(model) as rec, torch.inference_mode():
        model(torch.randn(1, 3, 64, 64))
    assert [(m.name, m.kind, tuple(m.data.shape)) for m in rec.maps] == [
        ("psa1.softmax", "branch", (1, 4, 16)),
        ("psa2.softmax", "branch", (1, 4, 16)),
    ]
    parts = [s for s in rec.skipped if "part of psa" in s[2]]
    assert len(parts) == 8 and all(s[0].startswith(("psa1.se", "psa2.se")) for s in parts)
    assert rec.unclassified == []


def test_empty_and_unreadable_results_are_loud(tmp_path, capsys) -> None:
    rc, result = _render(tmp_path, "plain_cnn")
    err = capsys.readouterr().err
    assert rc == 0 and result["maps"] == []
    assert "no attention found in this network" in err and result["capture_warning"].startswith("no attention found")
    rc, result = _render(tmp_path, "tiny_vit")  # token attention (issue 20): a class token + the 14 x 14 patch grid
    capsys.readouterr()
    (m,) = result["maps"]
    assert rc == 0 and m["kind"] == "token" and m["prefix"] == 1 and not result["unclassified"]
    rc, result = _render(tmp_path, "pooled_vit")
    err = capsys.readouterr().err
    assert rc == 0 and result["maps"] == []
    assert "could not read" in err and "could not read" in result["capture_warning"]
    (u,) = result["unclassified"]
    assert u["site"] == "attn.softmax()" and u["shape"][:2] == [1, 3] and u["why"]  # 1 + a pooled grid
    assert main(["inspect", "--model", _spec("pooled_vit")]) == 0
    assert "warning: no attention map: attnviz could not read" in capsys.readouterr().out


def test_the_status_line_says_what_the_maps_leave_out(tmp_path) -> None:
    from attnviz.app.config import AppConfig
    from attnviz.app.handlers import Handlers

    spec = _spec("plain_cnn")
    app = Handlers(AppConfig(device="cpu", offline=True, export_root=tmp_path / "exports", served=spec, model=spec))
    _state, *out = app.run_analysis(str(ASSET), "none", spec, "random")
    assert "no attention found in this network" in out[7]  # the status line (the Head choice follows it)


def test_declarations_mean_what_they_say_or_are_refused() -> None:
    """Declaring a token softmax (1, 3, 197, 197) as memory drew 3 heads as units on a 197 x 197 grid; as pairwise it
    was refused without a reason that helps. Now each is read as its kind's contract says, or refused saying why."""
    model = attnviz.load_model(_spec("tiny_vit"))
    x = torch.randn(1, 3, 224, 224)
    why = {}
    for kind in ("memory", "spatial", "channel", "branch", "pairwise"):
        with AttentionRecorder(model, sites={"attn.softmax()": kind}) as rec, torch.inference_mode():
            model(x)
        assert rec.maps == [], kind
        ((name, shape, why[kind]),) = rec.unclassified
        assert name == "attn.softmax()" and shape == (1, 3, 197, 197)
    assert "tokens (1, 197, 24), not a feature map" in why["memory"]
    assert "do not sum to 1 over the branches" in why["branch"]
    assert "1 prefix token(s)" in why["pairwise"] and "14 x 14 grid" in why["pairwise"]
    # a declaration that holds: the ResidualNet's spatial gate function, declared, is read as it was found
    net = attnviz.load_model(_spec("residualnet"))
    with AttentionRecorder(net, sites={"layer3.sa.sigmoid()": "spatial"}) as rec, torch.inference_mode():
        net(x)
    got = {m.name: (m.kind, tuple(m.data.shape)) for m in rec.maps}
    assert got["layer3.sa.sigmoid()"] == ("spatial", (1, 7, 7)) and rec.unclassified == []


def test_pointing_ties_are_scored_explicitly() -> None:
    """Two equal maxima, one inside the mask: half a hit, whichever comes first in memory (argmax gave 1 or 0
    depending on float reduction order)."""
    m = torch.zeros(2, 4, 4)
    m[:, 0, 0] = m[:, 3, 3] = 1.0
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True  # the first peak inside
    mask[1, 3, 3] = True  # the second peak inside
    hits, _ = score_maps(m, mask)
    assert hits.tolist() == [0.5, 0.5]
    m[1, 3, 3] = 1.0 - 1e-7  # float noise is a tie too
    assert score_maps(m, mask)[0].tolist() == [0.5, 0.5]
    m[1, 3, 3] = 0.9  # a clear single peak scores 0 or 1
    assert score_maps(m, mask)[0].tolist() == [0.5, 0.0]


def test_stats_say_what_they_lack(tmp_path, capsys) -> None:
    """attnviz stats on a detector (no accuracy) and on a network whose attention it cannot read says so once, in
    its output, summary.json and report.md."""
    import shutil

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        shutil.copy(ASSET, tmp_path / "data" / cls / "x.jpg")
    expected = {"detector": "not class logits", "pooled_vit": "could not read"}
    for name, words in expected.items():
        out = tmp_path / name
        assert main(["stats", str(tmp_path / "data"), "--model", _spec(name), "--out", str(out), "--workers", "0"]) == 0
        assert capsys.readouterr().out.count(words) == 1
        (note,) = json.loads((out / "summary.json").read_text())["run"]["notes"]
        assert words in note and words in (out / "report.md").read_text()
