"""Top-1 of the demo checkpoints on real photos as a user uploads them (issue 21, item 6).

The real-photo scores in the model cards paste each photo at 45-85 % of a textured scene's side. A photo uploaded to
the page fills the frame instead: the page resizes its shorter side to the card's input size and keeps the whole
photo (:func:`attnviz.pipeline.image.preprocess`, no crop). This scores exactly that input, and its mirror image,
for every demo checkpoint in one or two model folders, with a 95 % interval bootstrapped over the photos (a photo's
two views are not independent), and, for two folders, the paired difference per type (both folders scored on the
same resampled photos).

    python bench/whole_photos.py [--photo-folder DIR] [--models DIR [DIR]] [--attention TYPE ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import command, header

from attnviz import build_model
from attnviz.data.photos import photos_dir, read_manifest
from attnviz.pipeline.image import preprocess
from attnviz.sources.checkpoint import read_card
from attnviz.sources.demo import DEMO_ARCH, demo_dir, demo_file
from attnviz.sources.select import demo_attentions
from attnviz.stats.intervals import bootstrap_mean


def photo_hits(folder: Path, attention: str | None, photos: Path) -> tuple[list[str], np.ndarray]:
    """(photo files, hits (P, 2)): whether the checkpoint's top-1 is the photo's class, for the whole photo and its
    mirror image; photos of classes the checkpoint lacks are left out."""
    path = demo_file(attention, folder)
    card = read_card(path)
    model = build_model(DEMO_ARCH, attention, weights=str(path)).eval()
    entries = [e for e in read_manifest(photos)["photos"] if e["class"] in card["classes"]]
    hits = np.zeros((len(entries), 2))
    with torch.inference_mode():
        for i, entry in enumerate(entries):
            image = Image.open(photos / entry["file"]).convert("RGB")
            views = [image, ImageOps.mirror(image)]
            for j, view in enumerate(views):
                x = preprocess(view, card["input_size"], card["mean"], card["std"])  # (1, 3, H, W) as the page
                hits[i, j] = float(int(model(x).argmax(1)) == card["classes"].index(entry["class"]))
    return [e["file"] for e in entries], hits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo-folder", default=None, help="a folder with manifest.json (default: the shipped photos)")
    p.add_argument("--models", nargs="+", default=None, help="one or two checkpoint folders (default: models/)")
    p.add_argument("--attention", nargs="*", default=None, help="types beside plain (default: every demo type)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    photos = Path(args.photo_folder) if args.photo_folder else photos_dir()
    folders = [Path(f) for f in args.models] if args.models else [demo_dir()]
    if len(folders) > 2:
        p.error("--models takes one or two folders")
    chosen = demo_attentions() if args.attention is None else [a for a in args.attention if a != "none"]
    names = [None, *chosen]  # plain first: the means below compare the types with it
    header("Whole photos as uploaded: top-1 of the demo checkpoints", "cpu", clocked=False)
    print(f"photos: {photos}; models: {', '.join(map(str, folders))}\n`{command()}`\n")
    cols = [f"{f.name or f}: top-1 [95 %]" for f in folders] + (["difference [95 %]"] if len(folders) == 2 else [])
    print("| type | photos | " + " | ".join(cols) + " |")
    print("|---" * (2 + len(cols)) + "|")
    means = [[] for _ in folders]
    for name in names:
        runs = [photo_hits(f, name, photos) for f in folders]
        per_photo = np.stack([hits.mean(1) for _, hits in runs], 1)  # (P, folders): each photo's share right
        cells = []
        for k in range(len(folders)):
            lo, hi = bootstrap_mean(per_photo[:, k])
            cells.append(f"{100 * per_photo[:, k].mean():.1f} [{100 * lo:.0f}, {100 * hi:.0f}]")
            means[k].append(per_photo[:, k].mean())
        if len(folders) == 2:
            diff = per_photo[:, 1] - per_photo[:, 0]  # (P,) paired by photo
            lo, hi = bootstrap_mean(diff)
            cells.append(f"{100 * diff.mean():+.1f} [{100 * lo:+.0f}, {100 * hi:+.0f}]")
        print(f"| {name or 'plain'} | {len(per_photo)} | " + " | ".join(cells) + " |")
    for k, f in enumerate(folders):
        types = f"mean over the {len(names) - 1} types {100 * np.mean(means[k][1:]):.1f} %, " if len(names) > 1 else ""
        print(f"\n{f}: {types}plain {100 * means[k][0]:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
