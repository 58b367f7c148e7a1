"""The page's transformer controls through its handlers (timm networks with random weights, no download): the
rollout controls (on/off, head fusion, discard ratio) drawn again from the kept maps, a new forward only where the
kept maps cannot give it; the Head choice on a window map (Swin); PNG and zip of the chosen head and rollout, and
result.json's window layouts."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attnviz.app import AppConfig, Handlers
from attnviz.app.choices import NONE
from attnviz.capture.rollout import rollout
from attnviz.capture.windows import query_rows, received
from tests.images import ASSET

pytest.importorskip("timm")

PRED, NOTE, GALLERY, BLOCK, BIG, CHART, DETAIL, STATUS, HEAD = range(9)
VIT = "timm:vit_tiny_patch16_224"  # 12 blocks, 3 heads, 14 x 14 patches + a class token
SWIN = "timm:swin_tiny_patch4_window7_224"  # 12 window blocks; 3, 6, 12, 24 heads by stage
DISPLAY = ("turbo", 1.0, "map", "32")


def _served(tmp_path: Path, spec: str) -> Handlers:
    config = AppConfig(device="cpu", offline=True, export_root=tmp_path / "exports")
    return Handlers(dataclasses.replace(config, served=spec, model=spec, attention=None))


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Handlers, Any]:
    app = _served(tmp_path_factory.mktemp("vit"), VIT)
    state, *_ = app.run_analysis(ASSET, NONE, VIT, "random", *DISPLAY, None)
    return app, state


@pytest.fixture(scope="module")
def swin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Handlers, Any]:
    app = _served(tmp_path_factory.mktemp("swin"), SWIN)
    state, *_ = app.run_analysis(ASSET, NONE, SWIN, "random", *DISPLAY, None)
    return app, state


class _Counted:
    """The real :func:`attnviz.analyze`, counting its calls and the keep policy each asked for."""

    def __init__(self, real: Any) -> None:
        self.real, self.keeps = real, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.keeps.append(kwargs.get("keep", "auto"))
        return self.real(*args, **kwargs)


def test_rollout_controls_draw_again_from_the_kept_maps(vit: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shown for a ViT, set to on / mean / 0; a discard ratio and switching rollout off draw again with no forward;
    the rollout shown is the library's rollout of the kept maps (Abnar & Zuidema 2020) at that ratio."""
    import gradio as gr

    import attnviz.app.handlers as handlers

    app, state = vit
    row, on, fusion, ratio = app.rollout_controls(state)
    assert row.visible is True and (on.value, fusion.value, ratio.value) == (True, "mean", 0.0)
    calls = _Counted(handlers.analyze)
    monkeypatch.setattr(handlers, "analyze", calls)
    maps = state.result.maps
    grid = maps[0].size

    dropped, *out = app.pick_rollout(state, True, "mean", 0.5, *DISPLAY, None)
    assert calls.keeps == [] and dropped.result is state.result
    assert out[BLOCK].value == "rollout" and "lowest 50% discarded" in out[GALLERY][-1][1]  # its title
    view = dropped.views[-1]
    expected = rollout([m.data for m in maps], grid, prefix=1, discard_ratio=0.5)[0].numpy()
    np.testing.assert_allclose(view.spatial, expected, rtol=0, atol=1e-7)
    plain = rollout([m.data for m in maps], grid, prefix=1)[0].numpy()
    assert not np.allclose(view.spatial, plain, atol=1e-4)  # discarding changed the map
    _, *before = app.pick_rollout(state, True, "mean", 0.0, *DISPLAY, None)
    assert not np.array_equal(out[BIG], before[BIG])

    off, *out = app.pick_rollout(state, False, "mean", 0.0, *DISPLAY, None)
    assert calls.keeps == [] and "rollout" not in [v.key for v in off.views]
    assert out[BLOCK].value == maps[-1].name  # the last block's class-token attention opens in its place
    with pytest.raises(gr.Error, match="not a head fusion"):
        app.pick_rollout(state, True, "median", 0.0, *DISPLAY, None)
    with pytest.raises(gr.Error, match=r"discard ratio must be between 0 and 0\.95"):
        app.pick_rollout(state, True, "mean", 1.0, *DISPLAY, None)


def test_max_and_min_fusion_run_once_more_keeping_every_head(vit: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept maps hold the head mean (keep="auto": class-token rows + mean), from which max and min cannot be
    taken: the network runs once more with keep="full", and the state keeps those maps; min then needs no forward."""
    import attnviz.app.handlers as handlers

    app, state = vit
    assert all(m.kept == "rows" for m in state.result.maps)
    calls = _Counted(handlers.analyze)
    monkeypatch.setattr(handlers, "analyze", calls)
    most, *out = app.pick_rollout(state, True, "max", 0.0, *DISPLAY, None)
    assert calls.keeps == ["full"]
    maps = most.result.maps
    assert all(m.data.shape[1] == 3 for m in maps) and most.rollout.fusion == "max"
    expected = rollout([m.data for m in maps], maps[0].size, prefix=1, fusion="max")[0].numpy()
    np.testing.assert_allclose(most.views[-1].spatial, expected, rtol=0, atol=1e-7)
    mean = rollout([m.data for m in maps], maps[0].size, prefix=1)[0].numpy()
    assert not np.allclose(expected, mean, atol=1e-4)
    assert "head max" in out[GALLERY][-1][1]
    least, *_ = app.pick_rollout(most, True, "min", 0.0, *DISPLAY, None)
    assert calls.keeps == ["full"] and least.result is most.result  # every head is kept now
    expected = rollout([m.data for m in maps], maps[0].size, prefix=1, fusion="min")[0].numpy()
    np.testing.assert_allclose(least.views[-1].spatial, expected, rtol=0, atol=1e-7)


def test_head_choice_on_a_window_map(swin: tuple) -> None:
    """A Swin block's view shows one head: what each position receives from that head's queries in its window;
    the heads' views average to the head-mean view (received is linear in the heads), and a clicked query's row of
    one head sums to 1 over its window."""
    import gradio as gr

    app, state = swin
    maps = state.result.maps
    last = maps[-1]  # the last stage: 24 heads, a 7 x 7 grid in one window
    block = maps[2].name  # stage 2: 6 heads, a 28 x 28 grid in 16 windows, shift 0
    data, layout = maps[2].data[0].numpy(), maps[2].window
    _, *mean = app.pick_head(state, "mean", *DISPLAY, block)
    assert mean[HEAD].visible and [v for _, v in mean[HEAD].choices] == ["mean", *map(str, range(6))]
    heads = []
    for h in range(6):
        one_state, *one = app.pick_head(state, str(h), *DISPLAY, block)
        assert one[HEAD].value == str(h) and f"head {h}" in one[STATUS]
        heads.append(received(data[:, h : h + 1], layout))
    np.testing.assert_allclose(np.mean(heads, axis=0), received(data, layout), rtol=0, atol=1e-6)
    assert not np.array_equal(one[BIG], mean[BIG])
    _, *top = app.pick_head(state, "mean", *DISPLAY, last.name)
    assert len(top[HEAD].choices) == 25

    click = gr.SelectData(None, {"index": [5, 5], "value": None, "selected": True})
    q_state, *_ = app.pick_query(one_state, *DISPLAY, block, "0–1", click)
    view = next(v for v in q_state.views if v.key == block)
    assert view.cell == (0, 0) and q_state.head == 5
    from attnviz.capture.views import head_view

    one = head_view(view, 5)
    np.testing.assert_array_equal(one.spatial, query_rows(data, layout, (0, 0))[5])
    assert abs(float(one.spatial.sum()) - 1.0) < 1e-5 and "in its window, head 5" in one.spatial_label


def test_png_and_zip_show_the_chosen_head_and_rollout(vit: tuple) -> None:
    """The PNG is the chosen head's view (its own file name); the zip's overlays of token views show that head,
    result.json says which head each map shows and the rollout's settings, and its rollout overlay is the one the
    page shows."""
    from PIL import Image

    app, state = vit
    block = state.result.maps[-1].name
    head, *_ = app.pick_head(state, "2", *DISPLAY, block)
    png_mean = Path(app.make_png(state, "turbo", 1.0, "map", block))
    png_head = Path(app.make_png(head, "turbo", 1.0, "map", block))
    assert png_head.name.endswith("_token_head2.png") and not png_mean.name.endswith("head2.png")
    a, b = (Image.open(p) for p in (png_mean, png_head))
    assert a.size[1] == b.size[1] and png_mean.read_bytes() != png_head.read_bytes()  # another map, same figure

    dropped, *_ = app.pick_rollout(head, True, "mean", 0.5, *DISPLAY, block)
    z_mean = Path(app.make_zip(state, "turbo", 1.0, "map", "32"))
    z_head = Path(app.make_zip(dropped, "turbo", 1.0, "map", "32"))
    assert z_mean != z_head
    with zipfile.ZipFile(z_mean) as zm, zipfile.ZipFile(z_head) as zh:
        sm, sh = json.loads(zm.read("result.json")), json.loads(zh.read("result.json"))
        assert sm["head"] is None and sh["head"] == 2
        assert sm["rollout"] == {"fusion": "mean", "discard_ratio": 0.0}
        assert sh["rollout"] == {"fusion": "mean", "discard_ratio": 0.5}
        tokens = [e for e in sh["maps"] if e["name"] != "rollout"]
        assert all(e["head"] == 2 and "head 2" in e["view"] for e in tokens)
        assert all(e["head"] == "mean" for e in sm["maps"] if e["name"] != "rollout")
        assert "head" not in sh["maps"][-1] and "lowest 50% discarded" in sh["maps"][-1]["view"]
        names = [n for n in zm.namelist() if n.startswith("overlays/")]
        assert names == [n for n in zh.namelist() if n.startswith("overlays/")]
        assert all(zm.read(n) != zh.read(n) for n in names)  # each block's head 2, and the discarded rollout
        rows = np.load(io.BytesIO(zh.read(next(n for n in zh.namelist() if n.endswith(".rows.npy")))))
        assert rows.shape == (3, 1, 197)  # the raw maps are as kept, whatever the head shown


def test_result_json_gives_each_window_map_s_layout(swin: tuple, tmp_path: Path) -> None:
    """Each window map's WindowLayout (grid, window, shift, pad_first, windows per image) is in result.json, as the
    recorder read it from the blocks: Swin-T's shifted blocks alternate with plain ones."""
    app, state = swin
    with zipfile.ZipFile(app.make_zip(state, "turbo", 1.0, "map", "32")) as zf:
        sidecar = json.loads(zf.read("result.json"))
    entries = sidecar["maps"]
    assert len(entries) == 12 and all(e["kind"] == "window" for e in entries)
    for e, m in zip(entries, state.result.maps, strict=True):
        w = m.window
        assert {"grid", "window", "shift", "pad_first", "count"} <= set(e["window"])
        fields = {f.name: getattr(w, f.name) for f in dataclasses.fields(w)}  # every field of the layout
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
        assert e["window"] == {**fields, "count": w.count}
    assert [e["window"]["grid"] for e in entries[:2]] == [[56, 56], [56, 56]]
    assert [e["window"]["shift"] for e in entries[:2]] == [[0, 0], [3, 3]]
    assert entries[-1]["window"]["count"] == 1  # 7 x 7 tokens, one window: no shift


def test_a_click_or_a_head_change_reuses_the_rollout_matrix(vit: tuple) -> None:
    """The rollout matrix (the product over every block: seconds for a DINOv2's 1374 tokens) is made once per result
    and settings (head fusion, discard ratio): a click on the rollout view (another query) and a head change draw
    from the same matrix object, and the clicked view is still that matrix's row; another discard ratio makes a new
    one, and going back reuses the first."""
    import gradio as gr

    from attnviz.capture.views import rollout_data

    app, state = vit
    rolled = state.rolled
    assert rolled is not None and rolled.shape == (1, 197, 197)
    first = state.views[-1]
    assert first.key == "rollout" and first.data is rolled
    click = gr.SelectData(None, {"index": [30, 200], "value": None, "selected": True})
    clicked, *_ = app.pick_query(state, *DISPLAY, "rollout", "0–1", click)
    assert clicked.query != state.query and clicked.views[-1].cell is not None
    assert clicked.rolled is rolled and clicked.views[-1].data is rolled  # not multiplied again
    np.testing.assert_array_equal(rolled, rollout_data(state.result.maps))  # what it caches is the rollout
    y, x = clicked.views[-1].cell
    np.testing.assert_array_equal(clicked.views[-1].spatial.ravel(), rolled[0, 1 + y * 14 + x, 1:])
    again, *_ = app.pick_query(
        clicked, *DISPLAY, "rollout", "0–1", gr.SelectData(None, {"index": [100, 10], "value": None, "selected": True})
    )
    assert again.views[-1].data is rolled
    headed, *_ = app.pick_head(again, "1", *DISPLAY, "rollout")
    assert headed.views[-1].data is rolled
    dropped, *_ = app.pick_rollout(state, True, "mean", 0.5, *DISPLAY, None)
    assert dropped.rolled is not rolled and not np.array_equal(dropped.rolled, rolled)
    back, *_ = app.pick_rollout(dropped, True, "mean", 0.0, *DISPLAY, None)
    assert back.rolled is rolled and back.views[-1].data is rolled
