"""Build the cut-out folder the shipped demo models were trained on, from Debian's ``tuxpaint-stamps-default``.

    apt-get download tuxpaint-stamps-default && dpkg -x tuxpaint-stamps-default_*.deb /tmp/tux
    python -m attnviz.data.tuxpaint /tmp/tux/usr/share/tuxpaint/stamps --out data/scenes

writes ``objects/<class>/*.png`` (RGBA cut-outs cropped to their alpha and shrunk to at most 256 px),
``distractors/*.png`` (cut-outs of categories that are none of the classes) and ``backgrounds/*.png``
(scikit-image's texture photos when scikit-image is installed). The stamps are GPL-2 (Debian package
``tuxpaint-stamps-default``); see ``models/*.json`` for the data recipe.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CLASSES", "DISTRACTORS", "build_folder"]

#: class -> stamp category folders (relative to ``usr/share/tuxpaint/stamps``), subfolders included.
CLASSES: dict[str, tuple[str, ...]] = {
    "mammal": ("animals/mammals", "animals/marsupials"),
    "bird": ("animals/birds",),
    "insect": ("animals/insects",),
    "fish": ("animals/fish", "animals/shellfish"),
    "fruit": ("food/fruit",),
    "vegetable": ("food/vegetables", "food/nuts"),
    "flower": ("plants/flowers",),
    "vehicle": ("vehicles", "military/vehicles"),
}

#: categories pasted as clutter: objects that belong to none of the classes.
DISTRACTORS: tuple[str, ...] = (
    "clothes",
    "household",
    "hobbies",
    "sports",
    "medical",
    "symbols/shapes",
    "symbols/chess",
    "symbols/money",
    "town/roadsigns",
    "space/planets",
    "plants/mushrooms",
)

#: scikit-image photos with none of the classes in them, used as textured backgrounds.
BACKGROUND_PHOTOS: tuple[str, ...] = ("grass", "gravel", "brick", "rough-wall", "text", "page", "coins", "moon")
MAX_SIDE = 256


def _cutout(src: Path) -> Image.Image | None:
    """The stamp as RGBA cropped to its opaque pixels and shrunk to ``MAX_SIDE``; ``None`` if it has no alpha."""
    with Image.open(src) as im:
        im = im.convert("RGBA")
    alpha = np.asarray(im)[..., 3]
    if alpha.min() > 250:  # no transparency: not a cut-out
        return None
    ys, xs = np.nonzero(alpha > 127)
    if len(ys) < 64:
        return None
    im = im.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return im


def _copy_category(stamps: Path, folders: Sequence[str], dest: Path, prefix: str = "") -> int:
    n = 0
    for folder in folders:
        for src in sorted((stamps / folder).rglob("*.png")):
            if src.name.endswith("_mirror.png") or "_thumb" in src.name:
                continue
            im = _cutout(src)
            if im is None:
                continue
            rel = src.relative_to(stamps).with_suffix("")
            im.save(dest / f"{prefix}{'_'.join(rel.parts)}.png", optimize=True)
            n += 1
    return n


def build_folder(stamps: str | Path, out: str | Path) -> dict[str, int]:
    """Write ``objects/``, ``distractors/`` and ``backgrounds/`` under ``out`` from the stamps folder.

    Returns:
        how many cut-outs each class (and ``distractors``, ``backgrounds``) received.

    Raises:
        ValueError: ``stamps`` is not a tuxpaint stamps folder.
    """
    stamps, out = Path(stamps), Path(out)
    if not (stamps / "animals").is_dir():
        raise ValueError(f"{stamps} is not a tuxpaint stamps folder (expected animals/, food/, ... inside)")
    counts: dict[str, int] = {}
    for sub in ("objects", "distractors", "backgrounds"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for name, folders in CLASSES.items():
        (out / "objects" / name).mkdir(parents=True)
        counts[name] = _copy_category(stamps, folders, out / "objects" / name)
    (out / "distractors").mkdir(parents=True)
    counts["distractors"] = _copy_category(stamps, DISTRACTORS, out / "distractors")
    (out / "backgrounds").mkdir(parents=True)
    counts["backgrounds"] = 0
    try:
        from skimage import data as skdata
    except ImportError:
        return counts
    for name in BACKGROUND_PHOTOS:
        fn = getattr(skdata, name.replace("-", "_"), None)
        if fn is None:
            continue
        arr = np.asarray(fn())
        Image.fromarray(arr).convert("RGB").save(out / "backgrounds" / f"skimage_{name}.png")
        counts["backgrounds"] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attnviz.data.tuxpaint", description=__doc__.split("\n")[0])
    p.add_argument("stamps", help="the usr/share/tuxpaint/stamps folder of the extracted package")
    p.add_argument("--out", required=True, help="folder to write objects/, distractors/, backgrounds/ into")
    args = p.parse_args(argv)
    for name, n in build_folder(args.stamps, args.out).items():
        print(f"{name:12} {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
