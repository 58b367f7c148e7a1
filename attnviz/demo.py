"""The shipped demo checkpoints (models/): where they are and what they were trained on.

``build_model("resnet18", "cbam", weights="demo")`` loads ``models/resnet18-scenes.safetensors`` (the backbone)
and ``models/resnet18-scenes-cbam.safetensors`` (the fine-tuned attention, a delta on the backbone). Each file
carries its model card (:mod:`attnviz.checkpoint`); ``ATTNVIZ_MODELS`` points at another folder.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEMO_ARCH", "DEMO_MEAN", "DEMO_STD", "demo_dir", "demo_file"]

DEMO_ARCH = "resnet18"
DEMO_MEAN = [0.485, 0.456, 0.406]  # ImageNet statistics, so a user's own ImageNet-normalised images also fit
DEMO_STD = [0.229, 0.224, 0.225]


def demo_dir() -> Path:
    """The folder holding the demo checkpoints: ``$ATTNVIZ_MODELS`` or the repository's ``models/``."""
    env = os.environ.get("ATTNVIZ_MODELS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "models"


def demo_file(attention: str | None, folder: str | Path | None = None) -> Path:
    """Path of the demo checkpoint for ``attention`` (``None``: the plain backbone)."""
    folder = Path(folder) if folder is not None else demo_dir()
    suffix = "" if attention is None else f"-{attention}"
    return folder / f"{DEMO_ARCH}-scenes{suffix}.safetensors"
