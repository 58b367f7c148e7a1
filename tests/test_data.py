"""The scene dataset: deterministic, masks are the pasted objects, instances split without overlap."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from attnviz.data import SPLITS, SceneConfig, SceneDataset, split_of
from attnviz.data.tuxpaint import build_folder

CONFIG = SceneConfig(size=48)


def test_scenes_are_a_function_of_seed_split_epoch_index(scene_root) -> None:
    a = SceneDataset(scene_root, "train", 10, seed=3, config=CONFIG)
    b = SceneDataset(scene_root, "train", 10, seed=3, config=CONFIG)
    for i in range(10):
        sa, sb = a.scene(i), b.scene(i)
        assert np.array_equal(sa.image, sb.image) and np.array_equal(sa.mask, sb.mask) and sa.label == sb.label
    b.set_epoch(1)
    assert not all(np.array_equal(a.scene(i).image, b.scene(i).image) for i in range(10))
    c = SceneDataset(scene_root, "train", 10, seed=4, config=CONFIG)
    assert not all(np.array_equal(a.scene(i).image, c.scene(i).image) for i in range(10))


def test_items_shapes_and_labels(scene_root) -> None:
    ds = SceneDataset(scene_root, "val", 30, config=CONFIG)
    labels = set()
    for i in range(len(ds)):
        x, y, mask = ds[i]
        assert x.shape == (3, 48, 48) and float(x.min()) >= 0 and float(x.max()) <= 1
        assert mask.shape == (48, 48) and mask.dtype == torch.bool and bool(mask.any())
        assert ds.classes[y] == ds.scene(i).source.split("/")[0]
        labels.add(y)
    assert labels == {0, 1, 2}
    assert ds.classes == ["disc", "square", "triangle"]


def test_mask_is_the_visible_object(scene_root, tmp_path) -> None:
    """A single-colour object on a plain background: the mask is exactly where that colour is."""
    root = tmp_path / "one"
    (root / "objects" / "disc").mkdir(parents=True)
    for i in range(12):
        im = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
        im.paste((255, 0, 255, 255), (0, 0, 40, 40))  # an opaque square cut-out
        im.save(root / "objects" / "disc" / f"disc{i}.png")
    config = SceneConfig(size=48, max_rotation=0.0, distractors=(0, 0))
    ds = SceneDataset(root, "train", 20, config=config)
    for i in range(20):
        s = ds.scene(i)
        # colour jitter keeps the object magenta (red and blue well above green): every masked pixel shows it
        r, g, b = (s.image[..., k].astype(int) for k in range(3))
        object_like = (r - g > 40) & (b - g > 40)
        assert (object_like[s.mask]).mean() > 0.97
        assert 0.03 < s.mask.mean() < 0.7


def test_instances_are_split_without_overlap(scene_root) -> None:
    names = {sp: SceneDataset(scene_root, sp, 1, config=CONFIG).instance_names for sp in SPLITS}
    flat = {sp: {n for cls in v for n in cls} for sp, v in names.items()}
    assert not flat["train"] & flat["val"] and not flat["train"] & flat["test"] and not flat["val"] & flat["test"]
    assert sum(len(v) for v in flat.values()) == 36
    assert split_of("x.png", 0.15, 0.2) == split_of("x.png", 0.15, 0.2)  # stable


def test_clear_errors(scene_root, tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown split"):
        SceneDataset(scene_root, "dev", 1)
    with pytest.raises(ValueError, match="no class folders"):
        SceneDataset(tmp_path, "train", 1)
    (tmp_path / "objects" / "lonely").mkdir(parents=True)
    Image.new("RGBA", (8, 8)).save(tmp_path / "objects" / "lonely" / "a.png")
    split = split_of("a.png", 0.15, 0.2)
    other = next(s for s in SPLITS if s != split)
    with pytest.raises(ValueError, match="no instances in the"):
        SceneDataset(tmp_path, other, 1)
    with pytest.raises(IndexError):
        SceneDataset(scene_root, "train", 2, config=CONFIG).scene(2)


def test_tuxpaint_builder(tmp_path) -> None:
    stamps = tmp_path / "stamps"
    for folder in ("animals/birds", "animals/birds/cartoon", "clothes", "food/fruit"):
        (stamps / folder).mkdir(parents=True)
    cut = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    cut.paste((10, 200, 30, 255), (50, 40, 250, 160))
    cut.save(stamps / "animals/birds/robin.png")
    cut.save(stamps / "animals/birds/cartoon/owl.png")
    cut.save(stamps / "clothes/hat.png")
    Image.new("RGBA", (50, 50), (1, 2, 3, 255)).save(stamps / "food/fruit/opaque.png")  # not a cut-out: skipped
    counts = build_folder(stamps, tmp_path / "out")
    assert counts["bird"] == 2 and counts["fruit"] == 0 and counts["distractors"] == 1
    birds = sorted(p.name for p in (tmp_path / "out/objects/bird").iterdir())
    assert birds == ["animals_birds_cartoon_owl.png", "animals_birds_robin.png"]
    with Image.open(tmp_path / "out/objects/bird/animals_birds_robin.png") as im:
        assert im.size == (200, 120) and im.mode == "RGBA"  # cropped to the opaque pixels
    with pytest.raises(ValueError, match="not a tuxpaint stamps folder"):
        build_folder(tmp_path, tmp_path / "x")


def _svg(path, licence: str | None, creator: str = "Ann Artist") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lic = f'<cc:license rdf:resource="{licence}"/>' if licence is not None else ""
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg"><metadata><rdf:RDF><cc:Work>{lic}'
        f"<dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator></cc:Work></rdf:RDF>"
        "</metadata></svg>"
    )


def test_openclipart_builder_keeps_public_domain_solid_drawings_once(tmp_path) -> None:
    """Per-file licence from the SVG, a drawing filed under two classes kept once, thin outlines and excluded
    signs dropped, a manifest per file; the held-out splits do not see the new objects."""
    from attnviz.data.openclipart import PUBLIC_DOMAIN
    from attnviz.data.openclipart import build_folder as build_openclipart

    root = tmp_path / "openclipart"
    solid = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    solid.paste((200, 30, 30, 255), (40, 40, 260, 160))
    outline = Image.new("RGBA", (600, 600), (0, 0, 0, 0))
    for box in ((0, 0, 600, 2), (0, 598, 600, 600), (0, 0, 2, 600), (598, 0, 600, 600)):
        outline.paste((0, 0, 0, 255), box)  # a hairline frame: gone at scene size
    files = {
        "animals/mammals/dolphin.png": (solid, PUBLIC_DOMAIN),
        "animals/fish/dolphin.png": (solid, PUBLIC_DOMAIN),  # the same drawing under fish: kept under mammal only
        "animals/fish/carp.png": (solid, PUBLIC_DOMAIN),
        "animals/fish/unknown.png": (solid, ""),  # no licence in the metadata: skipped
        "animals/birds/sketch.png": (outline, PUBLIC_DOMAIN),
        "transportation/vehicles/bus.png": (solid, PUBLIC_DOMAIN),
        "transportation/vehicles/crossroads.png": (solid, PUBLIC_DOMAIN),  # a road sign: excluded
    }
    for rel, (im, licence) in files.items():
        (root / "png" / rel).parent.mkdir(parents=True, exist_ok=True)
        im.save(root / "png" / rel)
        _svg((root / "svg" / rel).with_suffix(".svg"), licence)
    photo = tmp_path / "scenes/objects_train/fish/photo-016-fish1.png"  # attnviz.data.train_photos's: kept
    photo.parent.mkdir(parents=True)
    Image.new("RGBA", (30, 30), (9, 9, 9, 255)).save(photo)
    limit = Image.MAX_IMAGE_PIXELS
    counts = build_openclipart(root, tmp_path / "scenes")
    assert limit == Image.MAX_IMAGE_PIXELS  # PIL's process-wide decompression-bomb guard is given back
    assert counts["mammal"] == 1 and counts["fish"] == 1 and counts["vehicle"] == 1 and counts["bird"] == 0
    assert counts["skipped_duplicate"] == 1 and counts["skipped_licence"] == 1 and counts["skipped_thin"] == 1
    extra = tmp_path / "scenes/objects_train"
    assert sorted(p.name for p in (extra / "fish").iterdir()) == ["oc_animals_fish_carp.png", photo.name]
    manifest = json.loads((extra / "manifest.json").read_text())
    assert manifest["fish/oc_animals_fish_carp.png"] == {
        "source": "openclipart-png animals/fish/carp.png",
        "licence": PUBLIC_DOMAIN,
        "creator": "Ann Artist",
    }
    with pytest.raises(ValueError, match="needs png/"):
        build_openclipart(tmp_path / "scenes", tmp_path / "x")


def test_training_only_objects_leave_held_out_scenes_unchanged(scene_root, tmp_path) -> None:
    import shutil

    root = tmp_path / "scenes"
    shutil.copytree(scene_root, root)
    before = {sp: SceneDataset(root, sp, 12, config=CONFIG) for sp in SPLITS}
    (root / "objects_train" / "disc").mkdir(parents=True)
    Image.new("RGBA", (30, 30), (9, 9, 9, 255)).save(root / "objects_train" / "disc" / "extra.png")
    after = {sp: SceneDataset(root, sp, 12, config=CONFIG) for sp in SPLITS}
    for sp in ("val", "test"):
        assert after[sp].fingerprint() == before[sp].fingerprint()
        assert all(np.array_equal(after[sp].scene(i).image, before[sp].scene(i).image) for i in range(12))
    assert after["train"].instance_names[0][-1] == "objects_train/disc/extra.png"
    assert after["train"].fingerprint()["train_only"] == {"disc": 1, "square": 0, "triangle": 0}
    assert "train_only" not in before["train"].fingerprint()
    (root / "objects_train" / "dragon").mkdir()
    with pytest.raises(ValueError, match="not classes of objects/"):
        SceneDataset(root, "train", 1, config=CONFIG)
