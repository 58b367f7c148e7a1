"""A larger real-photo set, built locally from Debian packages: the shipped 10 photos plus 10 more.

The shipped set (:func:`attnviz.data.photos.photos_dir`, 10 photos) cannot resolve a real-photo accuracy target:
each photo's placements are nearly all right or all wrong, so its interval over the photos is about +-29 points.
This module adds ten photos from Debian's ``mate-backgrounds``, ``lomiri-wallpapers-16.04`` and
``lomiri-wallpapers-20.04`` (GPL-2+, CC-BY-4.0, CC-BY-SA-3.0/4.0) and ``opencv-doc``; their licences do not
allow shipping them in attnviz's MIT wheel, so, like the Tux Paint cut-outs, they are built on the user's machine:

    apt-get download mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 opencv-doc
    for d in *.deb; do dpkg -x "$d" debroot; done
    python -m attnviz.data.more_photos --root debroot --out data/photos_more
    attnviz eval --data data/scenes --photo-folder data/photos_more --placements 40

Each file's licence is read from its package's machine-readable ``copyright`` file (DEP-5: the last ``Files``
stanza whose pattern matches the file's path in the source tree), never typed in here; a file that no stanza
covers is refused. Photos whose subject fills only part of the frame are cropped to a recorded box first.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
import shutil
import sys
from pathlib import Path

from .photos import JPEG_QUALITY, LONGER_SIDE, _load_rgb, _shrink, photos_dir

__all__ = ["MORE_PHOTOS", "build_more_folder", "copyright_stanza"]

# (file, class, subject, Debian package, installed path, path in the source tree, crop box (l, t, r, b) or None)
MORE_PHOTOS = [
    ("ladybird.jpg", "insect", "ladybird on a stem", "mate-backgrounds",
     "usr/share/backgrounds/mate/nature/LadyBird.jpg", "nature/LadyBird.jpg", (1400, 500, 2200, 1100)),
    ("dragonfly.jpg", "insect", "dragonfly on a twig", "lomiri-wallpapers-16.04",
     "usr/share/backgrounds/Dragonfly_by_Bolly.jpg", "16.04/Dragonfly_by_Bolly.jpg", (1500, 700, 3100, 1900)),
    ("nuthatch.jpg", "bird", "Eurasian nuthatch on a trunk", "lomiri-wallpapers-20.04",
     "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg", "20.04/Kleiber_by_Lukas_Baubkus.jpg",
     (1900, 900, 3900, 2700)),
    ("fresh-flower.jpg", "flower", "orange gerbera", "mate-backgrounds",
     "usr/share/backgrounds/mate/nature/FreshFlower.jpg", "nature/FreshFlower.jpg", None),
    ("yellow-flower.jpg", "flower", "yellow daisy-like flower", "mate-backgrounds",
     "usr/share/backgrounds/mate/nature/YellowFlower.jpg", "nature/YellowFlower.jpg", None),
    ("marigold.jpg", "flower", "red marigold", "mate-backgrounds",
     "usr/share/backgrounds/mate/nature/Garden.jpg", "nature/Garden.jpg", None),
    ("fig.jpg", "fruit", "halved fig in a bowl", "lomiri-wallpapers-16.04",
     "usr/share/backgrounds/Picture_0B_by_freespace.jpg", "16.04/Picture_0B_by_freespace.jpg", None),
    ("dogs.jpg", "mammal", "two dogs at a window", "lomiri-wallpapers-16.04",
     "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg", "16.04/friends_by_Aitzol_Berasategi.jpg", None),
    ("dog.jpg", "mammal", "dog (Pekingese)", "opencv-doc",
     "usr/share/doc/opencv-doc/examples/data/chicky_512.png", "samples/data/chicky_512.png", None),
    ("car.jpg", "vehicle", "car from behind, motion-blurred", "opencv-doc",
     "usr/share/doc/opencv-doc/examples/data/licenseplate_motion.jpg", "samples/data/licenseplate_motion.jpg", None),
]  # fmt: skip


def _paragraphs(text: str) -> list[dict[str, str]]:
    """DEP-5 paragraphs as {field: value}; continuation lines (leading space) are joined with newlines."""
    out: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    last = None
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if fields:
                out.append(fields)
            fields, last = {}, None
        elif (line[0] in " \t" or ":" not in line) and last is not None:  # unindented: GCompris's Files lists
            fields[last] += "\n" + line.strip()
        elif ":" in line:
            last, value = line.split(":", 1)
            fields[last] = value.strip()
    return out


def copyright_stanza(text: str, source_path: str) -> dict[str, str]:
    """The ``Files`` stanza of a DEP-5 copyright file that governs ``source_path`` (the last match, per DEP-5).

    Raises:
        LookupError: no stanza's pattern matches ``source_path``.
    """
    match = None
    for para in _paragraphs(text):
        patterns = para.get("Files", "").split()
        if any(fnmatch.fnmatchcase(source_path, p) for p in patterns):
            match = para
    if match is None or "License" not in match:
        raise LookupError(f"no Files stanza covers {source_path}")
    return {
        "files": " ".join(match["Files"].split()),
        "copyright": "; ".join(line for line in match.get("Copyright", "").splitlines() if line),
        "license": match["License"].splitlines()[0],
    }


def _find(roots: list[Path], relative: str) -> Path:
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    raise FileNotFoundError(f"{relative} is in none of {[str(r) for r in roots]}: extract the package there")


def _version(roots: list[Path], package: str) -> str:
    """The package version from the first line of its ``changelog.Debian.gz`` ("src (1.2-3) unstable; ...")."""
    path = _find(roots, f"usr/share/doc/{package}/changelog.Debian.gz")
    with gzip.open(path, "rt") as f:
        first = f.readline()
    return first.split("(", 1)[1].split(")", 1)[0]


def build_more_folder(roots: list[str | Path], out: str | Path) -> Path:
    """Write the shipped photos and backgrounds plus :data:`MORE_PHOTOS` into ``out``; returns the manifest path.

    Raises:
        FileNotFoundError: a photo or its package's copyright file is missing from every root.
        LookupError: a photo's licence is not in its package's copyright file.
    """
    roots = [Path(r) for r in roots]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shipped = photos_dir()
    manifest = json.loads((shipped / "manifest.json").read_text())
    for entry in manifest["photos"] + manifest["backgrounds"]:
        shutil.copyfile(shipped / entry["file"], out / entry["file"])
    for file, cls, subject, package, installed, source_path, box in MORE_PHOTOS:
        im = _load_rgb(_find(roots, installed))
        stanza = copyright_stanza(_find(roots, f"usr/share/doc/{package}/copyright").read_text(), source_path)
        cropped = im.crop(box) if box else im
        small = _shrink(cropped, LONGER_SIDE)
        small.save(out / file, quality=JPEG_QUALITY)
        manifest["photos"].append(
            {
                "file": file,
                "class": cls,
                "subject": subject,
                "source": f"Debian package {package} {_version(roots, package)} (/{installed})",
                "original_size": list(im.size),
                "crop": list(box) if box else None,
                "size": list(small.size),
                "licence": f"{stanza['license']}, Copyright: {stanza['copyright']} (Debian copyright file, "
                f"'Files: {stanza['files']}')",
            }
        )
    manifest["description"] = (
        "The shipped real photos (attnviz/data/photos/) plus photos from Debian packages, built locally "
        f"(not shipped: their licences); crops as recorded, longer side at most {LONGER_SIDE} px, JPEG {JPEG_QUALITY}."
    )
    manifest["built_by"] = "python -m attnviz.data.more_photos --root DEBROOT --out DIR"
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attnviz.data.more_photos", description=__doc__.splitlines()[0])
    p.add_argument("--root", nargs="+", default=["/"], help="where the packages are extracted (dpkg -x) or '/'")
    p.add_argument("--out", default="data/photos_more")
    args = p.parse_args(argv)
    try:
        path = build_more_folder(args.root, args.out)
    except (FileNotFoundError, LookupError, OSError) as e:
        print(f"cannot build the photo folder: {e}", file=sys.stderr)
        return 2
    n = len(json.loads(path.read_text())["photos"])
    print(f"wrote {path.parent}: {n} photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
