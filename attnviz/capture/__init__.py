"""Capture: the recorder (:mod:`.recorder`), discovery of attention sites in any network (:mod:`.discover`,
:mod:`.sites`, :mod:`.adapters`), the kinds of weight (:mod:`.kinds`) and the views drawn from them (:mod:`.views`)."""

from .maps import AttentionMap
from .recorder import AttentionRecorder

__all__ = ["AttentionMap", "AttentionRecorder"]
