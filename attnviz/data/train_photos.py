"""Real photos for training only: 40 photographs of the demo classes from Debian packages, as ``objects_train/``.

The demo learns from drawings (Tux Paint stamps, openclipart) and recognises drawings; real photos are where it
fails (README, "Real photos"). This module adds photos to the training objects, never to the held-out splits:
they land in ``objects_train/<class>/`` as opaque cut-outs, so :class:`attnviz.data.SceneDataset` pastes them like
any object (scaled, rotated, with distractors over them) and the validation and test scenes stay the same images.
None of them is one of the real-photo test sets' photos (:mod:`attnviz.data.photos`, :mod:`attnviz.data.more_photos`).

    apt-get download gcompris-qt-data gimp-help-en gimp-help-common jigzo-data palapeli-data \\
        imagemagick-6-doc imagemagick-6-common lxqt-themes opencv-doc
    for d in *.deb; do dpkg -x "$d" trainroot; done
    python -m attnviz.data.train_photos --root trainroot --out data/scenes   # after attnviz.data.openclipart

Sources: GCompris's photos (Wikimedia Commons pictures inside its Qt resource bundles), the GIMP manual's example
photos, Jigzo's and Palapeli's puzzle pictures, ImageMagick's documentation, an LXQt wallpaper and an OpenCV
tutorial's photo. At most 8 per class (no vegetable photo was found in any package). Each photo's licence is read
from its package's machine-readable ``copyright`` file (DEP-5, as :mod:`attnviz.data.more_photos`); where the
package carries a per-file upstream record as well (GCompris's ``README`` beside the photo inside the bundle, an
upstream note recorded in the table), that goes into ``objects_train/photos.json`` too. A photo whose licence
cannot be read is refused.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from .containers import first_jpeg, qres_member
from .more_photos import _find, _paragraphs, _version, copyright_stanza
from .photos import _load_rgb
from .scenes import TRAIN_ONLY

__all__ = ["MANIFEST", "PREFIX", "TRAIN_PHOTOS", "TRAIN_SIDE", "TrainPhoto", "build_train_photos", "upstream_entry"]

TRAIN_SIDE = 256  # longer side of a training photo in pixels (scenes are rendered at 224 px at most)
PREFIX = "photo-"  # this module's files in objects_train/<class>/ (other builders' files are left alone)
MANIFEST = "photos.json"  # in objects_train/, beside openclipart's manifest.json


class TrainPhoto(NamedTuple):
    """One training photo: where it is in its package and which DEP-5 path governs its licence.

    ``member`` is the path inside a container (``:/...`` in a Qt bundle, ``"jpeg"`` for a Jigzo puzzle's picture)
    or ``None`` for a plain image file; ``source`` is the file's path in the package's source tree; ``note`` is an
    upstream licence statement beside the DEP-5 one, or ``""``.
    """

    file: str
    cls: str
    subject: str
    package: str
    installed: str
    member: str | None
    source: str
    note: str = ""


_GC, _GCR = "gcompris-qt-data", "usr/share/gcompris-qt/rcc/"
_ERASE, _FISH = (
    ":/gcompris/src/activities/erase/resource/",
    ":/gcompris/src/activities/categorization/resource/images/fishes/",
)
_GH, _GHI = "gimp-help-en", "usr/share/gimp/2.0/help/en/images/"
_JZ, _JZP = "jigzo-data", "usr/share/games/jigzo/puzzles/00_default/"
_PAL = "palapeli-data"
_LXQT_NOTE = "the package's wallpapers/License file: CC-BY-SA-3.0 (LXQt Project Team)"
_PAL_NOTE = "the puzzle's .desktop file: License=Public Domain, Author=John Severns"
_PEXELS = "the tutorial that shows it: the Pexels license (https://www.pexels.com/license/)"


def _gc(file: str, cls: str, subject: str, bundle: str, folder: str, name: str) -> TrainPhoto:
    member = folder + name
    return TrainPhoto(file, cls, subject, _GC, f"{_GCR}{bundle}.rcc", member, member.removeprefix(":/gcompris/"))


def _gh(file: str, cls: str, subject: str, path: str) -> TrainPhoto:
    return TrainPhoto(file, cls, subject, _GH, _GHI + path, None, "images/" + path)


def _jz(file: str, cls: str, subject: str, puzzle: str) -> TrainPhoto:
    return TrainPhoto(file, cls, subject, _JZ, _JZP + puzzle, "jpeg", f"puzzles/00_default/{puzzle}")


TRAIN_PHOTOS: list[TrainPhoto] = [
    _gh("photo-013-duck_orig.png", "bird", "two ducks on grass", "using/duck_orig.png"),
    _jz("photo-014-bird-2x3.png", "bird", "kookaburra on a branch", "bird-2x3.pzl"),
    _gc("photo-001-gosling.png", "bird", "greylag gosling", "erase", _ERASE, "gosling.webp"),
    _gc("photo-002-heron.png", "bird", "purple heron in flight", "erase", _ERASE, "heron.webp"),
    _gc("photo-003-kingfisher.png", "bird", "kingfisher on a branch", "erase", _ERASE, "kingfisher.webp"),
    _gc("photo-004-northern_harrier.png", "bird", "northern harrier", "erase", _ERASE, "northern_harrier.webp"),
    _gc("photo-005-penguin.png", "bird", "chinstrap penguin", "erase", _ERASE, "penguin.webp"),
    _gc("photo-006-spoonbills.png", "bird", "two spoonbills", "erase", _ERASE, "spoonbills.webp"),
    *(
        _gc(f"photo-{n:03d}-fish{k}.png", "fish", subject, "categorization", _FISH, f"fish{k}.webp")
        for n, k, subject in [
            (16, 1, "French angelfish"), (17, 10, "anthias, several"), (18, 11, "a school of trout"),
            (19, 12, "axillary seabream"), (20, 13, "ocellated wrasse"), (21, 14, "swallowtail seaperch"),
            (22, 15, "brown wrasse"), (23, 16, "common pandora"),
        ]
    ),
    _gh("photo-044-2zinnias.png", "flower", "two zinnias", "filters/examples/2zinnias.png"),
    _gh("photo-046-kvitveis-orig.png", "flower", "pink anemone", "filters/examples/kvitveis-orig.png"),
    _gh("photo-047-colors-desaturate-original-sunflower.png", "flower", "sunflower",
        "menus/colors/desaturate/colors-desaturate-original-sunflower.png"),
    _gh("photo-048-threshold-orig.png", "flower", "orange zinnia", "using/threshold-orig.png"),
    TrainPhoto("photo-049-bluebells_darker.png", "flower", "bluebells", "imagemagick-6-doc",
               "usr/share/doc/imagemagick-6-common/html/images/bluebells_darker.jpg", None,
               "www/images/bluebells_darker.jpg"),
    _jz("photo-053-blackberry-3x3.png", "fruit", "blackberries on a bramble", "blackberry-3x3.pzl"),
    TrainPhoto("photo-054-citrus-fruits.png", "fruit", "citrus slices", _PAL,
               "usr/share/palapeli/collection/citrus-fruits.jpg", None, "puzzles/citrus-fruits.jpg"),
    TrainPhoto("photo-059-butterfly.png", "insect", "swallowtail butterfly on a thistle", "lxqt-themes",
               "usr/share/lxqt/wallpapers/butterfly.png", None, "wallpapers/butterfly.png", _LXQT_NOTE),
    TrainPhoto("photo-060-european-honey-bee.png", "insect", "honey bee on an aster", _PAL,
               "usr/share/palapeli/collection/european-honey-bee.jpg", None, "puzzles/european-honey-bee.jpg",
               _PAL_NOTE),
    _gc("photo-055-bee.png", "insect", "honey bee in flight", "erase", _ERASE, "bee.webp"),
    _gc("photo-056-butterfly.png", "insect", "butterfly on a flower", "erase", _ERASE, "butterfly.webp"),
    _gc("photo-057-caterpillar.png", "insect", "swallowtail caterpillar", "erase", _ERASE, "caterpillar.webp"),
    _gh("photo-099-high-pass-origin.png", "mammal", "chimpanzee", "filters/examples/enhance/high-pass-origin.png"),
    _gh("photo-100-vignette-ex-orig.png", "mammal", "ground squirrel",
        "filters/examples/light-and-shadow/vignette-ex-orig.jpg"),
    _jz("photo-101-gorilla2-3x3.png", "mammal", "silverback gorilla", "gorilla2-3x3.pzl"),
    _jz("photo-102-horse-4x3.png", "mammal", "horse's head", "horse-4x3.pzl"),
    _gc("photo-061-alpaca.png", "mammal", "alpaca's head", "erase", _ERASE, "alpaca.webp"),
    _gc("photo-062-calf.png", "mammal", "calf's head", "erase", _ERASE, "calf.webp"),
    _gc("photo-063-camels.png", "mammal", "two Bactrian camels", "erase", _ERASE, "camels.webp"),
    _gc("photo-064-cheetah.png", "mammal", "cheetah lying", "erase", _ERASE, "cheetah.webp"),
    _jz("photo-106-bike-3x4.png", "vehicle", "child's bicycle", "bike-3x4.pzl"),
    _jz("photo-107-heli-4x3.png", "vehicle", "helicopter in flight", "heli-4x3.pzl"),
    _jz("photo-108-train-2x2.png", "vehicle", "small steam locomotive", "train-2x2.pzl"),
    TrainPhoto("photo-110-pexels_double_decker_bus.png", "vehicle", "double-decker bus", "opencv-doc",
               "usr/share/doc/opencv-doc/opencv4/html/pexels_double_decker_bus.jpg", None,
               "doc/tutorials/dnn/dnn_pytorch_tf_detection/images/pexels_double_decker_bus.jpg", _PEXELS),
]  # fmt: skip


def upstream_entry(readme: str, name: str) -> dict[str, str] | None:
    """The paragraph of a GCompris-style ``README`` (``Copyright:``/``Source:``/``License:``/``Files:`` fields, the
    file names on the ``Files:`` line or on the lines after it) that lists ``name``; ``None`` if none does."""
    for fields in _paragraphs(readme):
        if name in fields.get("Files", "").split():
            return {k: v for k, v in fields.items() if k != "Files"}
    return None


def _image(roots: list[Path], photo: TrainPhoto) -> tuple[Image.Image, dict[str, str] | None]:
    """The photo, decoded, and its upstream licence record where its container carries one."""
    path = _find(roots, photo.installed)
    if photo.member == "jpeg":
        return first_jpeg(path), None
    if photo.member is not None:
        blob = qres_member(path, photo.member)
        folder, name = photo.member.rsplit("/", 1)
        try:
            record = upstream_entry(qres_member(path, folder + "/README").decode("utf-8"), name)
        except KeyError:
            record = None
        with Image.open(io.BytesIO(blob)) as im:
            return im.convert("RGB"), record
    return _load_rgb(path), None


def build_train_photos(roots: list[str | Path], out: str | Path) -> dict[str, int]:
    """Write :data:`TRAIN_PHOTOS` into ``out/objects_train/<class>/`` and ``out/objects_train/photos.json``.

    Only this module's files (:data:`PREFIX`) are replaced; other training objects stay. Returns photos per class.

    Raises:
        FileNotFoundError: a package file or its copyright file is missing from every root.
        LookupError: a photo's licence is not in its package's copyright file.
        KeyError, ValueError: a container does not hold the photo.
    """
    roots, folder = [Path(r) for r in roots], Path(out) / TRAIN_ONLY
    for old in folder.glob(f"*/{PREFIX}*"):
        old.unlink()
    manifest: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for photo in TRAIN_PHOTOS:
        im, upstream = _image(roots, photo)
        stanza = copyright_stanza(_find(roots, f"usr/share/doc/{photo.package}/copyright").read_text(), photo.source)
        original = list(im.size)
        im.thumbnail((TRAIN_SIDE, TRAIN_SIDE))  # in place, never upscaled
        (folder / photo.cls).mkdir(parents=True, exist_ok=True)
        im.convert("RGBA").save(folder / photo.cls / photo.file)  # opaque: the whole photo is the object
        where = f"/{photo.installed}" + (f" -> {photo.member}" if photo.member else "")
        manifest[f"{photo.cls}/{photo.file}"] = {
            "subject": photo.subject,
            "source": f"Debian package {photo.package} {_version(roots, photo.package)} ({where})",
            "original_size": original,
            "licence": f"{stanza['license']}, Copyright: {stanza['copyright']} (Debian copyright file, "
            f"'Files: {stanza['files']}')",
            **({"upstream": upstream} if upstream else {}),
            **({"note": photo.note} if photo.note else {}),
        }
        counts[photo.cls] = counts.get(photo.cls, 0) + 1
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attnviz.data.train_photos", description=__doc__.splitlines()[0])
    p.add_argument("--root", nargs="+", default=["/"], help="where the packages are extracted (dpkg -x) or '/'")
    p.add_argument("--out", default="data/scenes", help="the scene folder to add objects_train/<class>/ to")
    args = p.parse_args(argv)
    try:
        counts = build_train_photos(args.root, args.out)
    except (FileNotFoundError, LookupError, ValueError, OSError) as e:
        print(f"cannot build the training photos: {e}", file=sys.stderr)
        return 2
    for name, n in sorted(counts.items()):
        print(f"{name:10} {n}")
    print(f"wrote {sum(counts.values())} photos into {Path(args.out) / TRAIN_ONLY}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
