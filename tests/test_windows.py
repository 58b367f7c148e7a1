"""Window attention (Swin) read against the whole grid: attnviz.capture.windows and the Swin adapters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnviz.capture.recorder import AttentionRecorder
from attnviz.capture.views import build_views
from attnviz.capture.windows import WindowLayout, query_rows, received

ROOT = Path(__file__).resolve().parents[1]


def _windowed_softmax(x: torch.Tensor, m: int, shift: int, pad_first: bool, heads: int = 2) -> torch.Tensor:
    """A hand-written Swin attention's weights: (B, H, W, C) rolled by -shift (timm: then padded; torchvision:
    padded first), cut into m x m windows, softmax(q k^T) per head -> (B*nW, heads, m*m, m*m)."""
    b, h, w, c = x.shape
    ph, pw = (-h) % m, (-w) % m
    if pad_first:
        x = torch.nn.functional.pad(x, (0, 0, 0, pw, 0, ph))
        x = torch.roll(x, (-shift, -shift), (1, 2))
    else:
        x = torch.nn.functional.pad(torch.roll(x, (-shift, -shift), (1, 2)), (0, 0, 0, pw, 0, ph))
    hp, wp = x.shape[1:3]
    win = x.view(b, hp // m, m, wp // m, m, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, m * m, c)  # (B*nW, M², C)
    q = win.view(win.shape[0], m * m, heads, c // heads).transpose(1, 2)  # (B*nW, heads, M², d)
    return torch.softmax(q @ q.transpose(-1, -2), dim=-1)


def _window_of(y: int, x: int, grid: tuple[int, int], m: int, shift: int, pad_first: bool) -> tuple[int, int]:
    """Plain reference: the (window index, token index) holding image position (y, x)."""
    h, w = grid
    hp, wp = -(-h // m) * m, -(-w // m) * m
    a, b = ((y - shift) % hp, (x - shift) % wp) if pad_first else ((y - shift) % h, (x - shift) % w)
    return (a // m) * (wp // m) + b // m, (a % m) * m + b % m


@pytest.mark.parametrize(
    ("grid", "m", "shift", "pad_first"),
    [((8, 8), 4, 2, False), ((8, 8), 4, 0, False), ((6, 7), 4, 2, False), ((6, 7), 4, 2, True)],
)
def test_received_and_query_rows_match_a_loop(grid: tuple[int, int], m: int, shift: int, pad_first: bool) -> None:
    torch.manual_seed(0)
    a = _windowed_softmax(torch.randn(1, *grid, 8), m, shift, pad_first).double()  # (nW, heads, M², M²)
    layout = WindowLayout(grid, (m, m), (shift, shift), pad_first)
    assert a.shape[0] == layout.count
    data = a.numpy()
    # reference: for each position, the mean over its window's real queries and heads of the weight it receives
    real = {}
    for y in range(grid[0]):
        for x in range(grid[1]):
            wi, j = _window_of(y, x, grid, m, shift, pad_first)
            real.setdefault(wi, []).append(j)
    ref = np.zeros(grid)
    for y in range(grid[0]):
        for x in range(grid[1]):
            wi, j = _window_of(y, x, grid, m, shift, pad_first)
            ref[y, x] = np.mean([data[wi, h, q, j] for h in range(data.shape[1]) for q in real[wi]])
    np.testing.assert_allclose(received(data, layout), ref, atol=1e-6)
    # a query near the border (bottom-right corner: a wrapped window when shifted): its row on the whole grid
    y, x = grid[0] - 1, grid[1] - 1
    wi, q = _window_of(y, x, grid, m, shift, pad_first)
    rows = query_rows(data, layout, (y, x))
    expect = np.zeros((data.shape[1], *grid))
    for yy in range(grid[0]):
        for xx in range(grid[1]):
            wj, j = _window_of(yy, xx, grid, m, shift, pad_first)
            if wj == wi:
                expect[:, yy, xx] = data[wi, :, q, j]
    np.testing.assert_allclose(rows[:-1], expect, atol=1e-6)
    np.testing.assert_allclose(rows[-1], expect.mean(0), atol=1e-6)
    if shift:  # the shift is undone: the right border's window wraps round to the left border (cyclic shift)
        assert rows[-1][:, 0].max() > 0 and rows[-1][:, grid[1] - 1].max() > 0


def _models() -> list[tuple[str, torch.nn.Module]]:
    timm = pytest.importorskip("timm")
    tv = pytest.importorskip("torchvision")
    return [
        ("timm", timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)),
        ("torchvision", tv.models.swin_t(weights=None)),
    ]


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_swin_models_give_one_window_map_per_block() -> None:
    x = torch.randn(1, 3, 224, 224)
    for lib, model in _models():
        model.eval()
        blocks = [n for n, m in model.named_modules() if type(m).__name__ in ("SwinTransformerBlock",)]
        with torch.no_grad():
            bare = model(x)
            with AttentionRecorder(model) as rec:
                out = model(x)
        assert torch.equal(bare, out), lib
        assert _hooks(model) == 0, lib
        maps = rec.maps
        assert len(blocks) == 12 and len(maps) == len(blocks), (lib, len(maps))
        assert {m.kind for m in maps} == {"window"}, lib
        assert not rec.unclassified, rec.unclassified
        shifts = [m.window.shift for m in maps]
        assert shifts[:4] == [(0, 0), (3, 3), (0, 0), (3, 3)] and shifts[-1] == (0, 0), (lib, shifts)  # last: 7 x 7
        for m in maps:
            assert m.data.shape[1] == m.window.count and m.size == m.window.grid
            torch.testing.assert_close(m.data.sum(-1), torch.ones(m.data.shape[:-1]), atol=1e-4, rtol=0)
        views = build_views(type("R", (), {"maps": maps, "activations": {}})())
        assert all(v.spatial is not None and v.spatial.shape == v.grid for v in views)
        second = views[1]  # a shifted block: what each position receives equals the stitched reference
        np.testing.assert_allclose(second.spatial, received(maps[1].data[0].numpy(), maps[1].window), atol=1e-6)


def test_keep_mean_keeps_the_head_mean() -> None:
    _, model = _models()[0]
    model.eval()
    with torch.no_grad(), AttentionRecorder(model, keep="mean") as rec:
        model(torch.randn(1, 3, 224, 224))
    m = rec.maps[0]
    assert m.data.shape == (1, 64, 1, 49, 49) and m.kept == "" and "kept: the head mean" in m.layout


def test_render_cli_writes_swin_overlays(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    cmd = [str(ROOT / ".venv/bin/attnviz"), "render", str(ROOT / "assets/chelsea_cat.jpg"), "--model",
           "timm:swin_tiny_patch4_window7_224", "--weights", "random", "--offline", "--out", str(tmp_path),
           "--workers", "0"]  # fmt: skip
    if not Path(cmd[0]).exists():
        cmd[:1] = [sys.executable, "-m", "attnviz"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    pngs = list(tmp_path.rglob("*.png")) + list(tmp_path.rglob("*.jpg"))
    assert len(pngs) >= 12, sorted(p.name for p in tmp_path.rglob("*"))
