"""Two runs of ``attnviz eval --json`` side by side: top-1 of each checkpoint folder and their paired difference.

Two checkpoint folders scored with the same ``attnviz eval`` options (``--scenes``, ``--seed``, ``--photo-folder``,
``--placements``) saw the same scenes and the same photo scenes, so their difference is paired: on the held-out
scenes each scene is one unit (:func:`attnviz.train.evaluate.paired_delta_ci`), on the real photos each photo is
one unit (its placements share it; the per-photo rates are differenced and the photos resampled). That is far
narrower than comparing two separate intervals, and it is how the README's before/after deltas are computed.

    attnviz eval --data data/scenes --models A --scenes 2000 --placements 40 --photo-folder P --json a.json
    attnviz eval --data data/scenes --models B --scenes 2000 --placements 40 --photo-folder P --json b.json
    python bench/eval_diff.py a.json b.json          # B minus A, per type both files hold
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from attnviz.stats.intervals import bootstrap_mean
from attnviz.train.evaluate import paired_delta_ci


def photo_delta(a: dict, b: dict) -> tuple[float, float, float] | None:
    """(mean difference, 95 % low, high) of ``b``'s per-photo top-1 minus ``a``'s, photos resampled; ``None`` when
    either run has no photo scores or they scored different photos."""
    pa, pb = (r.get("real_photos", {}).get("per_photo") for r in (a, b))
    if not pa or not pb or set(pa) != set(pb):
        return None
    d = np.array([pb[k] - pa[k] for k in sorted(pa)])  # (photos,)
    lo, hi = bootstrap_mean(d)
    return float(d.mean()), lo, hi


def rows(a: dict, b: dict) -> list[list[str]]:
    """One table row per type both runs scored."""
    out = []
    for name in [k for k in a if k in b]:
        ra, rb = a[name], b[name]
        ci = paired_delta_ci(rb, ra)
        if ci is None:
            raise ValueError(f"{name}: the two runs did not score the same scenes (or lack predictions)")
        scenes = f"{100 * ra['accuracy']:.1f} → {100 * rb['accuracy']:.1f} ({100 * (rb['accuracy'] - ra['accuracy']):+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}])"  # noqa: E501
        photos = "–"
        pd_ = photo_delta(ra, rb)
        if pd_ is not None:
            acc = ra["real_photos"]["accuracy"], rb["real_photos"]["accuracy"]
            photos = f"{100 * acc[0]:.1f} → {100 * acc[1]:.1f} ({100 * pd_[0]:+.1f} [{100 * pd_[1]:+.1f}, {100 * pd_[2]:+.1f}])"  # noqa: E501
        out.append([name if name != "none" else "plain", str(len(ra["labels"])), scenes, photos])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", type=Path, help="attnviz eval --json of the first folder")
    p.add_argument("after", type=Path, help="the same for the second folder")
    args = p.parse_args(argv)
    try:
        a, b = (json.loads(f.read_text()) for f in (args.before, args.after))
        table = rows(a, b)
    except (OSError, ValueError, KeyError) as e:
        print(f"eval_diff: {e}", file=sys.stderr)
        return 2
    if not table:
        print("eval_diff: the two files share no type", file=sys.stderr)
        return 2
    print(f"{args.before} → {args.after}; paired 95 %: scenes resampled on the held-out scenes, photos on the photos\n")
    print("| type | scenes | held-out top-1 % | real-photo top-1 % |")
    print("|---|---|---|---|")
    for r in table:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
