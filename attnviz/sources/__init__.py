"""Sources of models and weights: attnviz's own ResNets (:mod:`.own`), timm and torchvision (:mod:`.timm`,
:mod:`.hub`), the user's files and modules (:mod:`.loading`), checkpoints (:mod:`.checkpoint`, :mod:`.weights`) and
the shipped demo (:mod:`.demo`)."""

from .loading import load_model
from .own import build_model

__all__ = ["build_model", "load_model"]
