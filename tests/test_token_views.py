"""Token attention in the consumers: the network's rollout view, one head of a token view, the checks' and the
statistics' default view of a token map (the class token's), and the layout text of fused attention."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from attnviz.capture.recorder import AttentionRecorder
from attnviz.capture.rollout import rollout
from attnviz.capture.views import ROLLOUT_KEY, build_views, head_view, token_heads
from attnviz.export import export_files
from attnviz.pipeline.run import analyze
from tests.images import ASSET

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def _maps(model: torch.nn.Module, x: torch.Tensor, keep: str = "auto") -> list:
    with AttentionRecorder(model, keep=keep) as rec, torch.inference_mode():
        model(x)
    return rec.maps


class _Result:
    def __init__(self, maps: list) -> None:
        self.maps, self.activations = maps, {}


def test_rollout_view_equals_rollout_once(vit: torch.nn.Module, image: torch.Tensor) -> None:
    maps = _maps(vit, image)
    views = build_views(_Result(maps))
    rolled = [v for v in views if v.key == ROLLOUT_KEY]
    assert len(rolled) == 1 and len(views) == len(maps) + 1 and views[-1] is rolled[0]
    v = rolled[0]
    want = rollout([m.data for m in maps], (14, 14), prefix=1, fusion="mean", discard_ratio=0.0)[0].numpy()
    np.testing.assert_allclose(v.spatial, want, rtol=0, atol=1e-7)
    assert "Abnar & Zuidema 2020" in v.title and "rollout over 12 blocks" in v.title
    # the head-mean maps (keep="rows") roll out as the full heads do: mean fusion commutes with the head mean
    full = build_views(_Result(_maps(vit, image, "full")))[-1]
    np.testing.assert_allclose(full.spatial, v.spatial, rtol=0, atol=1e-6)
    # a query: the clicked patch's row of the rolled-out matrix
    q = build_views(_Result(maps), (0.0, 0.0))[-1]
    assert q.cell == (0, 0)
    np.testing.assert_allclose(q.spatial, v.data[0, 1, 1:].reshape(14, 14), rtol=0, atol=0)
    # fewer than two token maps: no rollout
    assert all(v.key != ROLLOUT_KEY for v in build_views(_Result(maps[:1])))


def test_a_cnn_has_no_rollout_and_the_export_writes_it_for_a_vit(tmp_path) -> None:
    cnn = analyze(ASSET, attention="mhsa", arch="resnet18", weights="random", device="cpu")
    assert all(v.key != ROLLOUT_KEY for v in build_views(cnn))
    result = analyze(ASSET, attention=None, arch="timm:vit_tiny_patch16_224", weights="random", device="cpu")
    settings = {"cmap": "turbo", "alpha": 0.5, "norm": "map", "topk": 32, "query": None}
    files = dict(export_files(result, settings))
    side = json.loads(files["result.json"])
    entry = side["maps"][-1]
    assert len(side["maps"]) == len(result.maps) + 1 and entry["name"] == ROLLOUT_KEY
    assert entry["found_by"] == "rollout" and entry["grid"] == [14, 14] and entry["prefix"] == 1
    assert "Abnar & Zuidema 2020" in entry["computed_as"]
    stem = f"maps/{len(result.maps):02d}_rollout_token"
    saved = np.load(io.BytesIO(files[f"{stem}.npy"]))
    assert saved.shape == (1, 197, 197) and np.allclose(saved.sum(-1), 1.0, atol=1e-5)
    assert any(p.startswith("overlays/") and "rollout" in p for p in files)
    assert "3 head(s)" in result.maps[0].layout and "kept: the head mean + the first 1 row(s)" in result.maps[0].layout


def test_head_view_from_rows_and_from_full(vit: torch.nn.Module, image: torch.Tensor) -> None:
    rows_v = build_views(_Result(_maps(vit, image)))[3]
    full_maps = _maps(vit, image, "full")
    full_v = build_views(_Result(full_maps))[3]
    assert token_heads(rows_v) == token_heads(full_v) == 3
    a = full_maps[3].data[0].numpy()  # (heads, N, N): every head, computed explicitly
    for h in range(3):
        for v in (rows_v, full_v):
            one = head_view(v, h)
            assert one.spatial_label == f"class token's attention, head {h}"
            np.testing.assert_allclose(one.spatial, a[h, 0, 1:].reshape(14, 14), rtol=0, atol=1e-6)
    assert head_view(rows_v, None) is rows_v and head_view(rows_v, 3) is rows_v  # the mean; no head 3
    q_full = head_view(build_views(_Result(full_maps), (1.0, 0.0))[3], 1)  # a query's row of one head
    np.testing.assert_allclose(q_full.spatial, a[1, 1 + 13, 1:].reshape(14, 14), rtol=0, atol=0)
    q_rows = head_view(build_views(_Result(_maps(vit, image)), (1.0, 0.0))[3], 1)  # only the mean of that row
    assert "keep='full'" in q_rows.spatial_label
    assert token_heads(build_views(_Result(full_maps))[-1]) == 0  # the rollout is head-fused


def test_checks_and_stats_show_the_class_token(vit: torch.nn.Module, image: torch.Tensor) -> None:
    from attnviz.checks.blocks import block_view, find_blocks
    from attnviz.stats.localisation import views_of

    maps = _maps(vit, image)
    cls = {m.block: m.data[0, 0, 0, 1:].reshape(14, 14).numpy() for m in maps}  # head mean's class row
    blocks, bmaps, acts = find_blocks(vit, image)
    shown = 0
    for b in blocks:
        view, label, name = block_view(b, bmaps, acts)
        if name is None:
            continue
        m = next(m for m in bmaps if m.name == name)
        assert label == "class token's attention, head mean"
        np.testing.assert_allclose(view, cls[m.block], rtol=0, atol=1e-6)
        shown += 1
    assert shown == 12
    stats = views_of(maps, {})
    assert len(stats) == 12
    for block, (_, t) in stats.items():
        np.testing.assert_allclose(t[0].numpy(), cls[block], rtol=0, atol=1e-6)


def test_render_cli_head_query_rollout(tmp_path) -> None:
    """``attnviz render --model timm:NAME``: the chosen head, query and rollout fusion reach the overlays and
    result.json; a rerun with the same display is skipped, with another head it is rendered again; a bad query is
    refused with a message."""
    from PIL import Image

    from attnviz.cli.main import main

    src = tmp_path / "cat.png"
    Image.open(ASSET).convert("RGB").save(src)
    out = tmp_path / "out"
    base = ["render", str(src), "--model", "timm:vit_tiny_patch16_224", "--weights", "random", "--out", str(out)]
    base += ["--device", "cpu", "--workers", "0", "--keep", "full"]
    args = [*base, "--head", "1", "--query", "0.25,0.75", "--rollout", "max", "--discard-ratio", "0.5"]
    assert main(args) == 0
    sidecar = json.loads((out / "cat" / "result.json").read_text())
    assert sidecar["head"] == 1 and sidecar["query"] == [0.25, 0.75]
    assert sidecar["rollout"] == {"fusion": "max", "discard_ratio": 0.5}
    assert sidecar["settings"]["keep"] == "full" and sidecar["settings"]["display"]["head"] == 1
    tokens = [m for m in sidecar["maps"] if m["kind"] == "token" and m["found_by"] != "rollout"]
    assert len(tokens) == 12 and all(m["head"] == 1 for m in tokens)
    assert [m["found_by"] for m in sidecar["maps"]].count("rollout") == 1
    assert any("rollout" in f for f in sidecar["files"])
    stamp = (out / "cat" / "result.json").stat().st_mtime_ns
    assert main(args) == 0 and (out / "cat" / "result.json").stat().st_mtime_ns == stamp  # same display: skipped
    assert main([*base, "--head", "2", "--rollout", "off"]) == 0
    again = json.loads((out / "cat" / "result.json").read_text())
    assert again["head"] == 2 and again["rollout"] is None and not any("rollout" in f for f in again["files"])
    with pytest.raises(SystemExit) as e:
        main([*base, "--query", "2,0.5"])
    assert e.value.code == 2
