"""Cut-and-paste scenes: real cut-outs pasted onto varied backgrounds, each with a label and an object mask.

A folder laid out as

    objects/<class>/*.png    RGBA cut-outs, one folder per class
    objects_train/<class>/   optional RGBA cut-outs used by the train split only (never held out)
    distractors/*.png        optional RGBA cut-outs of things that are none of the classes
    backgrounds/*.png|jpg    optional photos or textures with none of the classes in them

becomes a dataset whose scene ``i`` of a split is a pure function of ``(seed, split, i)``: one class object at a
random scale, position, flip, rotation and colour, pasted over a background (a cropped, recoloured photo or a
procedural one: noise, gradients, clutter) and a few distractors. The mask is the pasted object's alpha.
Object instances, not scenes, are split into train / val / test, so the test split measures unseen objects.
``objects_train/`` adds training objects without touching the held-out splits: val and test scenes stay the same
scenes, so models trained with and without the extra objects are measured on identical images.
``python -m attnviz.data.tuxpaint`` builds such a folder from Debian's ``tuxpaint-stamps-default``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from torch.utils.data import Dataset

__all__ = ["SPLITS", "TRAIN_ONLY", "Scene", "SceneConfig", "SceneDataset", "split_of"]

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
TRAIN_ONLY = "objects_train"  # folder of extra training cut-outs, objects_train/<class>/*.png


@dataclass(frozen=True)
class SceneConfig:
    """The recipe of a scene dataset; stored in model cards so a split can be rebuilt exactly.

    Attributes:
        size: side of the square scene in pixels.
        scale: range of the object's longer side as a fraction of ``size``.
        max_rotation: largest rotation of the object, degrees.
        distractors: range (inclusive) of distractor cut-outs per scene.
        val_fraction, test_fraction: share of each class's instances held out for validation and test.
        photo_paste: probability that the object comes as a photo-like rectangle: pasted on a background of its
            own first, then the rectangle onto the scene (real photos look like that; training augmentation).
        blur: probability of a Gaussian blur of the whole scene (training augmentation).
        closeup: probability that an object not pasted as a photo comes close up: its longer side ``closeup_scale``
            of the scene, so it fills the frame and the frame crops it, as in a photo taken of the object
            (training augmentation; the held-out scenes keep ``scale``).
        closeup_scale: range of a close-up object's longer side as a fraction of ``size``.

    With ``photo_paste``, ``blur`` and ``closeup`` at 0 (the default) a scene consumes the same random numbers as
    before they existed, so recipes in older model cards rebuild exactly.
    """

    size: int = 128
    scale: tuple[float, float] = (0.35, 0.8)
    max_rotation: float = 25.0
    distractors: tuple[int, int] = (0, 3)
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    photo_paste: float = 0.0
    blur: float = 0.0
    closeup: float = 0.0
    closeup_scale: tuple[float, float] = (0.9, 1.4)

    def to_dict(self) -> dict:
        return asdict(self)

    def held_out(self) -> SceneConfig:
        """The same recipe without the training-only augmentations (``photo_paste``, ``blur``, ``closeup``): the
        test scenes every model is measured on."""
        return replace(self, photo_paste=0.0, blur=0.0, closeup=0.0)

    @classmethod
    def from_dict(cls, d: dict) -> SceneConfig:
        """The config a model card stores (lists back to tuples; fields a newer version added take defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})


@dataclass
class Scene:
    """One generated scene: ``image`` (H, W, 3) uint8, ``mask`` (H, W) bool, ``label`` and the object's file."""

    image: np.ndarray
    mask: np.ndarray
    label: int
    source: str


def split_of(name: str, val_fraction: float, test_fraction: float) -> str:
    """The split of an object instance, from a hash of its file name (stable across machines and folders)."""
    u = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def _load_rgba(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGBA")


class SceneDataset(Dataset):
    """Scenes of one split, generated on the fly and deterministic in ``(seed, split, index)``.

    Args:
        root: folder with ``objects/<class>/``, optional ``distractors/`` and ``backgrounds/``.
        split: ``train``, ``val`` or ``test`` (which object instances are used).
        length: number of scenes in the split.
        seed: scenes differ per seed; training uses a new seed each epoch (``set_epoch``).
        config: the scene recipe.

    Items are ``(image (3, S, S) float in [0, 1], label, mask (S, S) bool)``; :meth:`scene` gives the uint8 scene.

    Raises:
        ValueError: no class folders, a class without instances in this split, or an unknown split.
    """

    def __init__(
        self, root: str | Path, split: str, length: int, *, seed: int = 0, config: SceneConfig | None = None
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {SPLITS}")
        self.root = Path(root)
        self.split, self.length, self.seed = split, int(length), int(seed)
        self.config = config or SceneConfig()
        class_dirs = sorted(p for p in (self.root / "objects").glob("*") if p.is_dir())
        if not class_dirs:
            raise ValueError(f"{self.root / 'objects'} has no class folders (expected objects/<class>/*.png)")
        self.classes = [p.name for p in class_dirs]
        cfg = self.config
        extra_root = self.root / TRAIN_ONLY
        unknown = sorted({p.name for p in extra_root.glob("*") if p.is_dir()} - set(self.classes))
        if unknown:
            raise ValueError(f"{extra_root} has folders that are not classes of objects/: {unknown}")
        self.instances: list[list[Image.Image]] = []
        self.instance_names: list[list[str]] = []
        self.train_only: dict[str, int] = {}
        for d in class_dirs:
            files = [f for f in _files(d) if split_of(f.name, cfg.val_fraction, cfg.test_fraction) == split]
            names = [f"{d.name}/{f.name}" for f in files]
            if split == "train":  # the extra cut-outs come after, so the split's first draws keep their objects
                extra = _files(extra_root / d.name)
                self.train_only[d.name] = len(extra)
                files += extra
                names += [f"{TRAIN_ONLY}/{d.name}/{f.name}" for f in extra]
            if not files:
                raise ValueError(f"class {d.name!r} has no instances in the {split} split; add more cut-outs")
            self.instances.append([_load_rgba(f) for f in files])
            self.instance_names.append(names)
        self.distractors = [_load_rgba(f) for f in _files(self.root / "distractors")]
        self.backgrounds = [np.asarray(Image.open(f).convert("RGB")) for f in _files(self.root / "backgrounds")]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use fresh scenes (same objects) for training epoch ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def fingerprint(self) -> dict:
        """What defines this split: classes, instance counts, config, seed (for model cards)."""
        return {
            "classes": self.classes,
            "instances": {c: len(n) for c, n in zip(self.classes, self.instance_names, strict=True)},
            "distractors": len(self.distractors),
            "backgrounds": len(self.backgrounds),
            "config": self.config.to_dict(),
            "seed": self.seed,
            "length": self.length,
        } | ({"train_only": self.train_only} if any(self.train_only.values()) else {})

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        s = self.scene(index)
        image = torch.from_numpy(s.image.copy()).permute(2, 0, 1).float().div_(255)  # (3, S, S)
        return image, s.label, torch.from_numpy(s.mask)

    # -- generation --------------------------------------------------------------------------------------
    def _rng(self, index: int) -> np.random.Generator:
        key = f"{self.seed}/{self.split}/{self.epoch}/{index}".encode()
        return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))

    def scene(self, index: int) -> Scene:
        """Scene ``index``: a pure function of (seed, split, epoch, index)."""
        if not 0 <= index < self.length:
            raise IndexError(f"scene {index} out of range for a split of {self.length}")
        rng = self._rng(index)
        canvas = Image.fromarray(self._background(rng)).convert("RGBA")
        label = int(rng.integers(len(self.classes)))
        k = int(rng.integers(len(self.instances[label])))
        lo, hi = self.config.distractors
        n_distractors = int(rng.integers(lo, hi + 1)) if self.distractors else 0
        for _ in range(n_distractors):
            d = self.distractors[int(rng.integers(len(self.distractors)))]
            piece, _ = self._place(d, rng, scale=(0.15, 0.45))
            canvas.alpha_composite(piece)
        cfg = self.config
        obj = self.instances[label][k]
        if cfg.photo_paste > 0 and rng.random() < cfg.photo_paste:
            piece, mask = self._photo(obj, rng)
        else:
            closeup = cfg.closeup > 0 and rng.random() < cfg.closeup
            piece, _ = self._place(obj, rng, scale=cfg.closeup_scale if closeup else cfg.scale)
            mask = np.asarray(piece)[..., 3] >= 128  # (S, S): where the object is visible
        canvas.alpha_composite(piece)
        if not mask.any():  # a fully clipped object cannot happen by placement; keep the invariant explicit
            raise RuntimeError(f"scene {index}: object fell outside the image")
        rgb = canvas.convert("RGB")
        if cfg.blur > 0 and rng.random() < cfg.blur:
            rgb = rgb.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2)) * cfg.size / 128))
        image = np.asarray(rgb)
        return Scene(image, mask, label, self.instance_names[label][k])

    def _photo(self, obj: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
        """A photo-like rectangle (aspect 3:4 to 4:3, fully inside the scene): a background of its own with the
        object large in it. Returns the opaque rectangle on a transparent scene-sized layer and the object mask."""
        size = self.config.size
        side = float(rng.uniform(0.5, 0.95)) * size
        aspect = float(rng.uniform(0.75, 4 / 3))
        w, h = (round(side), round(side / aspect)) if aspect >= 1 else (round(side * aspect), round(side))
        photo = Image.fromarray(self._background(rng)).resize((w, h), Image.Resampling.BILINEAR).convert("RGBA")
        piece, _ = self._place(obj, rng, scale=(0.6, 0.95), box=(w, h))
        photo.alpha_composite(piece)
        x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        layer.paste(photo, (x, y))
        mask = np.zeros((size, size), bool)
        mask[y : y + h, x : x + w] = np.asarray(piece)[..., 3] >= 128
        return layer, mask

    def _place(
        self,
        obj: Image.Image,
        rng: np.random.Generator,
        scale: tuple[float, float],
        box: tuple[int, int] | None = None,
    ) -> tuple[Image.Image, float]:
        """``obj`` transformed and placed on a transparent canvas of the scene's size, or of ``box`` (W, H), mostly
        inside it; ``scale`` is the object's longer side as a fraction of the canvas's shorter side."""
        size = self.config.size
        bw, bh = box or (size, size)
        if rng.random() < 0.5:
            obj = obj.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        angle = float(rng.uniform(-self.config.max_rotation, self.config.max_rotation))
        obj = obj.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
        bbox = obj.getchannel("A").getbbox() or (0, 0, *obj.size)
        obj = obj.crop(bbox)
        side = float(rng.uniform(*scale)) * min(bw, bh)
        f = side / max(obj.size)
        w, h = max(4, round(obj.width * f)), max(4, round(obj.height * f))
        obj = obj.resize((w, h), Image.Resampling.BILINEAR)
        rgb, alpha = obj.convert("RGB"), obj.getchannel("A")
        rgb = ImageEnhance.Brightness(rgb).enhance(float(rng.uniform(0.7, 1.3)))
        rgb = ImageEnhance.Contrast(rgb).enhance(float(rng.uniform(0.7, 1.3)))
        rgb = ImageEnhance.Color(rgb).enhance(float(rng.uniform(0.6, 1.4)))
        obj = Image.merge("RGBA", (*rgb.split(), alpha))
        # position: at least 70% of each side inside the image; a side longer than the canvas (a close-up) spans it
        x = int(rng.integers(bw - w, 1) if w > bw else rng.integers(-int(0.15 * w), max(1, bw - int(0.85 * w)) + 1))
        y = int(rng.integers(bh - h, 1) if h > bh else rng.integers(-int(0.15 * h), max(1, bh - int(0.85 * h)) + 1))
        layer = Image.new("RGBA", (bw, bh), (0, 0, 0, 0))
        layer.paste(obj, (x, y), obj)
        return layer, f

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """(S, S, 3) uint8: a cropped, recoloured photo, or procedural noise, gradient or clutter."""
        size = self.config.size
        kinds = ["noise", "gradient", "clutter"] + ["photo"] * (3 if self.backgrounds else 0)
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "photo":
            photo = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
            h, w = photo.shape[:2]
            side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            im = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im).astype(np.float32)
            arr = arr[..., rng.permutation(3)] * rng.uniform(0.6, 1.3, size=3) + rng.uniform(-30, 30, size=3)
        elif kind == "noise":
            cells = int(rng.integers(2, 17))
            base = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
            im = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
            arr = np.asarray(im).astype(np.float32) + rng.normal(0, rng.uniform(0, 20), size=(size, size, 3))
        elif kind == "gradient":
            a, b = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
            t = np.linspace(0, 1, size, dtype=np.float32)
            ramp = t[None, :] if rng.random() < 0.5 else t[:, None]
            arr = a + (b - a) * ramp[..., None] + rng.normal(0, 6, size=(size, size, 3))
        else:
            im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, size=3)))
            draw = ImageDraw.Draw(im)
            for _ in range(int(rng.integers(5, 30))):
                x0, y0 = (int(v) for v in rng.integers(-size // 4, size, size=2))
                w, h = (int(v) for v in rng.integers(4, size // 2, size=2))
                fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
                shape = (x0, y0, x0 + w, y0 + h)
                (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=fill)
            arr = np.asarray(im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))).astype(np.float32)
        return np.clip(arr, 0, 255).astype(np.uint8)


def write_preview(dataset: SceneDataset, out: str | Path, n: int = 16) -> Path:
    """A grid of the first ``n`` scenes with their masks outlined, and a JSON of their labels (for eyeballing)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tiles = []
    for i in range(n):
        s = dataset.scene(i)
        img = s.image.copy()
        edge = s.mask ^ np.roll(s.mask, 1, 0) | s.mask ^ np.roll(s.mask, 1, 1)
        img[edge] = (255, 0, 0)
        tiles.append(img)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    size = dataset.config.size
    grid = np.zeros((rows * size, cols * size, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * size : (r + 1) * size, c * size : (c + 1) * size] = t
    Image.fromarray(grid).save(out / "scenes.png")
    labels = [dataset.classes[dataset.scene(i).label] for i in range(n)]
    (out / "scenes.json").write_text(json.dumps(labels))
    return out / "scenes.png"
