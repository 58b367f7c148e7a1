"""What a loaded network carries: its labels, its preprocessing and where its weights came from, as typed values.

Every source returns a :class:`ModelMeta` beside the model (as torchvision's ``Weights.meta`` and timm's
``pretrained_cfg`` do); :func:`attach_meta` puts it on the model once and :func:`meta_of` reads it back. The older
attribute names (``model.weights_meta``, ``weights_source``, ``untrained_attention``, ``labels_source``, ...) are
written by :func:`attach_meta` too, from the same value, for code that reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelMeta",
    "Preprocess",
    "attach_meta",
    "measured",
    "meta_of",
    "short_side",
    "warm_size",
]

#: ImageNet's channel statistics (torchvision's and timm's default normalisation, and the demo's).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_ATTR = "_attnviz_meta"


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network's input.

    Attributes:
        mean, std: normalisation per channel (R, G, B).
        resize: the short side images are resized to (aspect kept, no crop).
        input_size: (H, W) the source or the network itself gives (``None``: any size; attnviz's ResNets).
        crop_pct, interpolation: timm's/torchvision's settings, where known (recorded, not used for the resize).
        fixed: whether the network runs at ``input_size`` only (``None``: not known yet).
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: int = 224
    input_size: tuple[int, int] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    fixed: bool | None = None

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(H, W) the network accepts only, or ``None`` when any size works."""
        return self.input_size if self.fixed and self.input_size else None

    def as_dict(self) -> dict[str, Any]:
        """The keys of the older ``weights_meta`` dict (lists, as JSON writes them), without ``categories``."""
        out: dict[str, Any] = {"mean": list(self.mean), "std": list(self.std), "resize_size": [self.resize]}
        if self.input_size is not None:
            out["input_size"] = list(self.input_size)
        if self.crop_pct is not None:
            out["crop_pct"] = self.crop_pct
        if self.interpolation is not None:
            out["interpolation"] = self.interpolation
        if self.fixed is not None:
            out["fixed_input_size"] = self.fixed
        return out

    @classmethod
    def of(cls, value: Preprocess | Mapping[str, Any]) -> Preprocess:
        """``value`` itself, or the preprocessing a ``weights_meta``-style dict describes."""
        if isinstance(value, Preprocess):
            return value
        size = value.get("input_size")
        fixed = value.get("fixed_input_size")
        return cls(
            mean=tuple(float(v) for v in value["mean"]),
            std=tuple(float(v) for v in value["std"]),
            resize=int(value.get("resize_size", [224])[0]),
            input_size=(int(size[-2]), int(size[-1])) if size else None,
            crop_pct=value.get("crop_pct"),
            interpolation=value.get("interpolation"),
            fixed=None if fixed is None else bool(fixed),
        )


@dataclass(frozen=True)
class ModelMeta:
    """A loaded network's metadata.

    Attributes:
        spec: the network asked for (attnviz's ``resnet18``, ``timm:NAME``, ``file.py:fn``, ...).
        attention: the attention type (attnviz's blocks, a timm network's own, or a label the user gave).
        source: where the weights came from (``"random"``, ``"imagenet (ResNet18_Weights.IMAGENET1K_V1)"``,
            ``"demo (...)"``, ``"file best.pt"``, ``"timm NAME (ImageNet)"``, ...).
        untrained: the attention is untrained (random weights, or blocks inserted into a pretrained backbone).
        labels: class names, one per output (``None``: not known yet).
        labels_source: where the labels came from (``"model card"``, ``"class i"``, a file, ...).
        preprocess: how images are prepared for it.
        num_outputs: the number of classes the source says it outputs (``None``: read from a forward).
        card: the checkpoint's model card (attnviz's own checkpoints), if any.
        input_note: why the network runs at one input size only ('' when it does not).
    """

    spec: str
    attention: str | None = None
    source: str = "random"
    untrained: bool = False
    labels: tuple[str, ...] | None = None
    labels_source: str = "class i"
    preprocess: Preprocess = Preprocess()
    num_outputs: int | None = None
    card: Mapping[str, Any] | None = field(default=None, compare=False)
    input_note: str = ""

    @property
    def categories(self) -> list[str]:
        """The class names as a list (empty when not known)."""
        return list(self.labels or ())

    def weights_meta(self) -> dict[str, Any]:
        """The older ``weights_meta`` dict: ``categories`` and :meth:`Preprocess.as_dict`."""
        return {"categories": None if self.labels is None else list(self.labels), **self.preprocess.as_dict()}


def attach_meta(model: nn.Module, meta: ModelMeta) -> nn.Module:
    """Put ``meta`` on ``model`` (read it with :func:`meta_of`), with the older attribute names written from it."""
    setattr(model, _ATTR, meta)
    legacy: dict[str, Any] = {
        "arch": meta.spec,
        "attention": meta.attention,
        "weights_source": meta.source,
        "untrained_attention": meta.untrained,
        "labels_source": meta.labels_source,
        "weights_meta": meta.weights_meta(),
    }
    if meta.num_outputs is not None:
        legacy["num_outputs"] = meta.num_outputs
    if meta.card:
        legacy["weights_card"] = dict(meta.card)
    if meta.input_note:
        legacy["input_note"] = meta.input_note
    for name, value in legacy.items():
        setattr(model, name, value)
    return model


def meta_of(model: nn.Module) -> ModelMeta:
    """The metadata :func:`attach_meta` put on ``model``.

    Raises:
        ValueError: ``model`` was not made by attnviz (:func:`attnviz.load_model`, :func:`attnviz.build_model`).
    """
    meta = getattr(model, _ATTR, None)
    if not isinstance(meta, ModelMeta):
        raise ValueError(
            f"{type(model).__name__} carries no attnviz metadata: load it with attnviz.load_model or build_model"
        )
    return meta


def short_side(meta: Preprocess | Mapping[str, Any], size: int | None) -> int:
    """The short side images are resized to: ``size``, else the weights' own, else 224."""
    return size or Preprocess.of(meta).resize


def warm_size(meta: Preprocess | Mapping[str, Any]) -> tuple[int, int]:
    """(H, W) of the warm-up forward: the size the network was found to run at (a user's network with a fixed
    pooling head needs its own), else a small 64 x 64 (attnviz's ResNets run at any size)."""
    pre = Preprocess.of(meta)
    return pre.fixed_size or pre.input_size or (64, 64)


def measured(card: Mapping[str, Any]) -> dict[str, Any] | None:
    """The headline of a card's held-out scene scores, with its real-photo top-1 when it has one."""
    summary = card.get("test", {}).get("summary")
    photos = card.get("real_photos")
    if summary is None or not photos:
        return summary
    return {**summary, "real_photos_accuracy": photos.get("accuracy")}
