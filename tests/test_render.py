"""attnviz.render: exact pixels on tiny arrays, normalisation modes, grid geometry, tables, PNG bytes, bad inputs."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from attnviz import render
from attnviz.render import (
    COLORMAPS,
    NORM_MODES,
    apply_colormap,
    branch_chart_png,
    channel_chart_png,
    channel_stats,
    channel_table,
    colormap_lut,
    encode_png,
    figure_png,
    matrix_png,
    normalize,
    overlay,
    pairwise_query,
    query_cell,
    tile_maps,
    upsample,
    value_range,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _decode(png: bytes) -> Image.Image:
    assert isinstance(png, bytes)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


# ----------------------------------------------------------------------------------------------- colormaps


def test_public_names() -> None:
    assert COLORMAPS == ("turbo", "jet", "viridis", "magma", "gray")
    assert set(NORM_MODES) == {"map", "stage", "network", "absolute"}
    assert all(isinstance(doc, str) and doc for doc in NORM_MODES.values())
    for name in render.__all__:
        assert hasattr(render, name)


@pytest.mark.parametrize("name", COLORMAPS)
def test_lut_matches_matplotlib_endpoints(name: str) -> None:
    lut = colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    cmap = matplotlib.colormaps[name]
    for i, x in ((0, 0.0), (255, 1.0), (128, 128 / 255)):
        np.testing.assert_array_equal(lut[i], np.rint(np.asarray(cmap(x)[:3]) * 255).astype(np.uint8))


def test_lut_gray_is_identity_and_read_only_and_cached() -> None:
    lut = colormap_lut("gray")
    np.testing.assert_array_equal(lut[0], [0, 0, 0])
    np.testing.assert_array_equal(lut[255], [255, 255, 255])
    np.testing.assert_array_equal(lut, np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1))
    assert colormap_lut("gray") is lut
    assert not lut.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        lut[0, 0] = 7


def test_lut_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown colormap 'hot'.*turbo.*jet.*viridis.*magma.*gray"):
        colormap_lut("hot")
    with pytest.raises(TypeError, match="cmap must be a str"):
        colormap_lut(3)  # type: ignore[arg-type]


def test_apply_colormap_indexes_by_rint_and_clips() -> None:
    m = np.array([[0.0, 0.5, 1.0], [-3.0, 2.0, 10 / 255]], dtype=np.float32)
    out = apply_colormap(m, "gray")
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[0, 128, 255], [0, 255, 10]])
    turbo = colormap_lut("turbo")
    np.testing.assert_array_equal(apply_colormap(m, "turbo")[0, 2], turbo[255])


def test_apply_colormap_rejects_nan_and_wrong_rank() -> None:
    with pytest.raises(ValueError, match="map01 contains NaN or inf"):
        apply_colormap(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"map01 must be 2-D \(H, W\), got shape \(4,\)"):
        apply_colormap(np.zeros(4))
    with pytest.raises(TypeError, match=r"map01 must be a numpy\.ndarray, got list"):
        apply_colormap([[0.0]])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- overlay


def test_overlay_alpha0_is_the_image_byte_for_byte(rng: np.random.Generator) -> None:
    img = _image(rng, 3, 5)
    before = img.copy()
    out = overlay(img, rng.random((2, 2)), "turbo", alpha=0.0)
    assert out.tobytes() == img.tobytes() and out.dtype == np.uint8
    assert out is not img
    np.testing.assert_array_equal(img, before)  # input untouched


def test_overlay_alpha1_is_the_colormap(rng: np.random.Generator) -> None:
    img = _image(rng, 2, 3)
    m = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 0.1]])
    out = overlay(img, m, "viridis", alpha=1.0)
    np.testing.assert_array_equal(out, colormap_lut("viridis")[np.rint(m * 255).astype(int)])
    np.testing.assert_array_equal(out, apply_colormap(m, "viridis"))


def test_overlay_blend_is_exact(rng: np.random.Generator) -> None:
    img = _image(rng, 2, 3)
    m = rng.random((2, 3))
    colour = apply_colormap(m, "magma").astype(np.float64)
    expected = np.rint(0.75 * img + 0.25 * colour).astype(np.uint8)
    np.testing.assert_array_equal(overlay(img, m, "magma", alpha=0.25), expected)


def test_overlay_small_map_on_non_square_image_keeps_sides() -> None:
    img = np.zeros((3, 5, 3), dtype=np.uint8)
    left_hot = np.array([[1.0, 0.0], [1.0, 0.0]])
    out = overlay(img, left_hot, "gray", alpha=1.0)
    assert out.shape == (3, 5, 3)
    # bilinear, half-pixel centres: columns sample the 2-wide map at x = -0.3, 0.1, 0.5, 0.9, 1.3 (edges clamped)
    np.testing.assert_array_equal(out[:, :, 0], np.tile([255, 230, 128, 26, 0], (3, 1)))
    top_hot = np.array([[1.0, 1.0], [0.0, 0.0]])
    tall = overlay(np.zeros((5, 3, 3), dtype=np.uint8), top_hot, "gray", alpha=1.0)
    assert tall.shape == (5, 3, 3)
    assert (tall[0] == 255).all() and (tall[-1] == 0).all()


def test_upsample_half_pixel_bilinear_and_aspect() -> None:
    m = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    up = upsample(m, (5, 3))
    assert up.shape == (3, 5) and up.dtype == np.float32
    np.testing.assert_allclose(up, np.tile([0.0, 0.1, 0.5, 0.9, 1.0], (3, 1)), atol=1e-6)
    same = upsample(m, (2, 2))
    np.testing.assert_array_equal(same, m)
    assert not np.shares_memory(same, m)
    wide = upsample(np.arange(6, dtype=np.float64).reshape(2, 3), (300, 40))
    assert wide.shape == (40, 300)


def test_upsample_bad_size() -> None:
    m = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"size must be positive, got \(0, 3\)"):
        upsample(m, (0, 3))
    with pytest.raises(TypeError, match=r"size must be a pair \(width, height\) of ints"):
        upsample(m, (2.5, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="map2d contains NaN or inf"):
        upsample(np.array([[np.inf]]), (2, 2))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"alpha": 1.5}, ValueError, r"alpha must be in \[0, 1\], got 1.5"),
        ({"alpha": -0.1}, ValueError, r"alpha must be in \[0, 1\]"),
        ({"alpha": float("nan")}, ValueError, r"alpha must be in \[0, 1\]"),
        ({"alpha": "0.5"}, TypeError, "alpha must be a number"),
        ({"cmap": "plasma"}, ValueError, "unknown colormap 'plasma'"),
        ({"image": np.zeros((3, 5, 3))}, TypeError, "image must be uint8 RGB, got dtype float64"),
        ({"image": np.zeros((3, 5, 4), np.uint8)}, ValueError, r"image must be \(H, W, 3\) RGB, got shape \(3, 5, 4\)"),
        ({"image": np.zeros((3, 5), np.uint8)}, ValueError, r"image must be \(H, W, 3\) RGB"),
        ({"map01": np.zeros((1, 2, 2))}, ValueError, r"map01 must be 2-D \(h, w\)"),
        ({"map01": np.full((2, 2), np.nan)}, ValueError, "map01 contains NaN or inf"),
        ({"map01": np.zeros((2, 2), bool)}, TypeError, "map01 must hold real numbers"),
    ],
)
def test_overlay_bad_inputs(kwargs: dict, exc: type[Exception], match: str) -> None:
    args = {"image": np.zeros((3, 5, 3), np.uint8), "map01": np.zeros((2, 2)), "cmap": "turbo", "alpha": 0.5}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        overlay(**args)


# ----------------------------------------------------------------------------------------------- normalisation


def test_normalize_map_mode_per_map_and_constant() -> None:
    a = np.array([[0.0, 2.0], [4.0, 1.0]])
    b = np.array([10.0, 20.0, 30.0], dtype=np.float32)
    c = np.full((2, 3), 7.0)
    a_before = a.copy()
    out = normalize([a, b, c])
    assert [o.shape for o in out] == [(2, 2), (3,), (2, 3)]
    assert all(o.dtype == np.float32 for o in out)
    np.testing.assert_allclose(out[0], [[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_allclose(out[1], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(out[2], np.zeros((2, 3)))  # constant: zeros, not NaN
    np.testing.assert_array_equal(a, a_before)
    assert value_range([a, b, c], "map") == [(0.0, 4.0), (10.0, 30.0), (7.0, 7.0)]


def test_normalize_stage_shares_range_per_group() -> None:
    a1 = np.array([0.0, 1.0])
    b = np.array([5.0, 10.0])
    a2 = np.array([2.0, 4.0])
    out = normalize([a1, b, a2], "stage", groups=[3, 4, 3])
    np.testing.assert_allclose(out[0], [0.0, 0.25])
    np.testing.assert_allclose(out[1], [0.0, 1.0])
    np.testing.assert_allclose(out[2], [0.5, 1.0])
    assert value_range([a1, b, a2], "stage", groups=[3, 4, 3]) == [(0.0, 4.0), (5.0, 10.0), (0.0, 4.0)]
    const = normalize([np.full(3, 2.0), np.full(2, 2.0)], "stage", groups=["s1", "s1"])
    assert all((o == 0).all() for o in const)


def test_normalize_network_shares_one_range() -> None:
    maps = [np.array([0.0, 1.0]), np.array([[2.0, 4.0]]), np.array([3.0])]
    out = normalize(maps, "network")
    np.testing.assert_allclose(out[0], [0.0, 0.25])
    np.testing.assert_allclose(out[1], [[0.5, 1.0]])
    np.testing.assert_allclose(out[2], [0.75])
    assert value_range(maps, "network") == [(0.0, 4.0)] * 3
    assert normalize([], "network") == []
    np.testing.assert_array_equal(normalize([np.ones(4)], "network")[0], np.zeros(4))


def test_normalize_absolute_clips_only() -> None:
    m = np.array([-0.5, 0.0, 0.25, 0.999, 1.5])
    out = normalize([m], "absolute")[0]
    np.testing.assert_allclose(out, [0.0, 0.0, 0.25, 0.999, 1.0], rtol=1e-6)
    assert value_range([m], "absolute") == [(0.0, 1.0)]
    gate = np.array([0.4, 0.45])  # a narrow sigmoid gate is NOT stretched
    np.testing.assert_allclose(normalize([gate], "absolute")[0], gate, rtol=1e-6)


def test_normalize_eps_is_the_smallest_divisor() -> None:
    out = normalize([np.array([0.0, 1e-9])], "map", eps=1e-8)[0]
    np.testing.assert_allclose(out, [0.0, 0.1], rtol=1e-5)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: normalize([np.zeros(2), np.array([1.0, np.nan])]), ValueError, r"maps\[1\] contains NaN or inf"),
        (lambda: normalize([np.array([np.inf])], "absolute"), ValueError, r"maps\[0\] contains NaN or inf"),
        (lambda: normalize([np.zeros(2)], "stage"), ValueError, "mode 'stage' needs groups"),
        (lambda: normalize([np.zeros(2)] * 2, "stage", [1]), ValueError, "got 1 keys for 2 maps"),
        (lambda: normalize([np.zeros(2)] * 2, "stage", [[1], [2]]), TypeError, r"groups\[0\] must be hashable"),
        (lambda: normalize([np.zeros(2)], "minmax"), ValueError, "unknown normalisation mode 'minmax'.*'map'"),
        (lambda: normalize(np.zeros((2, 2))), TypeError, r"maps must be a sequence.*wrap a single map as \[map\]"),
        (lambda: normalize([[0.0, 1.0]]), TypeError, r"maps\[0\] must be a numpy\.ndarray, got list"),
        (lambda: normalize([np.zeros(0)]), ValueError, r"maps\[0\] is empty"),
        (lambda: normalize([np.zeros(2)], eps=0.0), ValueError, "eps must be a finite number > 0"),
        (lambda: value_range([np.zeros(2)], "stage"), ValueError, "mode 'stage' needs groups"),
    ],
)
def test_normalize_bad_inputs(call, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------------------------- geometry


def test_query_cell_corners_and_clamping() -> None:
    size, grid = (100, 50), (7, 14)  # image (width, height); grid (h, w)
    assert query_cell((0, 0), size, grid) == (0, 0)
    assert query_cell((99.9, 49.9), size, grid) == (6, 13)
    assert query_cell((100, 50), size, grid) == (6, 13)  # the far edge belongs to the last cell
    assert query_cell((-3, -1), size, grid) == (0, 0)
    assert query_cell((99.9, 0), size, grid) == (0, 13)  # top right
    assert query_cell((0, 49.9), size, grid) == (6, 0)  # bottom left
    assert query_cell((50, 25), size, grid) == (3, 7)
    assert query_cell((7.15, 7.15), size, grid) == (1, 1)  # 7.15/100*14 = 1.001, 7.15/50*7 = 1.001


def test_query_cell_bad_inputs() -> None:
    with pytest.raises(ValueError, match="xy must be finite"):
        query_cell((float("nan"), 0), (10, 10), (2, 2))
    with pytest.raises(TypeError, match=r"xy must be a pair \(x, y\)"):
        query_cell((1, 2, 3), (10, 10), (2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grid must be positive"):
        query_cell((1, 2), (10, 10), (0, 2))
    with pytest.raises(TypeError, match=r"image_size must be a pair \(width, height\) of ints"):
        query_cell((1, 2), 10, (2, 2))  # type: ignore[arg-type]


def test_pairwise_query_picks_the_row_and_averages_heads(rng: np.random.Generator) -> None:
    heads, h, w = 3, 3, 4
    attn = rng.random((heads, h * w, h * w)).astype(np.float32)
    attn /= attn.sum(axis=-1, keepdims=True)
    out = pairwise_query(attn, (h, w), (1, 2))  # row-major query index 1*4 + 2 = 6
    assert out.shape == (heads + 1, h, w) and out.dtype == np.float32
    for k in range(heads):
        np.testing.assert_array_equal(out[k], attn[k, 6].reshape(h, w))
    np.testing.assert_allclose(out[-1], attn[:, 6].mean(axis=0).reshape(h, w), rtol=1e-6)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), np.ones(heads + 1), rtol=1e-5)
    last = pairwise_query(attn, (h, w), (2, 1))  # 2*4 + 1 = 9
    np.testing.assert_array_equal(last[1], attn[1, 9].reshape(h, w))
    one_hot = np.zeros((1, h * w, h * w), np.float32)
    one_hot[0, 6, 11] = 1.0  # query (1, 2) looks only at key (2, 3), the bottom-right cell
    spot = pairwise_query(one_hot, (h, w), (1, 2))
    assert spot[0, 2, 3] == 1.0 and spot[0].sum() == 1.0 and spot[-1, 2, 3] == 1.0


def test_pairwise_query_bad_inputs() -> None:
    attn = np.full((1, 6, 6), 1 / 6)
    with pytest.raises(ValueError, match=r"N = h\*w = 4 for grid \(2, 2\), got shape \(1, 6, 6\)"):
        pairwise_query(attn, (2, 2), (0, 0))
    with pytest.raises(ValueError, match=r"cell \(2, 0\) lies outside the grid \(2, 3\)"):
        pairwise_query(attn, (2, 3), (2, 0))
    with pytest.raises(ValueError, match=r"attn must be 3-D \(heads, N, N\)"):
        pairwise_query(attn[0], (2, 3), (0, 0))


def test_tile_maps_layout_and_per_map_normalisation() -> None:
    s, h, w = 5, 2, 3
    maps = np.stack([np.arange(h * w, dtype=np.float64).reshape(h, w) * (i + 1) + 10 * i for i in range(s)])
    maps[4] = 3.0  # a constant unit
    out = tile_maps(maps, cols=3, pad=1)
    assert out.shape == (2 * h + 1, 3 * w + 2) and out.dtype == np.float32
    ramp = np.arange(6, dtype=np.float32).reshape(h, w) / 5
    for i in range(4):
        r, c = divmod(i, 3)
        np.testing.assert_allclose(out[r * 3 : r * 3 + h, c * 4 : c * 4 + w], ramp, rtol=1e-6)
    np.testing.assert_array_equal(out[3:5, 4:7], np.zeros((h, w)))  # constant unit -> 0
    np.testing.assert_array_equal(out[3:5, 8:11], np.zeros((h, w)))  # empty slot
    np.testing.assert_array_equal(out[2], np.zeros(11))  # padding row
    np.testing.assert_array_equal(out[:, 3], np.zeros(5))  # padding column
    assert tile_maps(maps, cols=8, pad=0).shape == (h, 5 * w)  # cols > S: one row of S tiles
    assert tile_maps(maps[:1], cols=4, pad=2).shape == (h, w)


def test_tile_maps_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"maps must be 3-D \(S, h, w\)"):
        tile_maps(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="cols must be >= 1, got 0"):
        tile_maps(np.zeros((2, 2, 2)), cols=0)
    with pytest.raises(ValueError, match="pad must be >= 0, got -1"):
        tile_maps(np.zeros((2, 2, 2)), pad=-1)


# ----------------------------------------------------------------------------------------------- channels


def test_channel_table_sorting_topk_labels() -> None:
    gate = np.array([0.1, 0.9, 0.5, 0.9, 0.3], dtype=np.float32)
    table = channel_table(gate, topk=3)
    assert list(table.columns) == ["channel", "index", "weight"]
    assert table["index"].tolist() == [1, 3, 2]  # ties keep channel order
    assert table["channel"].tolist() == ["c0001", "c0003", "c0002"]
    np.testing.assert_allclose(table["weight"], [0.9, 0.9, 0.5], rtol=1e-6)
    assert table.index.tolist() == [0, 1, 2]
    full = channel_table(gate, topk=None)
    assert full["index"].tolist() == [1, 3, 2, 4, 0]
    assert len(channel_table(gate, topk=100)) == 5
    wide = channel_table(np.zeros(20000), topk=2)
    assert wide["channel"].tolist() == ["c00000", "c00001"]


def test_channel_table_bad_inputs() -> None:
    with pytest.raises(ValueError, match="topk must be >= 1 or None, got 0"):
        channel_table(np.ones(3), topk=0)
    with pytest.raises(TypeError, match="topk must be an int or None"):
        channel_table(np.ones(3), topk=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"gate must be 1-D \(C,\)"):
        channel_table(np.ones((1, 3)))


def test_channel_stats_flatness() -> None:
    flat = (0.5 + np.linspace(-0.05, 0.05, 64)).astype(np.float32)
    s = channel_stats(flat)
    assert s["flat"] is True
    assert "flat gate" in s["note"] and "0.05 of 0.5" in s["note"]
    assert s["channels"] == 64
    assert s["min"] == pytest.approx(0.45, abs=1e-6) and s["max"] == pytest.approx(0.55, abs=1e-6)
    assert s["mean"] == pytest.approx(0.5, abs=1e-6)
    assert s["std"] == pytest.approx(float(np.std(flat.astype(np.float64))), rel=1e-9)
    decided = flat.copy()
    decided[3] = 0.56
    d = channel_stats(decided)
    assert d["flat"] is False and "flat" not in d["note"]
    assert channel_stats(np.array([0.0, 1.0]))["flat"] is False
    assert {"mean", "min", "max", "std", "flat", "note"} <= set(s)


# ----------------------------------------------------------------------------------------------- PNGs


def test_channel_chart_png(rng: np.random.Generator) -> None:
    img = _decode(channel_chart_png(rng.random(256), topk=32, title="layer1.0 SE"))
    assert img.mode in ("RGB", "RGBA")
    assert 400 <= img.width <= 2000 and 200 <= img.height <= 1000
    _decode(channel_chart_png(np.array([-2.0, 3.0, 0.5]), topk=None))  # not a gate: no fixed 0..1 axis
    _decode(channel_chart_png(np.full(300, 0.5), topk=None))  # many bars, flat
    with pytest.raises(ValueError, match="topk must be >= 1"):
        channel_chart_png(np.ones(4), topk=-1)


def test_branch_chart_png(rng: np.random.Generator) -> None:
    weights = rng.dirichlet(np.ones(4), size=128).T  # (K, C)
    img = _decode(branch_chart_png(weights, title="EPSA", labels=["3x3", "5x5", "7x7", "9x9"], topk=64))
    assert img.mode in ("RGB", "RGBA")
    assert 400 <= img.width <= 2000 and 200 <= img.height <= 1000
    _decode(branch_chart_png(weights[:2, :5], topk=None))
    with pytest.raises(ValueError, match="labels must name each of the K = 4 branches, got 2"):
        branch_chart_png(weights, labels=["a", "b"])
    with pytest.raises(TypeError, match="labels must be a sequence of 4 str"):
        branch_chart_png(weights, labels="abcd")
    with pytest.raises(ValueError, match=r"weights must be 2-D \(K, C\)"):
        branch_chart_png(weights[0])


def test_branch_order_dominant_branch_then_weight() -> None:
    weights = np.array(
        [
            [0.9, 0.2, 0.6, 0.1, 0.5],  # branch 0
            [0.1, 0.8, 0.4, 0.9, 0.5],  # branch 1 (channel 4 ties: argmax picks branch 0)
        ]
    )
    assert render._branch_order(weights, None).tolist() == [0, 2, 4, 3, 1]
    assert render._branch_order(weights, 3).tolist() == [0, 3, 1]  # the 3 most decided: 0.9, 0.9, 0.8


def test_matrix_png(rng: np.random.Generator) -> None:
    mat = rng.random((64, 64))
    img = _decode(matrix_png(mat / mat.sum(axis=1, keepdims=True), title="DA channel"))
    assert img.mode in ("RGB", "RGBA")
    assert 300 <= img.width <= 1500 and 300 <= img.height <= 1500
    with pytest.raises(ValueError, match="unknown colormap 'hot'"):
        matrix_png(mat, cmap="hot")
    with pytest.raises(ValueError, match="mat contains NaN or inf"):
        matrix_png(np.full((2, 2), np.nan))


def test_figure_png_keeps_aspect(rng: np.random.Generator) -> None:
    wide = _decode(figure_png(_image(rng, 60, 200), rng.random((7, 7)), vrange=(0.2, 0.9), label="gate", title="t"))
    tall = _decode(figure_png(_image(rng, 200, 60), rng.random((7, 7))))
    for img in (wide, tall):
        assert img.mode in ("RGB", "RGBA")
        assert 200 <= img.width <= 2500 and 150 <= img.height <= 2500
    assert wide.width / wide.height > 1.5 > tall.width / tall.height
    _decode(figure_png(_image(rng, 30, 40), np.zeros((3, 3)), vrange=(0.3, 0.3)))  # a constant map
    with pytest.raises(ValueError, match="vrange must be finite with vmin <= vmax"):
        figure_png(_image(rng, 4, 4), np.zeros((2, 2)), vrange=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        figure_png(_image(rng, 4, 4), np.zeros((2, 2)), alpha=2.0)


def test_encode_png_round_trip(rng: np.random.Generator) -> None:
    rgb = _image(rng, 5, 7)
    back = _decode(encode_png(rgb))
    assert back.mode == "RGB" and back.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(back), rgb)
    grey = rgb[..., 0].copy()
    np.testing.assert_array_equal(np.asarray(_decode(encode_png(grey))), grey)
    np.testing.assert_array_equal(np.asarray(_decode(encode_png(rgb[:, ::-1]))), rgb[:, ::-1])  # non-contiguous
    with pytest.raises(ValueError, match=r"arr must be \(H, W\) or \(H, W, 3\) RGB, got shape \(5, 7, 4\)"):
        encode_png(np.zeros((5, 7, 4), np.uint8))
    with pytest.raises(TypeError, match="arr must be uint8, got dtype float32"):
        encode_png(np.zeros((5, 7), np.float32))


def test_encode_png_levels_and_jpeg(rng: np.random.Generator) -> None:
    smooth = np.repeat(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], 48, 0).repeat(3, 2)  # (48, 64, 3)
    for level in (0, 1, 9):
        np.testing.assert_array_equal(np.asarray(_decode(encode_png(smooth, compress_level=level))), smooth)
    with pytest.raises(ValueError, match=r"compress_level must be in 0..9, got 10"):
        encode_png(smooth, compress_level=10)
    with pytest.raises(TypeError, match="compress_level must be an int, got float"):
        encode_png(smooth, compress_level=1.0)  # type: ignore[arg-type]
    jpeg = render.encode_jpeg(smooth, quality=90)
    assert jpeg[:3] == b"\xff\xd8\xff"
    back = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)
    assert back.shape == smooth.shape and np.abs(back - smooth).max() <= 4  # lossy, but close on a smooth image
    with pytest.raises(ValueError, match=r"quality must be in 1..95, got 0"):
        render.encode_jpeg(smooth, quality=0)
    with pytest.raises(TypeError, match="arr must be uint8"):
        render.encode_jpeg(smooth.astype(np.float32))


def test_display_size() -> None:
    assert render.display_size((451, 300), 800) == (451, 300)  # fits: kept
    assert render.display_size((4000, 3000), 800) == (800, 600)
    assert render.display_size((3000, 4000), 800) == (600, 800)
    assert render.display_size((10_000, 3), 100) == (100, 1)  # never 0
    with pytest.raises(ValueError, match="max_side must be in"):
        render.display_size((10, 10), 0)
    with pytest.raises(TypeError, match="size must be a pair"):
        render.display_size(10, 10)  # type: ignore[arg-type]


def test_charts_are_thread_safe_and_deterministic(rng: np.random.Generator) -> None:
    gate = rng.random(128)
    expected = channel_chart_png(gate, title="x")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: channel_chart_png(gate, title="x"), range(4)))
    assert all(r == expected for r in results)


def test_render_never_imports_pyplot() -> None:
    code = (
        "import sys, numpy as np\n"
        "from attnviz import render\n"
        "render.channel_chart_png(np.linspace(0, 1, 8))\n"
        "render.figure_png(np.zeros((4, 4, 3), np.uint8), np.zeros((2, 2)))\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.7])
def test_overlay_matches_the_float_reference_on_a_photo_sized_image(rng: np.random.Generator, alpha: float) -> None:
    """OpenCV draws the overlay (resize, LUT, addWeighted): the same pixels as the float32 formula
    rint((1 - a) * image + a * colour), up to one level where the float rounding lands on a tie."""
    img = rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)
    m = rng.random((10, 15))
    colour = apply_colormap(upsample(m, (451, 300)), "turbo").astype(np.float32)
    expected = np.rint(img.astype(np.float32) * np.float32(1 - alpha) + colour * np.float32(alpha))
    diff = np.abs(overlay(img, m, "turbo", alpha).astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


# ----------------------------------------------------------------------------------------------- difference overlay


def _diff_colour(d: np.ndarray) -> np.ndarray:
    """matplotlib's RdBu_r at index rint((d + 1) / 2 * 255) of its 256 entries, as uint8 RGB."""
    from matplotlib import colormaps

    idx = np.rint((np.clip(d, -1, 1) + 1) / 2 * 255).astype(int)
    return np.rint(colormaps["RdBu_r"](idx / 255.0)[..., :3] * 255).astype(np.uint8)


def test_diff_overlay_alpha1_is_the_diverging_colormap() -> None:
    from attnviz.render import diff_overlay

    img = np.zeros((2, 3, 3), np.uint8)
    d = np.array([[-1.0, 0.0, 1.0], [-0.5, 0.25, 2.0]])  # 2.0 is clipped to 1
    out = diff_overlay(img, d, alpha=1.0)
    np.testing.assert_array_equal(out, _diff_colour(d))
    red, white, blue = out[0, 2], out[0, 1], out[0, 0]
    assert red[0] > 100 and red[2] < 40 and blue[2] > 90 and blue[0] < 10 and white.min() > 240  # A more: red
    np.testing.assert_array_equal(out[1, 2], out[0, 2])


def test_diff_overlay_blend_is_exact_and_alpha0_is_the_image(rng: np.random.Generator) -> None:
    from attnviz.render import diff_overlay

    img = _image(rng, 4, 5)
    before = img.copy()
    d = rng.uniform(-1, 1, (4, 5))
    expected = np.rint(0.4 * img + 0.6 * _diff_colour(d).astype(np.float64)).astype(np.uint8)
    diff = np.abs(diff_overlay(img, d, alpha=0.6).astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.9  # OpenCV's blend rounds in float32
    same = diff_overlay(img, d, alpha=0.0)
    assert same.tobytes() == img.tobytes() and same is not img
    np.testing.assert_array_equal(img, before)  # input untouched


def test_diff_overlay_upsamples_to_the_image() -> None:
    from attnviz.render import diff_overlay

    img = np.zeros((3, 5, 3), np.uint8)
    out = diff_overlay(img, np.array([[1.0, 0.0], [1.0, 0.0]]), alpha=1.0)
    assert out.shape == (3, 5, 3)
    # the same half-pixel bilinear upsampling as overlay(): columns at x = -0.3, 0.1, 0.5, 0.9, 1.3
    np.testing.assert_array_equal(out[0], _diff_colour(np.array([1.0, 0.9, 0.5, 0.1, 0.0])))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"image": np.zeros((3, 5), np.uint8)}, ValueError, r"image must be \(H, W, 3\) RGB"),
        ({"image": np.zeros((3, 5, 3), np.float32)}, TypeError, "image must be uint8"),
        ({"diff": np.zeros((2, 2, 2))}, ValueError, "diff must be 2-D"),
        ({"diff": np.array([[np.nan, 0.0]])}, ValueError, "diff contains NaN"),
        ({"diff": [[0.0]]}, TypeError, "diff must be a numpy.ndarray"),
        ({"alpha": 1.5}, ValueError, r"alpha must be in \[0, 1\]"),
    ],
)
def test_diff_overlay_bad_inputs(kwargs: dict, exc: type[Exception], match: str) -> None:
    from attnviz.render import diff_overlay

    args = {"image": np.zeros((3, 5, 3), np.uint8), "diff": np.zeros((2, 2)), "alpha": 0.5}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        diff_overlay(**args)


def test_encode_png_fast_is_lossless_and_validated(rng: np.random.Generator) -> None:
    from attnviz.render import encode_png_fast

    rgb = _image(rng, 30, 47)
    back = np.asarray(Image.open(io.BytesIO(encode_png_fast(rgb))))
    assert back.shape == rgb.shape and Image.open(io.BytesIO(encode_png_fast(rgb))).mode == "RGB"
    np.testing.assert_array_equal(back, rgb)  # RGB order kept, every pixel exact
    grey = rgb[..., 0].copy()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png_fast(grey)))), grey)
    with pytest.raises(TypeError, match="arr must be uint8"):
        encode_png_fast(rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"arr must be \(H, W\) or \(H, W, 3\) RGB"):
        encode_png_fast(np.zeros((4, 4, 4), np.uint8))
