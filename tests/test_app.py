"""The app through its public API (gradio_client against a real server) and its handlers directly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file

from attnviz.app import AppConfig, Handlers
from attnviz.app.choices import arch_choices
from attnviz.app.components import DisplayGallery
from tests.images import ASSET

# the page's outputs after the state: predictions, the demo note, gallery, block, big, chart, detail, status
PRED, NOTE, GALLERY, BLOCK, BIG, CHART, DETAIL, STATUS, HEAD = range(9)


@pytest.fixture(scope="module")
def client(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(app_url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture()
def app(tmp_path: Path) -> Handlers:
    """The page's handlers for an offline configuration on the CPU, with its own export folder."""
    return Handlers(AppConfig(device="cpu", offline=True, export_root=tmp_path / "exports"))


def _check_ok(out: tuple, n_overlays: int | None = None, trained: bool = True) -> None:
    predictions, note, gallery, _block, _big, _chart, _detail, status, *_head = out
    assert len(predictions["confidences"]) == 5
    assert gallery and all(Path(item["image"]).stat().st_size > 0 for item in gallery)
    if n_overlays is not None:
        assert len(gallery) == n_overlays
    assert "device: cpu" in status
    if trained:  # the default: the shipped demo checkpoint, with its measured scores, and what it knows
        assert "weights: demo (resnet18-scenes-" in status and "measured on held-out scenes" in status
        assert "untrained" not in status
        assert "demo network: 8 categories" in note and "mammal" in note
    else:
        assert "untrained: maps are not meaningful" in status and not note


def test_analyze_endpoint(client: Client) -> None:
    out = client.predict(handle_file(ASSET), "cbam", api_name="/analyze")
    _check_ok(out, n_overlays=8)
    chart = out[CHART]  # a chart update: its table and its axis (sigmoid gates: 0..1)
    assert chart["value"]["columns"][:3] == ["channel", "index", "weight"] and len(chart["value"]["data"]) == 32
    assert chart["y_lim"] == [0.0, 1.0]
    out = client.predict(handle_file(ASSET), "da", "resnet18", "random", api_name="/analyze")
    _check_ok(out, trained=False)


def test_no_image_gives_a_clear_message(app: Handlers) -> None:
    import gradio as gr

    with pytest.raises(gr.Error, match="Upload an image first"):
        app.run_analysis(None, "se")


def test_display_change_does_not_rerun_the_model(app: Handlers, monkeypatch: pytest.MonkeyPatch) -> None:
    import attnviz.app.handlers as handlers

    state, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "random", "turbo", 0.5, "map", "32", None)
    calls = []
    monkeypatch.setattr(handlers, "analyze", lambda *a, **k: calls.append(1))
    out = app.render_outputs(state, "gray", 1.0, "network", "all", None)
    assert not calls
    big = out[BIG]
    assert big.shape == (300, 451, 3)
    assert (big[..., 0] == big[..., 1]).all() and (big[..., 1] == big[..., 2]).all()  # gray colormap, alpha 1
    assert app.store.count() == 0  # rendering writes no file: exports are made when asked for
    png = app.make_png(state, "gray", 1.0, "network", None)
    zip_path = app.make_zip(state, "gray", 1.0, "network", "all")
    assert Path(png).stat().st_size > 0 and Path(zip_path).suffix == ".zip" and app.store.count() == 2


def test_gate_chart_axis_is_0_to_1_unless_fit_to_data(app: Handlers) -> None:
    state, *out = app.run_analysis(ASSET, "se", "resnet18", "demo", "turbo", 0.5, "map", "32", None)
    assert out[CHART].y_lim == [0.0, 1.0]
    assert "channel gate: range " in out[STATUS]
    fit = app.render_outputs(state, "turbo", 0.5, "map", "32", None, "fit to data")
    lo, hi = fit[CHART].y_lim
    gate = next(m for m in state.result.maps if m.block == "layer4.1").data
    pad = (float(gate.max()) - float(gate.min())) * 0.05
    assert (lo, hi) == pytest.approx((float(gate.min()) - pad, float(gate.max()) + pad))  # the gate's own range


def test_click_picks_the_pairwise_query(app: Handlers) -> None:
    import gradio as gr

    state, *first = app.run_analysis(ASSET, "mhsa", "resnet18", "random", "turbo", 1.0, "map", "32", None)
    assert state.query is None
    assert "query (4, 6)" in first[GALLERY][-1][1]  # the default query: the centre cell of layer4's 8x13 grid
    click = gr.SelectData(None, {"index": [0, 0], "value": None, "selected": True})
    new_state, *out = app.pick_query(state, "turbo", 1.0, "map", "32", None, "0–1", click)
    assert new_state.query == (0.0, 0.0)
    assert not np.array_equal(out[BIG], first[BIG])  # the large view now shows the top-left query's attention
    assert "query (0, 0)" in out[GALLERY][-1][1]  # the gallery caption names the query cell


def test_large_images_are_shown_at_display_sizes(app: Handlers, tmp_path: Path) -> None:
    import gradio as gr
    from PIL import Image

    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 2400, 3), dtype=np.uint8)).save(path)
    state, *out = app.run_analysis(str(path), "mhsa", "resnet18", "random", "turbo", 0.5, "map")
    assert out[BIG].shape == (667, 1600, 3)  # the large view: longest side VIEW_SIDE, aspect kept
    assert all(img.shape == (333, 800, 3) for img, _ in out[GALLERY])  # thumbnails: GALLERY_SIDE
    click = gr.SelectData(None, {"index": [1599, 666], "value": None, "selected": True})
    new_state, *_ = app.pick_query(state, "turbo", 0.5, "map", "32", None, "0–1", click)
    assert new_state.query == (1599 / 1600, 666 / 667)  # fractions of the view the click came from
    files = DisplayGallery().postprocess(out[GALLERY][:2])
    assert [Path(item.image.path).suffix for item in files.root] == [".jpg", ".jpg"]
    from attnviz.app.components import DisplayImage, DisplayPhoto

    photo = DisplayPhoto().postprocess(out[BIG])  # a view over the photo: JPEG, visually lossless
    chart = DisplayImage().postprocess(out[BIG])  # charts and matrices: lossless PNG
    assert Path(photo.path).suffix == ".jpg" and Path(chart.path).suffix == ".png"
    back = np.asarray(Image.open(photo.path).convert("RGB"), dtype=np.int16)
    assert back.shape == out[BIG].shape and np.abs(back - out[BIG]).mean() < 6.0  # pure noise: JPEG's worst case


def test_typed_checkpoint_paths_only_on_loopback(app: Handlers) -> None:
    """A path typed into the Weights field reads the server's disk: refused unless the configuration says loopback
    and the server really listens there (build_demo().launch(server_name="0.0.0.0") must not open it)."""
    import gradio as gr

    public = Handlers(dataclasses.replace(app.config, host="0.0.0.0"))
    with pytest.raises(gr.Error, match=r"accepted only when the app is bound to 127\.0\.0\.1"):
        public.run_analysis(ASSET, "cbam", "resnet18", "/etc/passwd.pt")
    app.server_name = "0.0.0.0"  # configured for loopback, launched on every interface
    with pytest.raises(gr.Error, match=r"accepted only when the app is bound to 127\.0\.0\.1"):
        app.run_analysis(ASSET, "cbam", "resnet18", "/etc/passwd.pt")
    app.server_name = "127.0.0.1"
    with pytest.raises(gr.Error, match="checkpoint not found"):
        app.run_analysis(ASSET, "cbam", "resnet18", "/nonexistent/x.safetensors")


def test_zip_is_made_once_per_result_and_settings(app: Handlers) -> None:
    state, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "random", "turbo", 0.5, "map", "32", None)
    zip_a = app.make_zip(state, "turbo", 0.5, "map", "32")
    assert app.make_zip(state, "turbo", 0.5, "map", "32") == zip_a  # asked again: the same file
    png_a = app.make_png(state, "turbo", 0.5, "map", "layer1.0.attn.spatial.tap")
    png_b = app.make_png(state, "turbo", 0.5, "map", "layer4.1.attn.spatial.tap")
    assert png_a != png_b and Path(png_a).name == "layer1.0_spatial.png"
    assert app.make_zip(state, "gray", 0.5, "map", "32") != zip_a  # another colormap: a new zip
    state2, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "random", "turbo", 0.5, "map", "32", None)
    assert app.make_zip(state2, "turbo", 0.5, "map", "32") != zip_a  # another result: a new zip


def test_imagenet_weights_pick_the_best_pretrained_network() -> None:
    """The page runs what the library's selection policy chooses (attnviz.sources.select)."""
    from attnviz.sources.select import choose_network as choice

    assert choice("se", "resnet50", "imagenet") == (None, "seresnet50.ra2_in1k", "imagenet")
    assert choice("mhsa", "resnet18", "imagenet") == (None, "botnet26t_256.c1_in1k", "imagenet")
    assert choice("cbam", "resnet50", "imagenet") == ("cbam", "resnet50", "imagenet")  # backbone + untrained block
    assert choice("se", "resnet18", "demo") == ("se", "resnet18", "demo")
    assert choice("epsa", "resnet50", "imagenet") == ("epsa_pre", "resnet50", "imagenet")  # pretrained 3x3 kept
    assert choice("epsa", "resnet18", "demo") == ("epsa_pre", "resnet18", "demo")  # what the demo ships
    assert choice("epsa", "resnet50", "random") == ("epsa", "resnet50", "random")


def test_only_listed_networks_load_from_the_page(app: Handlers, tmp_path: Path) -> None:
    """A model spec that is not in the list (a user's file) is refused from the page; the network served with
    --model (here a model file, with its labels) is listed first and loads."""
    import gradio as gr

    src = tmp_path / "served_net.py"
    src.write_text(
        "from torch import nn\n"
        "class SE(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.fc = nn.Conv2d(8, 8, 1); self.sigmoid = nn.Sigmoid()\n"
        "    def forward(self, x):\n"
        "        return x * self.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))\n"
        "def build():\n"
        "    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)]\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), SE(), *head)\n"
    )
    labels = tmp_path / "labels.json"
    labels.write_text('["left", "right"]')
    spec = f"{src}:build"
    with pytest.raises(gr.Error, match="unknown network"):
        app.run_analysis(ASSET, "cbam", spec, "random")
    served = Handlers(dataclasses.replace(app.config, served=spec, model=spec, labels=str(labels)))
    assert arch_choices(served.config)[0] == (f"{spec} (served)", spec)
    state, predictions, *_ = served.run_analysis(ASSET, "none", spec, "random")
    assert set(predictions) == {"left", "right"}
    assert [m.name for m in state.result.maps] == ["1.sigmoid"]


def test_zip_details_are_the_page_details(app: Handlers) -> None:
    """One table per kind (attnviz.capture.kinds): the zip's detail drawings are the page's, per-head pairwise maps
    included (they used to differ)."""
    import io

    from PIL import Image

    from attnviz.export import export_files

    state, *out = app.run_analysis(ASSET, "mhsa", "resnet18", "random", "turbo", 0.5, "map", "32", None)
    files = dict(export_files(state.result, {"cmap": "turbo", "alpha": 0.5, "norm": "map", "topk": 32}))
    name = sorted(n for n in files if n.startswith("charts/") and n.endswith("_pairwise.png"))[-1]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(files[name])).convert("RGB")), out[DETAIL])


# -- checks, compare, live panel, dataset tab (issues 13 and 14) ------------------------------------------------------
# the Checks panel's outputs: ablation chart, block view, Grad-CAM, randomised view, scores, sanity line
CH_CHART, CH_VIEW, CH_CAM, CH_RAND, CH_SCORES, CH_SANITY = range(6)


def _png_size(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def test_checks_panel_shows_ablation_gradcam_and_sanity(app: Handlers) -> None:
    """The Checks button runs attnviz.checks on the kept result: the ablation chart, the selected block's view and
    its Grad-CAM drawn with one normalisation and overlay, the randomised view, the scores and the sanity line; a
    display change redraws them from the kept checks; a new analysis clears them; the zip carries them."""
    import json
    import zipfile

    from attnviz.app.panels import panel_image
    from attnviz.render import normalize, overlay

    state, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "demo", "turbo", 0.5, "map", "32", None)
    before = app.render_checks(state, "turbo", 0.5, "map", None)
    assert before[CH_CHART] is None and "Run checks" in before[CH_SCORES]
    key = "layer2.1.attn.spatial.tap"
    state, *out = app.run_checks(state, "turbo", 0.5, "map", key)
    checks = state.result.checks
    c = checks.blocks["layer2.1.attn"]
    w, h = _png_size(out[CH_CHART])
    assert w > 300 and h > 200
    image = panel_image(state.result.image)
    np.testing.assert_array_equal(out[CH_VIEW], overlay(image, normalize([c.view], "map")[0], "turbo", 0.5))
    np.testing.assert_array_equal(out[CH_CAM], overlay(image, normalize([c.gradcam], "map")[0], "turbo", 0.5))
    np.testing.assert_array_equal(out[CH_RAND], overlay(image, normalize([c.randomised], "map")[0], "turbo", 0.5))
    text = out[CH_SCORES]
    assert "**layer2.1.attn**" in text and f"Δ {c.ablation.top1_prob_delta:+.3f}" in text
    assert f"| {c.gradcam_scores['spearman']:+.2f} | {c.gradcam_scores['top20_iou']:.2f} |" in text
    assert f"| {c.randomised_scores['spearman']:+.2f} | {c.randomised_scores['top20_iou']:.2f} |" in text
    assert c.randomised_scores["spearman"] <= 0.8 and "Sanity check passed" in out[CH_SANITY]
    # another block, another colormap: drawn from the kept checks, no model run
    again = app.render_checks(state, "gray", 1.0, "map", "layer4.1.attn.spatial.tap")
    assert "**layer4.1.attn**" in again[CH_SCORES] and not np.array_equal(again[CH_VIEW], out[CH_VIEW])
    assert state.result.checks is checks
    with zipfile.ZipFile(app.make_zip(state, "turbo", 0.5, "map", "32")) as zf:
        assert "checks/ablation.png" in zf.namelist()
        assert "layer2.1.attn" in json.loads(zf.read("result.json"))["checks"]
    fresh, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "demo", "turbo", 0.5, "map", "32", None)
    assert app.render_checks(fresh, "turbo", 0.5, "map", key)[CH_VIEW] is None  # a new result has no checks yet


def test_checks_faithfulness_on_request(app: Handlers) -> None:
    """The Checks tab's faithfulness box: off (the default), the checks have no curves; on, every block has the
    deletion/insertion/ROAD curves of its view, Grad-CAM, the centre prior and the random map, drawn below the
    ablation bars."""
    state, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "demo", "turbo", 0.5, "map", "32", None)
    key = "layer2.1.attn.spatial.tap"
    state, *plain = app.run_checks(state, "turbo", 0.5, "map", key)
    assert all(c.faithfulness is None for c in state.result.checks.blocks.values())
    state, *out = app.run_checks(state, "turbo", 0.5, "map", key, True)
    c = state.result.checks.blocks["layer2.1.attn"]
    assert set(c.faithfulness) == {"attention", "gradcam", "centre", "random"}
    (w0, h0), (w1, h1) = _png_size(plain[CH_CHART]), _png_size(out[CH_CHART])
    assert w1 >= w0 and h1 > h0  # the curves below the bars


def test_checks_panel_warns_when_the_map_ignores_the_weights(app: Handlers) -> None:
    """SimAM's map has no weights of its own: it is kept exactly when the weights are randomised down to the block,
    so the sanity line is the warning. SE's view (its gate effect) follows its gate and passes."""
    state, *_ = app.run_analysis(ASSET, "simam", "resnet18", "demo", "turbo", 0.5, "map", "32", None)
    state, *out = app.run_checks(state, "turbo", 0.5, "map", None)
    c = state.result.checks.blocks["layer4.1.attn"]
    assert c.randomised_scores["spearman"] > 0.8 and c.warning
    assert out[CH_SANITY].startswith("⚠️") and c.warning in out[CH_SANITY]
    state, *_ = app.run_analysis(ASSET, "se", "resnet18", "demo", "turbo", 0.5, "map", "32", None)
    state, *out = app.run_checks(state, "turbo", 0.5, "map", None)
    c = state.result.checks.blocks["layer4.1.attn"]
    assert c.randomised_scores["spearman"] <= 0.8 and not c.warning and "Sanity check passed" in out[CH_SANITY]


def test_compare_gives_two_maps_on_one_scale_and_their_difference(app: Handlers) -> None:
    import gradio as gr

    from attnviz.app.panels import panel_image
    from attnviz.render import overlay

    state, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "demo", "turbo", 0.5, "map", "32", None)
    with pytest.raises(gr.Error, match="shown already"):
        app.run_compare(state, "attention:cbam", "turbo", 0.5)
    with pytest.raises(gr.Error, match="from the list"):
        app.run_compare(state, "network:/etc/passwd", "turbo", 0.5)
    state, a, b, diff, text, pairs = app.run_compare(state, "attention:se", "turbo", 0.5)
    cmp = state.compare
    assert cmp.b.model["attention"] == "se" and cmp.b.settings["weights"] == "demo" and cmp.unit == "block"
    assert pairs.choices == [(k, k) for k in [p.key for p in cmp.pairs]] and pairs.value == "layer4.1"
    p = cmp.pairs[-1]
    image = panel_image(state.result.image)
    np.testing.assert_array_equal(a, overlay(image, p.a, "turbo", 0.5))
    np.testing.assert_array_equal(b, overlay(image, p.b, "turbo", 0.5))
    assert diff.shape == a.shape and not np.array_equal(diff, a)
    assert "resnet18 · se · demo" in text and f"| layer4.1 | {p.scores['spearman']:+.2f} |" in text
    first = app.render_compare(state, "turbo", 0.5, "layer1.0")
    assert first[4].value == "layer1.0" and first[0].shape == a.shape and not np.array_equal(first[0], a)
    # another network keeps the attention type; the demo checkpoint is resnet18's, so it gets random weights
    assert app._other_side(state.result, "network:resnet34") == ("cbam", "resnet34", "random")
    fresh, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "demo", "turbo", 0.5, "map", "32", None)
    assert app.render_compare(fresh, "turbo", 0.5, None)[0] is None  # a new result: the old comparison is gone


def test_live_panel_counts_hooks_and_splits_latency(app: Handlers) -> None:
    from attnviz.pipeline.core import DEFAULT_CACHE

    state, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "demo", "turbo", 0.5, "map", "32", None)
    text = app.live_panel(state)
    assert "hooks installed now: 0**" in text and "peak GPU memory: no GPU (device cpu)" in text
    for part in ("decode", "forward", "capture", "render"):
        assert f"{part} " in text.split("last analysis:")[1].split("\n")[0]
    assert "ResNet · cbam · demo (resnet18-scenes-cbam.safetensors)" in text
    model = DEFAULT_CACHE.models()[-1]
    handle = model.layer1.register_forward_hook(lambda *a: None)  # one left behind: the panel must say so
    try:
        assert "hooks installed now: 1** (1 on the cached models' modules, 0 global)" in app.live_panel(state)
    finally:
        handle.remove()
    from torch.nn.modules.module import register_module_forward_hook

    handle = register_module_forward_hook(lambda *a: None)  # a global one counts too
    try:
        assert "hooks installed now: 1** (0 on the cached models' modules, 1 global)" in app.live_panel(state)
    finally:
        handle.remove()
    assert "hooks installed now: 0**" in app.live_panel(state)


@pytest.fixture(scope="module")
def stats_folder(scene_root, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `attnviz stats` run on 6 generated 32-px scenes (random weights: fast)."""
    from PIL import Image

    from attnviz.cli.main import main as cli
    from attnviz.data import SceneConfig, SceneDataset

    data = tmp_path_factory.mktemp("stats_data")
    ds = SceneDataset(scene_root, "test", 6, config=SceneConfig(size=32))
    for i in range(len(ds)):
        s = ds.scene(i)
        (data / ds.classes[s.label]).mkdir(exist_ok=True)
        Image.fromarray(s.image).save(data / ds.classes[s.label] / f"{i:03d}.png")
    out = tmp_path_factory.mktemp("stats_out")
    args = ["--arch", "resnet18", "--attention", "se", "--weights", "random", "--size", "32", "--workers", "0"]
    assert cli(["stats", str(data), *args, "--out", str(out), "--batch-size", "6"]) == 0
    return out


def test_dataset_tab_shows_a_stats_folder(app: Handlers, stats_folder: Path) -> None:
    import pandas as pd

    text, figures, tables, table = app.open_report(str(stats_folder))
    assert "resnet18 + se" in text and "| images | 6 |" in text
    assert figures and all(_png_size(data)[0] > 100 for data, _ in figures)
    assert "Class-wise gate profiles, stage 1" in [title for _, title in figures]
    assert "blocks" in [v for _, v in tables.choices] and tables.value == tables.choices[0][1]
    blocks = app.show_table(str(stats_folder), "blocks")
    assert blocks.equals(pd.read_csv(stats_folder / "tables" / "blocks.csv")) and len(blocks) == 8
    assert isinstance(table, pd.DataFrame) and len(table) > 0


def test_dataset_tab_reads_only_inside_the_folder_and_only_on_loopback(
    app: Handlers, stats_folder: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    import gradio as gr

    public = Handlers(dataclasses.replace(app.config, host="0.0.0.0"))
    with pytest.raises(gr.Error, match=r"only when the app is bound to 127\.0\.0\.1"):
        public.open_report(str(stats_folder))
    app.server_name = "0.0.0.0"  # configured for loopback, launched on every interface
    with pytest.raises(gr.Error, match=r"only when the app is bound to 127\.0\.0\.1"):
        app.open_report(str(stats_folder))
    app.server_name = "127.0.0.1"
    with pytest.raises(gr.Error, match="not a finished `attnviz stats` folder"):
        app.open_report(str(tmp_path))
    with pytest.raises(gr.Error, match="is not a folder"):
        app.open_report(str(tmp_path / "missing"))
    # a summary.json that lists files outside its folder: they are not shown
    copy = tmp_path / "copy"
    shutil.copytree(stats_folder, copy)
    secret = tmp_path / "secret.png"
    secret.write_bytes((copy / "figures" / "histograms.png").read_bytes())
    summary = json.loads((copy / "summary.json").read_text())
    summary["figures"].append({"title": "outside", "file": "../secret.png"})
    (copy / "figures" / "link.png").symlink_to(secret)
    summary["figures"].append({"title": "a link out", "file": "figures/link.png"})
    (copy / "summary.json").write_text(json.dumps(summary))
    _, figures, _, _ = app.open_report(str(copy))
    titles = [title for _, title in figures]
    assert "outside" not in titles and "a link out" not in titles and len(titles) == len(summary["figures"]) - 2


def test_selecting_a_bar_shows_that_channels_activation(app: Handlers) -> None:
    """A bar of the gate chart picked (Gradio sends its label, e.g. "c0007"): the large view shows that channel of
    the block's output, the same values a hook on the module reads, and the note gives its index and gate."""
    import gradio as gr
    import torch

    from attnviz.pipeline.core import channel_activation

    state, *out = app.run_analysis(ASSET, "se", "resnet18", "demo", "gray", 1.0, "map", "32", "layer3.1.attn.tap")
    result = state.result
    gate = next(m for m in result.maps if m.name == "layer3.1.attn.tap").data[0]
    evt = gr.SelectData(None, {"index": ["c0007"], "value": ["c0007"], "selected": True})
    big, note = app.pick_channel(state, "gray", 1.0, "layer3.1.attn.tap", evt)
    assert note.startswith("channel 7 of layer3.1.attn:") and f"gate {float(gate[7]):.4f}" in note
    assert big.shape == out[BIG].shape and not np.array_equal(big, out[BIG])  # another map in the large view
    model = app._model_of(result)
    seen = {}
    handle = model.get_submodule("layer3.1.attn").register_forward_hook(lambda m, a, o: seen.update(o=o[0, 7].clone()))
    try:
        with torch.inference_mode():
            from attnviz.pipeline.core import model_input

            model(model_input(result.image, model.weights_meta, result.settings["size"]))
    finally:
        handle.remove()
    np.testing.assert_allclose(channel_activation(model, result, "layer3.1.attn", 7), seen["o"].numpy(), rtol=1e-6)
    with pytest.raises(gr.Error, match="not a channel"):
        app.pick_channel(state, "gray", 1.0, "layer3.1.attn.tap", gr.SelectData(None, {"index": ["x"], "value": None}))


# -- what the page says follows the network it runs (issue 19) ------------------------------------------------------


def test_user_errors_are_one_log_line_without_a_traceback(app: Handlers, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import gradio as gr

    with caplog.at_level(logging.WARNING, logger="attnviz.app"), pytest.raises(gr.Error) as err:
        app.run_analysis(None, "se")
    assert err.value.print_exception is False  # Gradio prints no traceback for it
    records = [r for r in caplog.records if r.name == "attnviz.app"]
    assert [r.getMessage() for r in records] == [
        "user error: Upload an image first (drag and drop, paste, or pick an example)."
    ]
    assert records[0].exc_info is None


def test_user_errors_print_no_traceback_in_the_server_log(client: Client, capfd: pytest.CaptureFixture) -> None:
    from gradio_client.exceptions import AppError

    capfd.readouterr()
    with pytest.raises(AppError, match="Upload an image first"):
        client.predict(None, "se", api_name="/analyze")
    with pytest.raises(AppError, match="checkpoint not found"):  # the library's message, through the page
        client.predict(handle_file(ASSET), "se", "resnet18", "/nonexistent/x.safetensors", api_name="/analyze")
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


def test_the_page_follows_an_attnviz_network(app: Handlers) -> None:
    from attnviz.app.choices import FROM_NETWORK, NONE

    state, *out = app.run_analysis(ASSET, "cbam", "resnet18", "demo", "turbo", 0.5, "map", "32", None)
    assert out[CHART].visible is True  # CBAM has channel gates: the chart shows
    menu, examples, note = app.follow_network(state, "cbam", "resnet18")
    assert menu.value == "cbam" and FROM_NETWORK not in [v for _, v in menu.choices]
    assert examples.sample_labels == [
        "astronaut (not a demo category)",
        "cat (demo: mammal)",
        "coffee (not a demo category)",
        "rocket (demo: vehicle)",
    ]
    assert note.visible is True
    # the dropdown had named a network's own attention: attnviz's ResNet ran plain, and the dropdown says so
    state, *_ = app.run_analysis(ASSET, FROM_NETWORK, "resnet18", "random", "turbo", 0.5, "map", "32", None)
    assert state.result.model["attention"] is None
    assert app.follow_network(state, FROM_NETWORK, "resnet18")[0].value == NONE


def test_the_page_follows_a_network_with_its_own_attention(app: Handlers) -> None:
    """A timm network with global-context attention (random weights: no download): the attention dropdown names
    what it has instead of "none (plain ResNet)", the empty gate chart and its note are hidden (no channel gates),
    and the examples are not labelled against the demo's categories."""
    pytest.importorskip("timm")
    from attnviz.app.choices import FROM_NETWORK, NONE

    spec = "timm:gcresnet50t"
    served = Handlers(dataclasses.replace(app.config, served=spec, model=spec, attention=None, size=64))
    state, *out = served.run_analysis(ASSET, NONE, spec, "random", "turbo", 0.5, "map", "32", None)
    assert {m.kind for m in state.result.maps} == {"spatial"}
    assert out[CHART].visible is False
    menu, examples, note = served.follow_network(state, NONE, spec)
    label = dict((v, k) for k, v in menu.choices)[FROM_NETWORK]
    assert menu.value == FROM_NETWORK and label.endswith("(the network's own)") and label != NONE
    assert examples.sample_labels == ["astronaut", "cat", "coffee", "rocket"]
    assert note.visible is False


def test_the_first_screen_names_the_startup_network_s_attention(tmp_path: Path) -> None:
    """Opened on gcresnet50t (as the app does when it is cached): the attention dropdown names GCNet's attention,
    the examples carry no demo categories, the chart waits hidden for a network with channel gates."""
    from attnviz.app import build_demo
    from attnviz.app.choices import FROM_NETWORK
    from attnviz.app.config import STARTUP_NETWORK

    config = AppConfig(device="cpu", offline=True, model=STARTUP_NETWORK, attention=None, weights="imagenet")
    demo = build_demo(config, Handlers(config))
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    menu = blocks["attention-select"]
    assert menu.value == FROM_NETWORK and ("gc (the network's own)", FROM_NETWORK) in [tuple(c) for c in menu.choices]
    dataset = next(b for b in demo.blocks.values() if type(b).__name__ == "Dataset")
    assert dataset.sample_labels == ["astronaut", "cat", "coffee", "rocket"]
    assert blocks["channel-chart"].visible is False and blocks["channel-note"].visible is False


def test_a_vit_s_token_attention_per_head_query_and_rollout(app: Handlers) -> None:
    """timm ViT-Tiny (random weights, no download): one token view per block and the network's rollout; the Head
    choice shows one head's class-token row (from the kept rows per head) in the large view; a click shows the
    clicked patch's row of the head-mean matrix."""
    pytest.importorskip("timm")
    import gradio as gr

    from attnviz.app.choices import NONE
    from attnviz.app.handlers import _display_images
    from attnviz.capture.rollout import rollout
    from attnviz.render import overlay

    spec = "timm:vit_tiny_patch16_224"
    served = Handlers(dataclasses.replace(app.config, served=spec, model=spec, attention=None))
    state, *out = served.run_analysis(ASSET, NONE, spec, "random", "turbo", 1.0, "map", "32", None)
    maps = state.result.maps
    assert len(maps) == 12 and {m.kind for m in maps} == {"token"} and all(m.kept == "rows" for m in maps)
    views = state.views
    assert [v.key for v in views].count("rollout") == 1 and views[-1].key == "rollout"
    expected = rollout([m.data for m in maps], maps[0].size, prefix=1)[0].numpy()
    np.testing.assert_allclose(views[-1].spatial, expected, rtol=0, atol=1e-7)
    assert "Abnar & Zuidema 2020" in out[GALLERY][-1][1]
    assert out[BLOCK].value == "rollout"  # the last view with a spatial map: the network's rollout

    block = maps[-1].name
    _, *mean = served.pick_head(state, "mean", "turbo", 1.0, "map", "32", block)
    menu = mean[HEAD]
    assert menu.visible and [v for _, v in menu.choices] == ["mean", "0", "1", "2"]  # ViT-Tiny: 3 heads
    head_state, *one = served.pick_head(state, "2", "turbo", 1.0, "map", "32", block)
    assert head_state.head == 2 and one[HEAD].value == "2" and "head 2" in one[STATUS]
    row = maps[-1].rows[0, 2, 0, 1:].reshape(14, 14).numpy()  # head 2's class-token row, kept per head
    photo = _display_images(head_state)[0]
    want = overlay(photo, (row - row.min()) / (row.max() - row.min()), "turbo", 1.0)
    np.testing.assert_array_equal(one[BIG], want)
    assert not np.array_equal(one[BIG], mean[BIG])

    click = gr.SelectData(None, {"index": [0, 0], "value": None, "selected": True})
    q_state, *clicked = served.pick_query(state, "turbo", 1.0, "map", "32", block, "0–1", click)
    v = next(v for v in q_state.views if v.key == block)
    assert v.cell == (0, 0) and "query (0, 0)" in v.spatial_label
    np.testing.assert_array_equal(v.spatial, maps[-1].data[0, 0, 1, 1:].reshape(14, 14).numpy())  # patch (0, 0)
    assert not np.array_equal(clicked[BIG], mean[BIG]) and clicked[HEAD].value == "mean"


def test_channel_view_choice_shows_the_gate_weighted_view_without_a_forward(
    app: Handlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Channel view choice (shown only for a network with channel gates) switches the channel gates' views between
    the gate effect (the default) and the former gate-weighted mean activation, drawn again from the kept maps (no
    forward), as build_views(view=...) makes them; the zip records it; back to the gate effect draws the first view."""
    import io
    import json
    import zipfile

    import gradio as gr

    import attnviz.app.handlers as handlers
    from attnviz.capture.views import build_views

    state, *first = app.run_analysis(ASSET, "se", "resnet18", "random", "turbo", 1.0, "map", "32", None)
    control = app.channel_view_control(state)
    assert control.visible is True and control.value == "gate-effect"
    calls = []
    monkeypatch.setattr(handlers, "analyze", lambda *a, **k: calls.append(1))
    old, *out = app.pick_channel_view(state, "gate-weighted", "turbo", 1.0, "map", "32", None)
    assert not calls and old.view == "gate-weighted" and old.result is state.result
    want = build_views(state.result, view="gate-weighted")
    channel = [(v, w) for v, w in zip(old.views, want, strict=True) if v.kind == "channel"]
    assert channel and all(np.array_equal(v.spatial, w.spatial) for v, w in channel)
    assert all(v.spatial_label.startswith("gate-weighted mean activation") for v, _ in channel)
    assert not np.array_equal(out[BIG], first[BIG])  # the large view (the last block's channel gate) changed
    assert app.channel_view_control(old).value == "gate-weighted"
    with zipfile.ZipFile(app.make_zip(old, "turbo", 1.0, "map", "32")) as zf:
        assert json.load(io.BytesIO(zf.read("result.json")))["settings"]["view"] == "gate-weighted"
    back, *again = app.pick_channel_view(old, "gate-effect", "turbo", 1.0, "map", "32", None)
    assert back.view is None and np.array_equal(again[BIG], first[BIG])
    with pytest.raises(gr.Error, match="not a channel view"):
        app.pick_channel_view(state, "gate", "turbo", 1.0, "map", "32", None)
    monkeypatch.undo()
    pairwise, *_ = app.run_analysis(ASSET, "mhsa", "resnet18", "random", "turbo", 1.0, "map", "32", None)
    assert app.channel_view_control(pairwise).visible is False  # no channel gates: no choice


def test_same_image_written_by_many_sessions_is_never_read_cut(tmp_path: Path) -> None:
    """Sessions showing the same overlay write the same content-named file into Gradio's cache at once; a reader
    (another session's check, a browser's fetch) must never see it empty or cut. Gradio's own writer rewrites the
    file in place and fails this (it made test_16_clients_get_their_own_results fail in CI: swap
    ``gradio.processing_utils.save_bytes_to_cache`` in for ``save`` to see it); attnviz's writes beside and renames."""
    import threading

    from attnviz.app.components import save_bytes_to_cache as save

    data = np.random.default_rng(0).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()  # 4 MiB: slow to write
    path = Path(save(data, "image.png", str(tmp_path)))
    stop, cut = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            size = path.stat().st_size if path.exists() else len(data)
            if size != len(data):
                cut.append(size)

    def write() -> None:
        for _ in range(20):
            assert save(data, "image.png", str(tmp_path)) == str(path.resolve())

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write) for _ in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not cut, f"the cached file was read at {len(cut)} wrong sizes, e.g. {cut[:3]} of {len(data)} bytes"
    assert path.read_bytes() == data and [p.name for p in path.parent.iterdir()] == ["image.png"]
