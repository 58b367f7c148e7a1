"""Sources of models and weights: model specs parsed once (:mod:`.spec`), one loader per kind
(:mod:`.registry`: attnviz's own ResNets :mod:`.own` on :mod:`.resnets`, :mod:`.timm`, :mod:`.torchvision`, the
user's files and modules :mod:`.user`), :func:`load_model` (:mod:`.loading`), typed metadata (:mod:`.meta`),
checkpoints (:mod:`.checkpoint`, :mod:`.weights`), downloads and the offline rule (:mod:`.hub`), the shipped demo
(:mod:`.demo`) and the selection policy (:mod:`.select`)."""

from .loading import load_model
from .own import build_model

__all__ = ["build_model", "load_model"]
