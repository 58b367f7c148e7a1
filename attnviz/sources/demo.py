"""The shipped demo checkpoints and example photos: the repository's top-level ``models/`` and ``assets/``, which
the wheel carries as ``attnviz/models/`` and ``attnviz/assets/`` (setup.py maps them in).

``build_model("resnet18", "cbam", weights="demo")`` loads ``models/resnet18-scenes.safetensors`` (the
backbone) and ``models/resnet18-scenes-cbam.safetensors`` (the fine-tuned attention, a delta on the
backbone). Each file carries its model card (:mod:`attnviz.sources.checkpoint`); ``ATTNVIZ_MODELS`` points at another
folder. ``assets/`` holds the app's example photos, with ``ATTRIBUTION.md``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .checkpoint import read_card
from .meta import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DEMO_ARCH", "DEMO_MEAN", "DEMO_STD", "demo_categories", "demo_dir", "demo_file", "example", "examples_dir"]

DEMO_ARCH = "resnet18"
DEMO_MEAN = list(IMAGENET_MEAN)  # ImageNet statistics, so a user's own ImageNet-normalised images also fit
DEMO_STD = list(IMAGENET_STD)


def _data_dir(name: str) -> Path:
    """A shipped data folder: inside the installed wheel (``attnviz/<name>``), else the source checkout's top-level
    ``<name>/`` (an editable install or a plain clone). attnviz is never imported from a zip."""
    installed = Path(str(resources.files("attnviz").joinpath(name)))
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / name


def demo_dir() -> Path:
    """The folder holding the demo checkpoints: ``$ATTNVIZ_MODELS`` or the shipped ``models/``."""
    env = os.environ.get("ATTNVIZ_MODELS")
    return Path(env) if env else _data_dir("models")


def examples_dir() -> Path:
    """The shipped example photos (``assets/``, with ``ATTRIBUTION.md``)."""
    return _data_dir("assets")


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
    return list(read_card(demo_file(None)).get("classes", []))
