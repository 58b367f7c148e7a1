"""analyze() on every attention type, views and exports: the pipeline the app and CLI share."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import attnviz
from attnviz.analyze import ModelCache, analyze
from attnviz.export import export_zip, safe_name, write_folder
from attnviz.views import build_views
from tests.images import ASSET

NAMES = attnviz.list_attentions()
CACHE = ModelCache(maxsize=2)
DISPLAY = {"cmap": "turbo", "alpha": 0.5, "norm": "map", "topk": 16, "query": None}


@pytest.mark.parametrize("name", [*NAMES, None])
def test_analyze_every_type(name: str | None) -> None:
    r = analyze(ASSET, attention=name, arch="resnet18", device="cpu", size=96, cache=CACHE)
    spec = attnviz.get_attention(name) if name else None
    assert r.image.size == (451, 300) and r.input_size == (144, 96)  # aspect kept, no crop
    assert len(r.predictions) == 5 and all(0 <= p <= 1 for _, p in r.predictions)
    assert [p for _, p in r.predictions] == sorted((p for _, p in r.predictions), reverse=True)
    assert set(r.timings) == {"decode", "preprocess", "forward", "capture"}
    assert r.warning.startswith("untrained")
    if spec is None:
        assert r.maps == [] and r.activations == {}
        return
    assert {m.kind for m in r.maps} == set(spec.kinds)
    assert all(m.data.shape[0] == 1 for m in r.maps)
    views = build_views(r)
    assert len(views) == len(r.maps)
    spatial = [v for v in views if v.spatial is not None]
    assert spatial, f"{name}: no spatial view"
    for v in spatial:
        assert v.spatial.ndim == 2 and np.isfinite(v.spatial).all()


def test_channel_only_blocks_show_gate_weighted_activation() -> None:
    r = analyze(ASSET, attention="se", arch="resnet18", device="cpu", size=64, cache=CACHE)
    views = build_views(r)
    v = views[0]
    assert v.kind == "channel" and v.spatial_label == "gate-weighted mean activation"
    np.testing.assert_array_equal(v.spatial, r.activations["layer1.0.attn"])


def test_pairwise_view_follows_the_query() -> None:
    r = analyze(ASSET, attention="mhsa", arch="resnet18", device="cpu", size=128, cache=CACHE)
    m = r.maps[-1]
    h, w = m.size
    top_left = build_views(r, (0.0, 0.0))[-1]
    centre = build_views(r, (0.5, 0.5))[-1]
    np.testing.assert_allclose(top_left.spatial, m.data[0, :, 0].mean(0).view(h, w).numpy(), rtol=1e-6)
    assert not np.allclose(top_left.spatial, centre.spatial)
    assert top_left.spatial.sum() == pytest.approx(1.0, rel=1e-4)  # a head-mean attention row sums to 1


def test_export_zip_contents(tmp_path) -> None:
    r = analyze(ASSET, attention="cbam", arch="resnet18", device="cpu", size=64, cache=CACHE)
    path = export_zip(r, DISPLAY, tmp_path / "out.zip")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        sidecar = json.loads(zf.read("result.json"))
        overlays = [n for n in names if n.startswith("overlays/")]
        assert len(overlays) == 8  # one spatial gate per block
        from PIL import Image

        im = Image.open(io.BytesIO(zf.read(overlays[0])))
        assert im.size[0] > 100 and im.size[1] > 100
        arr = np.load(io.BytesIO(zf.read("maps/01_layer1.0_spatial.npy")))
        np.testing.assert_array_equal(arr, r.maps[1].data[0].numpy())
        assert len([n for n in names if n.startswith("charts/")]) == 8  # one channel chart per block
    assert sidecar["model"]["attention"] == "cbam" and sidecar["settings"]["display"]["cmap"] == "turbo"
    assert sidecar["predictions"][0]["label"] == r.predictions[0][0]
    assert {"torch", "torchvision", "numpy"} <= set(sidecar["versions"])
    assert set(sidecar["files"]) | {"result.json"} == set(names)
    written = write_folder(r, DISPLAY, tmp_path / "folder")
    assert sorted(p.relative_to(tmp_path / "folder").as_posix() for p in written) == sorted(names)


def test_safe_names() -> None:
    assert safe_name("../../etc/passwd") == "_etc_passwd"
    assert safe_name("layer2.1") == "layer2.1"
    assert safe_name("a b/c\\d") == "a_b_c_d"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown attention"):
        analyze(ASSET, attention="nope", device="cpu", cache=CACHE)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        analyze(ASSET, attention="se", device="tpu", cache=CACHE)


def test_random_models_are_the_same_after_leaving_the_cache() -> None:
    """Untrained models come from a fixed seed: a rebuilt model gives the same maps, and the caller's RNG is
    untouched."""
    image = Image.new("RGB", (64, 48), "orange")
    state = torch.random.get_rng_state()
    a = analyze(image, attention="se", weights="random", cache=ModelCache(1), size=48)
    b = analyze(image, attention="se", weights="random", cache=ModelCache(1), size=48)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x.data, y.data) for x, y in zip(a.maps, b.maps, strict=True))
