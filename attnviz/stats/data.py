"""What ``attnviz stats`` reads: an ImageFolder-style directory or a file list with labels, optional ground truth
(a folder of masks named like the images, or boxes in COCO JSON), and each torchrun rank's share of it.

Nothing here fails on bad data: an unreadable image, a missing or misshapen mask comes back as a problem string
next to the item, and the statistics count and list it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from ..pipeline.image import ImageError, decode_image, preprocess, resized_size

__all__ = ["IMAGE_SUFFIXES", "Listing", "StatsDataset", "chunks", "list_data", "rank_env", "shard"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Listing:
    """The dataset: ``files[i]`` (relative to ``root``) has label ``labels[i]`` (an index into ``classes``, or
    -1 when the list gives none); ``empty_classes`` are class folders without a single image file."""

    root: Path
    files: list[str]
    labels: list[int]
    classes: list[str]
    empty_classes: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A hash of the file names and labels: resuming refuses a folder made from other data."""
        h = hashlib.sha256()
        for f, y in zip(self.files, self.labels, strict=True):
            h.update(f"{f}\t{y}\n".encode())
        h.update("\n".join(self.classes).encode())
        return h.hexdigest()[:16]


def list_data(data: str | Path, limit: int | None = None) -> Listing:
    """An ImageFolder-style directory (``DATA/<class>/**/*.jpg``, classes sorted by name as torchvision's
    ``ImageFolder``) or a file list (``.txt``/``.csv``/``.tsv``: ``path[,label]`` per line, paths relative to
    the list's folder; a ``path,label`` header line is skipped). ``limit`` keeps the first N images.

    Raises:
        ValueError: ``data`` is neither, or holds no image.
    """
    data = Path(data)
    if data.is_dir():
        folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise ValueError(f"{data} has no class folders (expected DATA/<class>/*.jpg)")
        classes, files, labels, empty = [], [], [], []
        for folder in folders:
            found = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            classes.append(folder.name)
            if not found:
                empty.append(folder.name)
            files += [f.relative_to(data).as_posix() for f in found]
            labels += [len(classes) - 1] * len(found)
        listing = Listing(data, files, labels, classes, empty)
    elif data.is_file():
        listing = _file_list(data)
    else:
        raise ValueError(f"{data} is neither a folder nor a file list")
    if limit is not None:
        listing.files, listing.labels = listing.files[:limit], listing.labels[:limit]
    if not listing.files:
        raise ValueError(f"{data} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return listing


def _file_list(path: Path) -> Listing:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    rows = [r for r in csv.reader(path.read_text().splitlines(), delimiter=delimiter) if r and r[0].strip()]
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["path", "label"], ["path"]):
        rows = rows[1:]
    names = [r[1].strip() if len(r) > 1 and r[1].strip() else None for r in rows]
    classes = sorted({n for n in names if n is not None})
    index = {c: i for i, c in enumerate(classes)}
    files = [r[0].strip() for r in rows]
    return Listing(path.parent, files, [-1 if n is None else index[n] for n in names], classes)


def rank_env() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, local world size) from torchrun's environment; (0, 1, 0, 1) outside it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, 1
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return int(os.environ.get("RANK", "0")), world, local, int(os.environ.get("LOCAL_WORLD_SIZE", str(local + 1)))


def shard(items: list[Any], rank: int | None = None, world: int | None = None) -> list[Any]:
    """This rank's items: every ``world``-th from ``rank`` (torchrun's ``RANK``/``WORLD_SIZE`` by default), so
    ranks share nothing and together cover everything."""
    if rank is None or world is None:
        rank, world, _, _ = rank_env()
    return items[rank::world]


def chunks(n: int, size: int) -> list[range]:
    """Consecutive index ranges of at most ``size``: the unit of work a rank finishes and keeps on disk."""
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


class GroundTruth:
    """Object masks for the images: from a folder (``MASKS/<same relative path, any image suffix>`` or
    ``MASKS/<file name>``; nonzero = object) or from COCO boxes (the union of an image's boxes)."""

    def __init__(self, masks: str | Path | None = None, boxes: str | Path | None = None) -> None:
        self.masks = Path(masks) if masks else None
        self.boxes: dict[str, tuple[tuple[int, int] | None, list[list[float]]]] = {}
        if boxes:
            coco = json.loads(Path(boxes).read_text())
            by_id = {im["id"]: im for im in coco.get("images", [])}
            for im in by_id.values():
                size = (int(im["width"]), int(im["height"])) if "width" in im and "height" in im else None
                self.boxes[im["file_name"]] = (size, [])
            for a in coco.get("annotations", []):
                im = by_id.get(a.get("image_id"))
                if im is not None and "bbox" in a:
                    self.boxes[im["file_name"]][1].append([float(v) for v in a["bbox"]])

    @property
    def present(self) -> bool:
        return self.masks is not None or bool(self.boxes)

    def mask(self, rel: str, size: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
        """(mask (H, W) bool at the image's ``size`` (W, H), problem): a missing or misshapen mask is a problem."""
        if self.masks is not None:
            path = self._mask_file(rel)
            if path is None:
                return None, "no mask"
            try:
                with Image.open(path) as im:
                    m = np.asarray(im.convert("L")) > 0
            except (OSError, ValueError) as e:
                return None, f"mask unreadable ({e})"
            if (m.shape[1], m.shape[0]) != size:
                return None, f"mask is {m.shape[1]}x{m.shape[0]}, the image {size[0]}x{size[1]}"
            return m, None
        entry = self.boxes.get(rel) or self.boxes.get(Path(rel).name)
        if entry is None:
            return None, "no boxes"
        declared, boxes = entry
        if declared is not None and declared != size:
            return None, f"boxes are for {declared[0]}x{declared[1]}, the image is {size[0]}x{size[1]}"
        im = Image.new("L", size, 0)
        draw = ImageDraw.Draw(im)
        for x, y, w, h in boxes:
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=255)
        return np.asarray(im) > 0, None

    def _mask_file(self, rel: str) -> Path | None:
        assert self.masks is not None
        stem = Path(rel).with_suffix("")
        for base in (self.masks / stem, self.masks / stem.name):
            for suffix in (".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jpg", ".jpeg"):
                if base.with_suffix(suffix).is_file():
                    return base.with_suffix(suffix)
        return None


class StatsDataset(Dataset):
    """Items ``(index, x (3, H, W) normalised or None, mask (H, W) bool at the input's size or None, problem)``.

    Images are decoded and preprocessed as ``attnviz render`` does (short side ``short``, aspect kept, no crop),
    or stretched to ``short`` x ``short`` when ``square``; masks are resized to the input with nearest neighbours.
    """

    def __init__(
        self,
        listing: Listing,
        indices: list[int],
        meta: dict[str, Any],
        short: int,
        square: bool = False,
        truth: GroundTruth | None = None,
    ) -> None:
        self.listing, self.indices, self.meta, self.short, self.square = listing, indices, meta, short, square
        self.truth = truth
        fixed = meta.get("input_size") if meta.get("fixed_input_size") else None
        self.fixed = (int(fixed[-2]), int(fixed[-1])) if fixed else ((short, short) if square else None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None, str | None]:
        i = self.indices[k]
        rel = self.listing.files[i]
        try:
            image = decode_image(self.listing.root / rel).image
        except (ImageError, OSError) as e:
            return i, None, None, f"unreadable: {e}"
        x = preprocess(image, self.short, self.meta["mean"], self.meta["std"], fixed=self.fixed)[0]
        if self.truth is None or not self.truth.present:
            return i, x, None, None
        m, problem = self.truth.mask(rel, image.size)
        if m is None:
            return i, x, None, problem
        h, w = int(x.shape[1]), int(x.shape[2])
        if (w, h) != image.size:
            m = np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.NEAREST))
        return i, x, torch.from_numpy(np.ascontiguousarray(m)), None


def input_size(size: tuple[int, int], short: int, square: bool) -> tuple[int, int]:
    """(W, H) an image of ``size`` is given to the model at."""
    return (short, short) if square else resized_size(size, short)
