"""bench/whole_photos.py: the page's answer on whole photos, per checkpoint folder, with paired differences."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnviz import analyze
from attnviz.data.photos import photos_dir, read_manifest
from attnviz.sources.demo import demo_dir
from attnviz.stats.intervals import bootstrap_mean

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
_spec = importlib.util.spec_from_file_location("attnviz_bench_whole_photos", BENCH / "whole_photos.py")
whole = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(whole)


def test_hits_are_the_pages_own_top1_on_the_whole_photo() -> None:
    files, hits = whole.photo_hits(demo_dir(), "se", photos_dir())
    entries = {e["file"]: e["class"] for e in read_manifest(photos_dir())["photos"]}
    assert hits.shape == (len(files), 2) and set(np.unique(hits)) <= {0.0, 1.0}
    for i, name in enumerate(files[:3]):  # the first view is what the page classifies for this upload
        result = analyze(np.asarray(Image.open(photos_dir() / name).convert("RGB")), attention="se", weights="demo")
        assert hits[i, 0] == float(result.predictions[0][0] == entries[name])


@pytest.fixture
def keep_threads():
    """The bench sets torch's thread count, as a script should; the tests after this one run with the count they had
    (a stats test compares a batched and a per-image forward whose near-ties depend on it)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_folder_against_itself_differs_by_nothing(capsys, keep_threads) -> None:
    assert whole.main(["--models", str(demo_dir()), str(demo_dir()), "--attention", "eca"]) == 0
    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| plain") or line.startswith("| eca")
    ]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == cells[3] and cells[4].startswith("+0.0 [+0, +0]")
    per_photo = np.array([1.0, 0.5, 0.0, 1.0])
    lo, hi = bootstrap_mean(per_photo)  # the interval the bench prints
    assert 0.0 <= lo <= per_photo.mean() <= hi <= 1.0
