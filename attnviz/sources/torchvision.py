"""torchvision's classification networks as a source (``torchvision:NAME``): their Weights API's ``DEFAULT``
weights (fetched by :func:`attnviz.sources.hub.torchvision_state_dict`), random ones, or a checkpoint file; labels
and preprocessing from the weights' metadata."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import nn

from .hub import torchvision_state_dict
from .meta import ModelMeta, Preprocess
from .registry import LoadOptions, register_source
from .spec import ModelSpec, Weights
from .statedict import load_user_checkpoint

__all__ = ["load_torchvision", "torchvision_preprocess"]


def torchvision_preprocess(weights: Any) -> Preprocess:
    """The preprocessing of a torchvision weights enum member (its ``transforms()``: mean, std, resize, crop)."""
    t = weights.transforms()
    crop = [int(v) for v in t.crop_size] * (2 if len(t.crop_size) == 1 else 1)
    return Preprocess(
        mean=tuple(float(v) for v in t.mean),
        std=tuple(float(v) for v in t.std),
        resize=int(t.resize_size[0]),
        input_size=(crop[0], crop[1]),
        interpolation=str(t.interpolation.value),
    )


@register_source("torchvision")
def load_torchvision(spec: ModelSpec, options: LoadOptions) -> tuple[nn.Module, ModelMeta]:
    """torchvision's classification model ``spec.name`` (close names suggested for a wrong one)."""
    import torchvision.models as tvm

    name = spec.name
    names = tvm.list_models(module=tvm)  # classification models only
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; valid names: {', '.join(names)}"
        other = " (not a classification model)" if name in tvm.list_models() else ""
        raise ValueError(f"unknown torchvision classification model {name!r}{other}{hint}")
    w = options.weights
    if w is Weights.DEMO:
        raise ValueError(f"demo weights are attnviz's resnet18 only; {spec} has none")
    default = tvm.get_model_weights(name).DEFAULT
    pre = torchvision_preprocess(default)
    labels = tuple(default.meta["categories"])
    said = f"torchvision {default}"
    if isinstance(w, Path):
        model = load_user_checkpoint(
            tvm.get_model(name, weights=None),
            w,
            spec.text,
            trust_pickle=options.trust_pickle,
            rebuild=lambda n: tvm.get_model(name, weights=None, num_classes=n),
        )
        return model, ModelMeta(spec.text, None, f"file {w.name}", False, None, "class i", pre)
    if w is Weights.RANDOM or not options.pretrained:
        meta = ModelMeta(spec.text, None, "random", True, labels, said, pre, len(labels))
        return tvm.get_model(name, weights=None), meta
    # read (downloading first if need be) with weights_only=True; torchvision's builder then reads the cached file
    torchvision_state_dict(default, offline=options.offline, progress=options.progress)
    model = tvm.get_model(name, weights=default, progress=options.progress)
    return model, ModelMeta(spec.text, None, said, False, labels, said, pre, len(labels))
