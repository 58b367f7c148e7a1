"""Add Debian ``openclipart-png`` drawings of the demo classes as training-only cut-outs (``objects_train/``).

    apt-get install openclipart-png openclipart-svg
    python -m attnviz.data.openclipart /usr/share/openclipart --out data/scenes

Each drawing is kept only if its SVG source (``openclipart-svg``, same path) carries the Open Clip Art Library's
public-domain dedication in its RDF metadata (``<cc:license rdf:resource=".../cc/PublicDomain"/>``); the licence
URL and the SVG's ``dc:creator`` go into ``objects_train/manifest.json``, one entry per file. Drawings land in
``objects_train/<class>/`` so :class:`attnviz.data.SceneDataset` uses them for training only: the validation and
test scenes (today's tuxpaint objects, split by name hash) stay the same images, so before/after are comparable.

A drawing filed under two classes (openclipart puts dolphins and whales under both mammals and fish) is kept
under the first class of :data:`CLASSES`; :data:`EXCLUDE` lists the files in those folders that show none of the
class (road signs in ``vehicles``, pies and juice boxes in ``fruit``, barcode icons, a grenade, ...).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .scenes import TRAIN_ONLY
from .tuxpaint import _cutout

__all__ = ["CLASSES", "EXCLUDE", "PUBLIC_DOMAIN", "build_folder", "svg_licence"]

#: class -> openclipart folders under ``png/`` (subfolders included).
CLASSES: dict[str, tuple[str, ...]] = {
    "mammal": ("animals/mammals",),
    "bird": ("animals/birds",),
    "insect": ("animals/bugs",),
    "fish": ("animals/fish",),
    "fruit": ("food/fruit",),
    "vegetable": ("food/vegetables",),
    "flower": ("plants/flowers",),
    "vehicle": ("transportation/vehicles", "transportation"),  # the top folder: its vehicles, signs excluded below
}

#: file stems (or paths under ``png/`` without suffix) that show none of the classes, or only as an icon or outline.
EXCLUDE: frozenset[str] = frozenset(
    {
        # vehicles/ and transportation/: road and boating signs, places, people, outlines
        "crossroads", "curve_ahead", "cycle_lane", "cycle_route", "parking_romus_01", "quay_sign_01",
        "lighthouse_01", "lighthouse_matthew_gates_", "shelby_cobra_blueprint_i_01", "shelby_cobra_car_bluepr_",
        "road_runner_ganson", "Motorway_on", "ampelfrau_matthew_gates_01", "ampelmaennchen_matthew_g_01", "anchor",
        "anchor_juliane_krug_01", "bambi", "bus_lane", "bus_opposite", "buses_and_bikes", "cattle", "crosswind",
        "cycles", "drawbridge", "end_daul", "grain_elevator_ganson", "grounded", "horse", "kaboom",
        "little_tan_suitcase_jona_", "lorry_length", "no_cycles", "no_entry", "old_folks", "pass_either",
        "roundabout", "street_sign_gerald_g._01", "trams_only", "tunnel", "turn_ahead", "two_way_ahead",
        "two_way_crosses", "zigzag", "transportation/vehicles/hummers/hummer_03",
        "transportation/vehicles/hummers/hummer_04",
        # fruit/ and vegetables/: drinks, dishes, barcode icons, a mushroom, nuts, a grenade, scenes
        "apple_juice_box", "apple_juice_box_bw", "juice_glass_andremarcel._01", "pie_apple", "pie_apple_bw",
        "pie_cherry", "pie_cherry_bw", "apple_mateya_01", "banana_mateya_01", "paprika_mateya_01", "salad_mateya_01",
        "champignon_01", "gumnut_black_01", "gumnut_shaded_01", "kallisti-grenade_1_nurbl_01",
        "slate-apple_benji_park_01",
        "straw_tote_linda_kim_01", "tile_orange_gabriel_lo_i_01", "tree_whit_fruits_01",
        "turkey_platter_01_with_fruit_and_vegitables_01", "fruitcollection_leif_lod_07", "candied_apples_ganson",
        # fish/: amoebas, a seascape; flowers/: a cactus, a tree; bugs/: a virus
        "amibe_renardjb_on_free.f_01", "amibe_renardjb_on_free.f_02", "paesaggio_marino_archite_01",
        "cactus_linda_kim_01", "cartoon_tree_01", "virus_andreas_nilsson_01",
    }
)  # fmt: skip

SMALLEST_SIDE = 24  # px: below the smallest object a 128 px scene pastes (35 % of the side; 60 % of half in a photo)
PUBLIC_DOMAIN = "http://web.resource.org/cc/PublicDomain"
_LICENCE = re.compile(r'<cc:license\s+rdf:resource="([^"]*)"', re.IGNORECASE)
_CREATOR = re.compile(r"<dc:creator>\s*<cc:Agent>\s*<dc:title>([^<]*)</dc:title>", re.IGNORECASE)


def svg_licence(svg: Path) -> tuple[str | None, str | None]:
    """``(licence URL, creator)`` from an openclipart SVG's RDF metadata; ``None`` where it gives none."""
    text = svg.read_text(encoding="utf-8", errors="replace")
    licence, creator = _LICENCE.search(text), _CREATOR.search(text)
    return (licence.group(1) if licence else None), (creator.group(1).strip() or None if creator else None)


def _solid(im: Image.Image, side: int = SMALLEST_SIDE, min_pixels: int = 20) -> bool:
    """Whether the cut-out stays visible at the smallest size a scene pastes it (outline drawings whose thin lines
    fade below half opacity when shrunk would leave a scene with an empty object mask)."""
    small = im.copy()
    small.thumbnail((side, side), Image.Resampling.BILINEAR)
    return int((np.asarray(small)[..., 3] >= 128).sum()) >= min_pixels


def _candidates(png: Path, folder: str) -> list[Path]:
    """The folder's drawings; the ``transportation`` top folder without its subfolders (they are listed apart)."""
    root = png / folder
    files = root.glob("*.png") if folder == "transportation" else root.rglob("*.png")
    return sorted(
        f for f in files if f.stem not in EXCLUDE and f.relative_to(png).with_suffix("").as_posix() not in EXCLUDE
    )


def build_folder(openclipart: str | Path, out: str | Path) -> dict[str, int]:
    """Write ``objects_train/<class>/*.png`` and ``objects_train/manifest.json`` under ``out``.

    Args:
        openclipart: the folder holding ``png/`` (openclipart-png) and ``svg/`` (openclipart-svg).
        out: the scene folder (``objects/`` from :mod:`attnviz.data.tuxpaint` stays as it is).

    Returns:
        cut-outs written per class, and ``skipped_licence``, ``skipped_no_alpha``, ``skipped_duplicate``.

    Raises:
        ValueError: ``openclipart`` lacks ``png/`` or ``svg/``.
    """
    root, out = Path(openclipart), Path(out) / TRAIN_ONLY
    png, svg = root / "png", root / "svg"
    if not png.is_dir() or not svg.is_dir():
        raise ValueError(f"{root} needs png/ (openclipart-png) and svg/ (openclipart-svg, the licences) inside")
    for old in [*out.glob("*/oc_*.png"), out / "manifest.json"]:  # this module's files only: other builders'
        old.unlink(missing_ok=True)  # training objects (attnviz.data.train_photos) stay
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # a few drawings are rendered at 13000 px; trusted package files, this call only
    try:
        return _build(png, svg, out)
    finally:
        Image.MAX_IMAGE_PIXELS = limit  # PIL's decompression-bomb guard is process-wide: give it back


def _build(png: Path, svg: Path, out: Path) -> dict[str, int]:
    counts = {"skipped_licence": 0, "skipped_thin": 0, "skipped_duplicate": 0}
    manifest: dict[str, dict] = {}
    seen: set[str] = set()  # file names already kept, under any class
    for name, folders in CLASSES.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        counts[name] = 0
        for folder in folders:
            for src in _candidates(png, folder):
                rel = src.relative_to(png)
                if src.name in seen:
                    counts["skipped_duplicate"] += 1
                    continue
                source = (svg / rel).with_suffix(".svg")
                licence, creator = svg_licence(source) if source.is_file() else (None, None)
                if licence != PUBLIC_DOMAIN:
                    counts["skipped_licence"] += 1
                    continue
                im = _cutout(src)
                if im is None or not _solid(im):
                    counts["skipped_thin"] += 1
                    continue
                seen.add(src.name)
                dest = f"oc_{'_'.join(rel.with_suffix('').parts)}.png"
                im.save(out / name / dest, optimize=True)
                manifest[f"{name}/{dest}"] = {
                    "source": f"openclipart-png {rel}",
                    "licence": licence,
                    "creator": creator,
                }
                counts[name] += 1
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attnviz.data.openclipart", description=__doc__.split("\n")[0])
    p.add_argument("openclipart", help="the folder with png/ and svg/ (usr/share/openclipart)")
    p.add_argument("--out", required=True, help="the scene folder to add objects_train/ to")
    args = p.parse_args(argv)
    for name, n in build_folder(args.openclipart, args.out).items():
        print(f"{name:18} {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
