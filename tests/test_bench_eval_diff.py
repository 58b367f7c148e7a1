"""bench/eval_diff.py: two ``attnviz eval --json`` runs, paired per scene and per photo."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
_spec = importlib.util.spec_from_file_location("attnviz_bench_eval_diff", BENCH / "eval_diff.py")
diff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diff)


def _run(correct: np.ndarray, per_photo: dict[str, float]) -> dict:
    """An ``attnviz eval --json`` entry: labels all 0, a prediction right where ``correct`` is."""
    n = len(correct)
    preds = np.where(correct, 0, 1).tolist()
    photos = {"accuracy": float(np.mean(list(per_photo.values()))) if per_photo else 0.0, "per_photo": per_photo}
    return {"accuracy": float(correct.mean()), "labels": [0] * n, "predictions": preds, "real_photos": photos}


def test_the_difference_is_paired_and_b_minus_a(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.5
    b = a.copy()
    b[np.flatnonzero(~a)[:40]] = True  # b gets 40 more scenes right and loses none: +10 points, all paired
    photos_a = {"p1.jpg": 0.0, "p2.jpg": 1.0, "p3.jpg": 0.5, "p4.jpg": 0.25}
    photos_b = {"p1.jpg": 0.5, "p2.jpg": 1.0, "p3.jpg": 0.5, "p4.jpg": 0.25}
    (tmp_path / "a.json").write_text(json.dumps({"none": _run(a, photos_a), "se": _run(a, photos_a)}))
    (tmp_path / "b.json").write_text(json.dumps({"none": _run(b, photos_b)}))
    assert diff.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| plain"))
    # scenes: every resample differs by exactly the 40 changed scenes' share, so the interval is tight and positive
    assert f"{100 * a.mean():.1f} → {100 * b.mean():.1f} (+10.0 [+" in row
    lo = float(row.split("[")[1].split(",")[0])
    assert 7.0 < lo < 10.0
    assert "43.8 → 56.2 (+12.5 [+0.0, +37.5])" in row  # one photo of four moved by 50 points; 4 photos resampled
    assert "| se" not in out  # only the types both files hold


def test_runs_on_different_scenes_are_refused(tmp_path, capsys) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"none": _run(np.ones(10, bool), {"p.jpg": 1.0})}))
    other = _run(np.ones(12, bool), {"p.jpg": 1.0})
    (tmp_path / "b.json").write_text(json.dumps({"none": other}))
    assert diff.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "did not score the same scenes" in capsys.readouterr().err
    assert diff.main([str(tmp_path / "a.json"), str(tmp_path / "missing.json")]) == 2
    assert "No such file" in capsys.readouterr().err


@pytest.mark.parametrize("photos", [{}, {"q.jpg": 1.0}])
def test_photos_that_differ_are_left_out_not_compared(photos: dict, tmp_path, capsys) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"none": _run(np.ones(10, bool), {"p.jpg": 1.0})}))
    (tmp_path / "b.json").write_text(json.dumps({"none": _run(np.ones(10, bool), photos)}))
    assert diff.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| plain"))
    assert row.endswith("| 100.0 → 100.0 (+0.0 [+0.0, +0.0]) | – |")
