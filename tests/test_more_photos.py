"""The locally built larger photo set: DEP-5 licence lookup and the folder built from extracted Debian packages."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from PIL import Image

from attnviz.data import PhotoDataset
from attnviz.data.more_photos import MORE_PHOTOS, build_more_folder, copyright_stanza, main
from attnviz.data.photos import photos_dir

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo
Files-Excluded: samples/data/excluded.jpg

Files: *
Copyright: 2000-2022, Someone
           Respective contributors.
License: Apache-2.0 AND BSD-3-Clause
Comment: a continuation
 line

Files: nature/Aqua.jpg
       nature/LadyBird.jpg
Copyright: 2008, Charles Barbin
License: GPL-2+
 GPL text follows here.

Files: 16.04/*.jpg
Copyright: Someone Else, 2018
License: CC-BY-4.0
"""


def test_copyright_stanza_takes_the_last_matching_files_paragraph() -> None:
    assert copyright_stanza(COPYRIGHT, "nature/LadyBird.jpg") == {
        "files": "nature/Aqua.jpg nature/LadyBird.jpg",
        "copyright": "2008, Charles Barbin",
        "license": "GPL-2+",  # the synopsis line, not the licence text under it
    }
    assert copyright_stanza(COPYRIGHT, "16.04/friends.jpg")["license"] == "CC-BY-4.0"
    wide = copyright_stanza(COPYRIGHT, "samples/data/chicky_512.png")
    assert wide["files"] == "*" and wide["copyright"] == "2000-2022, Someone; Respective contributors."
    with pytest.raises(LookupError, match="no Files stanza covers"):
        copyright_stanza(COPYRIGHT.split("\n\nFiles: *")[0], "nature/LadyBird.jpg")  # the header is not a stanza


def _debian_root(root: Path, licensed: bool = True) -> Path:
    """Each package of MORE_PHOTOS as ``dpkg -x`` leaves it: the photo, copyright and changelog.Debian.gz."""
    for _, _, _, package, installed, source_path, box in MORE_PHOTOS:
        path = root / installed
        path.parent.mkdir(parents=True, exist_ok=True)
        w, h = (box[2] + 10, box[3] + 10) if box else (640, 480)
        Image.new("RGB", (w, h), (200, 40, 30)).save(path)
        doc = root / "usr/share/doc" / package
        doc.mkdir(parents=True, exist_ok=True)
        stanza = f"Files: {source_path}\nCopyright: 2018, Author of {Path(installed).name}\nLicense: CC-BY-4.0\n"
        text = (doc / "copyright").read_text() if (doc / "copyright").is_file() else "Format: dep5\n"
        (doc / "copyright").write_text(text + ("\n" + stanza if licensed else ""))
        with gzip.open(doc / "changelog.Debian.gz", "wt") as f:
            f.write(f"{package} (1.2-3) unstable; urgency=medium\n\n  * test\n")
    return root


def test_build_more_folder_adds_cropped_licensed_photos_to_the_shipped_ones(tmp_path: Path) -> None:
    out = tmp_path / "more"
    assert main(["--root", str(_debian_root(tmp_path / "debroot")), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    shipped = json.loads((photos_dir() / "manifest.json").read_text())
    assert manifest["photos"][: len(shipped["photos"])] == shipped["photos"]
    assert manifest["backgrounds"] == shipped["backgrounds"]
    added = manifest["photos"][len(shipped["photos"]) :]
    assert [e["file"] for e in added] == [m[0] for m in MORE_PHOTOS]
    for entry, (_, cls, _, package, installed, _, box) in zip(added, MORE_PHOTOS, strict=True):
        assert entry["class"] == cls and entry["crop"] == (list(box) if box else None)
        assert entry["source"] == f"Debian package {package} 1.2-3 (/{installed})"
        assert entry["licence"].startswith(f"CC-BY-4.0, Copyright: 2018, Author of {Path(installed).name}")
        with Image.open(out / entry["file"]) as im:  # cropped, then shrunk to the shipped photos' size
            crop = (box[2] - box[0], box[3] - box[1]) if box else (640, 480)
            assert max(im.size) == min(384, max(crop)) and list(im.size) == entry["size"]
    ds = PhotoDataset(sorted({e["class"] for e in manifest["photos"]}), size=64, placements=1, folder=out)
    assert len(ds) == len(manifest["photos"]) and ds.skipped == []


def test_build_more_folder_refuses_unlicensed_or_missing_files(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="no Files stanza covers"):
        build_more_folder([_debian_root(tmp_path / "a", licensed=False)], tmp_path / "out-a")
    root = _debian_root(tmp_path / "b")
    (root / MORE_PHOTOS[-1][4]).unlink()
    with pytest.raises(FileNotFoundError, match="extract the package there"):
        build_more_folder([root], tmp_path / "out-b")
    assert main(["--root", str(root), "--out", str(tmp_path / "out-c")]) == 2
