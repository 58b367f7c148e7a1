"""The shipped demo checkpoints and example photos: package data (in the wheel too), found through
``importlib.resources``.

``build_model("resnet18", "cbam", weights="demo")`` loads ``checkpoints/resnet18-scenes.safetensors`` (the
backbone) and ``checkpoints/resnet18-scenes-cbam.safetensors`` (the fine-tuned attention, a delta on the
backbone). Each file carries its model card (:mod:`attnviz.sources.checkpoint`); ``ATTNVIZ_MODELS`` points at another
folder. ``examples/`` holds the app's example photos, with ``ATTRIBUTION.md``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["DEMO_ARCH", "DEMO_MEAN", "DEMO_STD", "demo_categories", "demo_dir", "demo_file", "example", "examples_dir"]

DEMO_ARCH = "resnet18"
DEMO_MEAN = [0.485, 0.456, 0.406]  # ImageNet statistics, so a user's own ImageNet-normalised images also fit
DEMO_STD = [0.229, 0.224, 0.225]


def _package_dir(name: str) -> Path:
    """A data folder of the installed package (a directory on disk: attnviz is never imported from a zip)."""
    return Path(str(resources.files("attnviz").joinpath(name)))


def demo_dir() -> Path:
    """The folder holding the demo checkpoints: ``$ATTNVIZ_MODELS`` or the package's ``checkpoints/``."""
    env = os.environ.get("ATTNVIZ_MODELS")
    return Path(env) if env else _package_dir("checkpoints")


def examples_dir() -> Path:
    """The package's example photos (``examples/``, with ``ATTRIBUTION.md``)."""
    return _package_dir("examples")


def example(name: str = "chelsea_cat.jpg") -> Path:
    """Path of one example photo."""
    return examples_dir() / name


def demo_file(attention: str | None, folder: str | Path | None = None) -> Path:
    """Path of the demo checkpoint for ``attention`` (``None``: the plain backbone)."""
    folder = Path(folder) if folder is not None else demo_dir()
    suffix = "" if attention is None else f"-{attention}"
    return folder / f"{DEMO_ARCH}-scenes{suffix}.safetensors"


def demo_categories() -> list[str]:
    """The classes the demo network knows (from its model card)."""
    from .checkpoint import read_card

    return list(read_card(demo_file(None)).get("classes", []))
