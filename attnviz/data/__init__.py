"""Data this project can build offline: cut-and-paste scenes with a label and an object mask per image."""

from .scenes import SPLITS, Scene, SceneConfig, SceneDataset, split_of

__all__ = ["SPLITS", "Scene", "SceneConfig", "SceneDataset", "split_of"]
