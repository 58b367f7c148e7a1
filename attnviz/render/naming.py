"""File names made from module paths and input names: safe on every file system, never escaping their folder."""

from __future__ import annotations

import re

__all__ = ["safe_name"]


def safe_name(text: str, max_len: int = 100) -> str:
    """A file-name-safe version of ``text``: only letters, digits, '.', '_' and '-'; no leading dots; at most
    ``max_len`` characters (file systems refuse names over 255 bytes)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", re.sub(r"\.{2,}", "_", text))
    return re.sub(r"_+", "_", name).lstrip(".")[:max_len] or "map"
