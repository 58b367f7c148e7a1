"""The app through its public API (gradio_client against a real server) and its handlers directly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from attnviz.app import AppConfig, Handlers
from attnviz.app.components import DisplayGallery
from tests.images import ASSET

# the page's outputs after the state: predictions, the demo note, gallery, block, big, chart, detail, status
PRED, NOTE, GALLERY, BLOCK, BIG, CHART, DETAIL, STATUS = range(8)


@pytest.fixture(scope="module")
def client(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(app_url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture()
def app(tmp_path: Path) -> Handlers:
    """The page's handlers for an offline configuration on the CPU, with its own export folder."""
    return Handlers(AppConfig(device="cpu", offline=True, export_root=tmp_path / "exports"))


def _check_ok(out: tuple, n_overlays: int | None = None, trained: bool = True) -> None:
    predictions, note, gallery, _block, _big, _chart, _detail, status = out
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
    gate = next(m for m in state["result"].maps if m.block == "layer4.1").data
    pad = (float(gate.max()) - float(gate.min())) * 0.05
    assert (lo, hi) == pytest.approx((float(gate.min()) - pad, float(gate.max()) + pad))  # the gate's own range


def test_click_picks_the_pairwise_query(app: Handlers) -> None:
    import gradio as gr
    import numpy as np

    state, *first = app.run_analysis(ASSET, "mhsa", "resnet18", "random", "turbo", 1.0, "map", "32", None)
    assert state["query"] is None
    assert "query (4, 6)" in first[GALLERY][-1][1]  # the default query: the centre cell of layer4's 8x13 grid
    click = gr.SelectData(None, {"index": [0, 0], "value": None, "selected": True})
    new_state, *out = app.pick_query(state, "turbo", 1.0, "map", "32", None, "0–1", click)
    assert new_state["query"] == (0.0, 0.0)
    assert not np.array_equal(out[BIG], first[BIG])  # the large view now shows the top-left query's attention
    assert "query (0, 0)" in out[GALLERY][-1][1]  # the gallery caption names the query cell


def test_large_images_are_shown_at_display_sizes(app: Handlers, tmp_path: Path) -> None:
    import gradio as gr
    import numpy as np
    from PIL import Image

    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 2400, 3), dtype=np.uint8)).save(path)
    state, *out = app.run_analysis(str(path), "mhsa", "resnet18", "random", "turbo", 0.5, "map")
    assert out[BIG].shape == (667, 1600, 3)  # the large view: longest side VIEW_SIDE, aspect kept
    assert all(img.shape == (333, 800, 3) for img, _ in out[GALLERY])  # thumbnails: GALLERY_SIDE
    click = gr.SelectData(None, {"index": [1599, 666], "value": None, "selected": True})
    new_state, *_ = app.pick_query(state, "turbo", 0.5, "map", "32", None, "0–1", click)
    assert new_state["query"] == (1599 / 1600, 666 / 667)  # fractions of the view the click came from
    files = DisplayGallery().postprocess(out[GALLERY][:2])
    assert [Path(item.image.path).suffix for item in files.root] == [".jpg", ".jpg"]


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


def test_imagenet_weights_pick_the_best_pretrained_network(app: Handlers) -> None:
    assert app.choice("se", "resnet50", "imagenet") == (None, "seresnet50.ra2_in1k", "imagenet")
    assert app.choice("mhsa", "resnet18", "imagenet") == (None, "botnet26t_256.c1_in1k", "imagenet")
    assert app.choice("cbam", "resnet50", "imagenet") == ("cbam", "resnet50", "imagenet")  # backbone + untrained block
    assert app.choice("se", "resnet18", "demo") == ("se", "resnet18", "demo")


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
    assert served.arch_choices()[0] == (f"{spec} (served)", spec)
    state, predictions, *_ = served.run_analysis(ASSET, "none", spec, "random")
    assert set(predictions) == {"left", "right"}
    assert [m.name for m in state["result"].maps] == ["1.sigmoid"]


def test_zip_details_are_the_page_details(app: Handlers) -> None:
    """One table per kind (attnviz.kinds): the zip's detail drawings are the page's, per-head pairwise maps
    included (they used to differ)."""
    import io

    import numpy as np
    from PIL import Image

    from attnviz.export import export_files

    state, *out = app.run_analysis(ASSET, "mhsa", "resnet18", "random", "turbo", 0.5, "map", "32", None)
    files = dict(export_files(state["result"], {"cmap": "turbo", "alpha": 0.5, "norm": "map", "topk": 32}))
    name = sorted(n for n in files if n.startswith("charts/") and n.endswith("_pairwise.png"))[-1]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(files[name])).convert("RGB")), out[DETAIL])
