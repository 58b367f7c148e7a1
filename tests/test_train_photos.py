"""Training photos from Debian packages: the container readers (Qt resource bundles, Jigzo puzzles), the upstream
licence records, and the objects_train/ folder built from extracted packages as ``dpkg -x`` leaves them."""

from __future__ import annotations

import gzip
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnviz.data.containers import first_jpeg, qres_member, qres_names
from attnviz.data.more_photos import MORE_PHOTOS
from attnviz.data.photos import photos_dir
from attnviz.data.scenes import TRAIN_ONLY
from attnviz.data.train_photos import MANIFEST, TRAIN_PHOTOS, TRAIN_SIDE, build_train_photos, main, upstream_entry


def _qres(files: dict[str, bytes], zipped: frozenset[str] = frozenset(), version: int = 2) -> bytes:
    """A Qt resource bundle as ``rcc`` lays it out: a tree whose directories list contiguous children, UTF-16
    names with their length and hash, and each file's bytes behind their size (zlib: the plain size first)."""
    tree: dict = {}
    for path in files:
        node = tree
        *dirs, leaf = path.strip("/").split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = path
    entries: list[list] = [["", tree]]  # breadth first, so every directory's children are contiguous
    firsts: dict[int, int] = {}
    i = 0
    while i < len(entries):
        node = entries[i][1]
        if isinstance(node, dict):
            firsts[i] = len(entries)
            entries += [[name, child] for name, child in sorted(node.items())]
        i += 1
    names, data, offsets = b"", b"", {}
    for name, _ in entries[1:]:
        offsets[name] = offsets.get(name, len(names))
        if offsets[name] == len(names):
            names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
    size = 14 if version == 1 else 22
    rows = b""
    for i, (name, node) in enumerate(entries):
        name_offset = offsets.get(name, 0) if i else 0
        if isinstance(node, dict):
            row = struct.pack(">IHII", name_offset, 0x02, len(node), firsts[i])
        else:
            blob = files[node]
            if node in zipped:
                blob = struct.pack(">I", len(blob)) + zlib.compress(blob)
            row = struct.pack(">IHHHI", name_offset, 0x01 if node in zipped else 0, 0, 0, len(data))
            data += struct.pack(">I", len(blob)) + blob
        rows += row + b"\0" * (size - len(row))
    tree_at = 20
    data_at = tree_at + len(rows)
    names_at = data_at + len(data)
    return b"qres" + struct.pack(">IIII", version, tree_at, data_at, names_at) + rows + data + names


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (640, 400), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("version", [1, 2])
def test_qres_member_reads_raw_and_zlib_files_at_any_depth(tmp_path: Path, version: int) -> None:
    files = {"/a/b/c.png": _png((10, 20, 30)), "/a/README": b"Files: c.png\n", "/top.txt": b"x" * 1000}
    path = tmp_path / "bundle.rcc"
    path.write_bytes(_qres(files, zipped=frozenset({"/top.txt"}), version=version))
    assert qres_names(path) == [":/a/README", ":/a/b/c.png", ":/top.txt"]
    for name, blob in files.items():
        assert qres_member(path, ":" + name) == blob
    with pytest.raises(KeyError, match=r":/a/missing\.png"):
        qres_member(path, ":/a/missing.png")
    (tmp_path / "not.rcc").write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(ValueError, match="not a Qt resource bundle"):
        qres_member(tmp_path / "not.rcc", ":/x")


def test_first_jpeg_is_the_picture_after_the_puzzles_header(tmp_path: Path) -> None:
    picture = Image.fromarray(np.tile(np.arange(0, 240, 3, dtype=np.uint8)[:, None, None], (1, 60, 3)))
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=95)
    other = _png((0, 0, 255), (32, 32), "JPEG")  # the piece atlas that follows the picture
    path = tmp_path / "bird-2x3.pzl"
    path.write_bytes(b"JIGZO\x00header\xff\xd8 no marker yet" + buf.getvalue() + other)
    im = first_jpeg(path)
    assert im.size == (60, 80) and abs(np.asarray(im, dtype=int) - np.asarray(picture, dtype=int)).max() <= 8
    path.write_bytes(b"no picture here")
    with pytest.raises(ValueError, match="holds no JPEG image"):
        first_jpeg(path)


def test_upstream_entry_finds_the_paragraph_listing_the_file() -> None:
    readme = (
        "Copyright: Someone, 2022\nLicense: CC-BY-SA 4.0\nFiles:\nsquare.svg\nother.svg\n\n"
        "Copyright: Karelj\nSource: https://commons.wikimedia.org/wiki/File:X.jpg\nLicense: Public Domain\n"
        "Comments: cropping\nFiles: fish1.webp fish2.webp\n"
    )
    assert upstream_entry(readme, "fish2.webp") == {
        "Copyright": "Karelj",
        "Source": "https://commons.wikimedia.org/wiki/File:X.jpg",  # the URL's colon stays in the value
        "License": "Public Domain",
        "Comments": "cropping",
    }
    assert upstream_entry(readme, "other.svg") == {"Copyright": "Someone, 2022", "License": "CC-BY-SA 4.0"}
    assert upstream_entry(readme, "fish3.webp") is None


def _debian_root(root: Path, licensed: bool = True) -> dict[str, tuple[int, int, int]]:
    """Every package of TRAIN_PHOTOS as ``dpkg -x`` leaves it; returns each photo's colour by output file."""
    colours: dict[str, tuple[int, int, int]] = {}
    bundles: dict[Path, dict[str, bytes]] = {}
    for k, photo in enumerate(TRAIN_PHOTOS):
        colour = (k * 6 % 256, 255 - k * 5, 90)
        colours[photo.file] = colour
        path = root / photo.installed
        path.parent.mkdir(parents=True, exist_ok=True)
        if photo.member == "jpeg":
            path.write_bytes(b"puzzle header" + _png(colour, fmt="JPEG") + _png((0, 0, 0), (64, 64), "JPEG"))
        elif photo.member is not None:
            folder, name = photo.member.removeprefix(":").rsplit("/", 1)
            files = bundles.setdefault(path, {})
            files[f"{folder}/{name}"] = _png(colour, (1920, 1080), "WEBP")
            readme = files.get(f"{folder}/README", b"") + f"Copyright: Author {k}\nLicense: CC0-1.0\n".encode()
            files[f"{folder}/README"] = readme + f"Files:\n{name}\n\n".encode()
        else:
            path.write_bytes(_png(colour, fmt="JPEG" if path.suffix == ".jpg" else "PNG"))
        doc = root / "usr/share/doc" / photo.package
        doc.mkdir(parents=True, exist_ok=True)
        stanza = "Files: *\nCopyright: Upstream\nLicense: GPL-2+\n" if licensed else "Files: debian/*\nLicense: X\n"
        (doc / "copyright").write_text(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n" + stanza
        )
        with gzip.open(doc / "changelog.Debian.gz", "wt") as f:
            f.write(f"{photo.package} (1.0-2) unstable; urgency=medium\n")
    for path, files in bundles.items():
        path.write_bytes(_qres(files, zipped=frozenset(n for n in files if n.endswith("README"))))
    return colours


def test_build_writes_opaque_training_photos_with_their_licences_and_keeps_other_objects(tmp_path: Path) -> None:
    colours = _debian_root(tmp_path / "root")
    scenes = tmp_path / "scenes"
    drawing = scenes / TRAIN_ONLY / "bird" / "oc_animals_birds_robin.png"
    drawing.parent.mkdir(parents=True)
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(drawing)
    stale = scenes / TRAIN_ONLY / "fish" / "photo-999-gone.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier build's photo")

    counts = build_train_photos([tmp_path / "root"], scenes)

    assert sum(counts.values()) == len(TRAIN_PHOTOS) and max(counts.values()) <= 8 and "vegetable" not in counts
    assert drawing.is_file() and not stale.exists()  # other builders' objects stay; this module's are replaced
    manifest = json.loads((scenes / TRAIN_ONLY / MANIFEST).read_text())
    assert len(manifest) == len(TRAIN_PHOTOS)
    for photo in TRAIN_PHOTOS:
        path = scenes / TRAIN_ONLY / photo.cls / photo.file
        with Image.open(path) as im:
            assert im.mode == "RGBA" and max(im.size) == TRAIN_SIDE
            rgba = np.asarray(im)
        assert (rgba[..., 3] == 255).all()  # the whole photo is the object
        assert np.abs(rgba[..., :3].astype(int) - colours[photo.file]).max() <= 12  # this photo, not another
        entry = manifest[f"{photo.cls}/{photo.file}"]
        assert entry["licence"].startswith("GPL-2+, Copyright: Upstream")
        assert entry["source"].startswith(f"Debian package {photo.package} 1.0-2 (/{photo.installed}")
        assert ("upstream" in entry) == (photo.member not in (None, "jpeg"))
    assert main(["--root", str(tmp_path / "root"), "--out", str(scenes)]) == 0


def test_no_training_photo_is_a_test_photo() -> None:
    """The held-out real-photo sets must stay unseen: no training photo comes from a test photo's file."""
    shipped = json.loads((photos_dir() / "manifest.json").read_text())["photos"]
    test_files = {installed for *_, installed, _, _ in MORE_PHOTOS} | {p["file"] for p in shipped}
    assert not {p.installed for p in TRAIN_PHOTOS} & test_files
    assert len({p.file for p in TRAIN_PHOTOS}) == len(TRAIN_PHOTOS)


def test_a_photo_without_a_licence_stops_the_build(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _debian_root(tmp_path / "root", licensed=False)
    assert main(["--root", str(tmp_path / "root"), "--out", str(tmp_path / "scenes")]) == 2
    assert "no Files stanza covers" in capsys.readouterr().err
    assert main(["--root", str(tmp_path / "nothing"), "--out", str(tmp_path / "scenes")]) == 2
    assert "extract the package there" in capsys.readouterr().err
