"""The separating real-photo pointing test (issue 21, item 4) on the demo checkpoints.

Each of the shipped real photos is pasted ``--placements`` times at 20-40 % of the scene's side
(:data:`attnviz.data.photos.SMALL_PHOTO_SCALE`), at a seeded position uniform over the places that keep it inside,
onto the texture backgrounds; every attention type's default views are scored on the pointing game per stage and for
the stage average, against the centre prior, the plain backbone's activation map (channel mean of the same stage's
output) and a seeded random map, with 95 % intervals bootstrapped over the photos: a photo's placements are not
independent scenes (:func:`attnviz.train.pointing.photo_pointing`).

    python bench/photo_pointing.py [--placements 40] [--seed 0] [--json out.json] [--write-cards]
    python bench/photo_pointing.py --from-json out.json --write-cards   # the table and cards of a saved run

``--write-cards`` stores the result in every model card (``real_photo_pointing``: the type's row, the baselines,
scene count, scale and the command that measured it) and its ``.json`` copy; the tensors are written back unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import command, header

from attnviz import build_model
from attnviz.data.photos import SMALL_PHOTO_SCALE
from attnviz.sources.checkpoint import read_card, read_checkpoint, save_checkpoint
from attnviz.sources.demo import DEMO_ARCH, demo_dir, demo_file
from attnviz.sources.select import demo_attentions
from attnviz.train.pointing import BASELINES, photo_pointing, pointing_markdown


def measure(args: argparse.Namespace, folder: Path) -> dict:
    """Run :func:`photo_pointing` on the checkpoints in ``folder`` and print the heading."""
    torch.set_grad_enabled(False)
    plain_path = demo_file(None, folder)
    card = read_card(plain_path)
    plain = build_model(DEMO_ARCH, None, weights=str(plain_path))
    names = [a for a in (args.attention or demo_attentions()) if demo_file(a, folder).is_file()]
    models = {a: build_model(DEMO_ARCH, a, weights=str(demo_file(a, folder))) for a in names}
    t0 = time.perf_counter()
    r = photo_pointing(
        models,
        plain,
        card["classes"],
        card["mean"],
        card["std"],
        card["input_size"],
        placements=args.placements,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    seconds = time.perf_counter() - t0
    r["command"] = command(omit=("--json",))  # the cards store it: no output path
    r["seconds"] = round(seconds, 1)
    lo, hi = SMALL_PHOTO_SCALE
    header(
        "Real-photo pointing, small off-centre photos",
        "cpu",
        f"{r['scenes']} scenes ({len(r['photos']['photos'])} photos x {args.placements} placements) at "
        f"{100 * lo:.0f}-{100 * hi:.0f} % of the {card['input_size']} px side; the photo covers "
        f"{100 * r['mask_share']:.1f} % of the scene; tolerance {r['tolerance_px']} px; {seconds:.0f} s",
        clocked=False,
    )
    return r


def write_cards(r: dict, folder: Path) -> None:
    """Store ``r`` in the plain card and in every measured type's card as ``real_photo_pointing``."""
    baselines = {k: r["rows"][k] for k in BASELINES}
    common = {k: r.get(k) for k in ("scenes", "clusters", "mask_share", "tolerance_px", "columns", "command")}
    common["scale"] = list(r["photos"]["scale"])
    common["placements"] = r["photos"]["placements"]
    common["seed"] = r["photos"]["seed"]
    for a in r["accuracy"]:
        path = demo_file(None if a == "plain" else a, folder)
        sd, c = read_checkpoint(path)
        entry = {**common, "top1": r["accuracy"][a], "baselines": baselines}
        if a != "plain":
            entry["views"] = r["rows"].get(a)  # None: no spatial view
        c["real_photo_pointing"] = entry
        save_checkpoint(path, sd, c)
        print(f"wrote {path.name}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=None, help="checkpoint folder (default: the shipped models/)")
    p.add_argument("--attention", nargs="*", default=None, help="default: every type with a checkpoint")
    p.add_argument("--placements", type=int, default=40, help="scenes per photo (10 photos: 40 gives 400 scenes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes and of the random maps")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--json", default=None, help="also write every score to this file")
    p.add_argument("--write-cards", action="store_true", help="store the result in each model card")
    p.add_argument("--from-json", default=None, help="take the result of a saved --json run instead of measuring")
    args = p.parse_args(argv)
    folder = Path(args.models) if args.models else demo_dir()
    if args.from_json:
        r = json.loads(Path(args.from_json).read_text())
        print(f"from {args.from_json}, measured by `{r['command']}`\n")
    else:
        r = measure(args, folder)
    print(pointing_markdown(r))
    if args.json and not args.from_json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    if args.write_cards:
        write_cards(r, folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
