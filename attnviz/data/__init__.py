"""Data this project can build offline: cut-and-paste scenes with a label and an object mask per image, and real
photos pasted onto textures (the held-out real-photo test)."""

from .photos import PhotoDataset
from .scenes import SPLITS, Scene, SceneConfig, SceneDataset, split_of

__all__ = ["SPLITS", "PhotoDataset", "Scene", "SceneConfig", "SceneDataset", "split_of"]
