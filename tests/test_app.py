"""The app through its public API (gradio_client against a real server) and its handlers directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file

import app
from tests.images import ASSET


@pytest.fixture(scope="module")
def client(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(app_url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def _check_ok(out: tuple, n_overlays: int | None = None, trained: bool = True) -> None:
    predictions, gallery, _block, _big, _chart, _detail, status = out
    assert len(predictions["confidences"]) == 5
    assert gallery and all(Path(item["image"]).stat().st_size > 0 for item in gallery)
    if n_overlays is not None:
        assert len(gallery) == n_overlays
    assert "device: cpu" in status
    if trained:  # the default: the shipped demo checkpoint, with its measured scores
        assert "weights: demo (resnet18-scenes-" in status and "measured on held-out scenes" in status
        assert "untrained" not in status
    else:
        assert "untrained: maps are not meaningful" in status


def test_analyze_endpoint(client: Client) -> None:
    out = client.predict(handle_file(ASSET), "cbam", api_name="/analyze")
    _check_ok(out, n_overlays=8)
    assert out[4]["columns"][:3] == ["channel", "index", "weight"] and len(out[4]["data"]) == 32
    out = client.predict(handle_file(ASSET), "da", "resnet18", "random", api_name="/analyze")
    _check_ok(out, trained=False)
    assert "pairwise" in out[1][-1]["caption"] or "memory" in out[1][-1]["caption"] or out[1]


def test_no_image_gives_a_clear_message() -> None:
    import gradio as gr

    with pytest.raises(gr.Error, match="Upload an image first"):
        app.run_analysis(None, "se")


def test_display_change_does_not_rerun_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    state, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "random", "turbo", 0.5, "map", "32", None)
    calls = []
    monkeypatch.setattr(app, "analyze", lambda *a, **k: calls.append(1))
    out = app.render_outputs(state, "gray", 1.0, "network", "all", None)
    assert not calls
    big = out[3]
    assert big.shape == (300, 451, 3)
    assert (big[..., 0] == big[..., 1]).all() and (big[..., 1] == big[..., 2]).all()  # gray colormap, alpha 1
    png, zip_path = app.make_exports(state, "gray", 1.0, "network", "all", None)
    assert Path(png).stat().st_size > 0 and Path(zip_path).suffix == ".zip"


def test_click_picks_the_pairwise_query() -> None:
    import gradio as gr
    import numpy as np

    state, *first = app.run_analysis(ASSET, "mhsa", "resnet18", "random", "turbo", 1.0, "map", "32", None)
    assert state["query"] is None
    assert "query (4, 6)" in first[1][-1][1]  # the default query: the centre cell of layer4's 8x13 grid
    click = gr.SelectData(None, {"index": [0, 0], "value": None, "selected": True})
    new_state, *out = app.pick_query(state, "turbo", 1.0, "map", "32", None, click)
    assert new_state["query"] == (0.0, 0.0)
    assert not np.array_equal(out[3], first[3])  # the large view now shows the top-left query's attention
    assert "query (0, 0)" in out[1][-1][1]  # the gallery caption names the query cell


def test_large_images_are_shown_at_display_sizes(tmp_path: Path) -> None:
    import gradio as gr
    import numpy as np
    from PIL import Image

    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 2400, 3), dtype=np.uint8)).save(path)
    state, _, gallery, _, big, *_ = app.run_analysis(str(path), "mhsa", "resnet18", "random", "turbo", 0.5, "map")
    assert big.shape == (667, 1600, 3)  # the large view: longest side VIEW_SIDE, aspect kept
    assert all(img.shape == (333, 800, 3) for img, _ in gallery)  # thumbnails: GALLERY_SIDE
    click = gr.SelectData(None, {"index": [1599, 666], "value": None, "selected": True})
    new_state, *_ = app.pick_query(state, "turbo", 0.5, "map", "32", None, click)
    assert new_state["query"] == (1599 / 1600, 666 / 667)  # fractions of the view the click came from
    files = app.DisplayGallery().postprocess(gallery[:2])
    assert [Path(item.image.path).suffix for item in files.root] == [".jpg", ".jpg"]


def test_typed_checkpoint_paths_only_on_loopback(monkeypatch) -> None:
    """A path typed into the Weights field reads the server's disk: refused when the app serves other machines."""
    import gradio as gr

    monkeypatch.setitem(app.TYPED_PATHS, "allowed", False)
    with pytest.raises(gr.Error, match=r"accepted only when the app is bound to 127\.0\.0\.1"):
        app.run_analysis(ASSET, "cbam", "resnet18", "/etc/passwd.pt")
    monkeypatch.setitem(app.TYPED_PATHS, "allowed", True)
    with pytest.raises(gr.Error, match="checkpoint not found"):
        app.run_analysis(ASSET, "cbam", "resnet18", "/nonexistent/x.safetensors")


def test_exports_reuse_the_zip_when_only_the_block_changes() -> None:
    state, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "random", "turbo", 0.5, "map", "32", None)
    png_a, zip_a = app.make_exports(state, "turbo", 0.5, "map", "32", "layer1.0.attn.spatial.tap")
    png_b, zip_b = app.make_exports(state, "turbo", 0.5, "map", "32", "layer4.1.attn.spatial.tap")
    assert zip_a == zip_b and png_a != png_b  # another block: a new PNG, the same zip
    _, zip_c = app.make_exports(state, "gray", 0.5, "map", "32", None)
    assert zip_c != zip_a  # another colormap: a new zip
    state2, *_ = app.run_analysis(ASSET, "cbam", "resnet18", "random", "turbo", 0.5, "map", "32", None)
    assert app.make_exports(state2, "turbo", 0.5, "map", "32", None)[1] != zip_a  # another result: a new zip


def test_only_listed_networks_load_from_the_page(monkeypatch, tmp_path: Path) -> None:
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
    with pytest.raises(gr.Error, match="unknown network"):
        app.run_analysis(ASSET, "cbam", f"{src}:build", "random")
    spec = f"{src}:build"
    monkeypatch.setattr(app, "SERVED", {"spec": spec, "labels": str(labels)})
    assert app.arch_choices()[0] == (f"{spec} (served)", spec)
    state, predictions, *_ = app.run_analysis(ASSET, "none", spec, "random")
    assert set(predictions) == {"left", "right"}
    assert [m.name for m in state["result"].maps] == ["1.sigmoid"]
