"""The server-side file store: one folder per export (PNG or zip), bounded in count and bytes, oldest first out;
and the zips already made, so that asking again for the same result and display settings costs nothing."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

__all__ = ["ExportStore"]

KEEP_NEWEST = 4  # the newest exports stay whatever their size: their files may still be on their way to a browser
ZIPS_KEPT = 16


def _tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class ExportStore:
    """Export folders under ``root``: at most ``keep`` folders and about ``max_bytes`` in all.

    Thread-safe: handlers of concurrent sessions share one store.
    """

    def __init__(self, root: Path, keep: int = 64, max_bytes: int = 1 << 30) -> None:
        self.root = Path(root)
        self.keep = keep
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._zips: OrderedDict[tuple, tuple[weakref.ref, Path]] = OrderedDict()

    def new_dir(self) -> Path:
        """A fresh folder for one export; older ones are removed first (oldest first)."""
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            dated = []
            for p in self.root.iterdir():
                try:
                    dated.append((p.stat().st_mtime, p, _tree_bytes(p)))
                except FileNotFoundError:  # removed meanwhile (another process sharing the folder)
                    continue
            dated.sort(key=lambda t: t[0])
            total = sum(size for _, _, size in dated)
            while dated and (len(dated) >= self.keep or total > self.max_bytes) and len(dated) > KEEP_NEWEST:
                _, p, size = dated.pop(0)
                shutil.rmtree(p, ignore_errors=True)
                total -= size
            d = self.root / uuid.uuid4().hex
            d.mkdir()
            return d

    def zip_for(self, result: object, key: tuple, make: Callable[[Path], Path]) -> Path:
        """The zip of ``result`` under display settings ``key``: the one made before if it is still on disk, else
        ``make(folder)`` in a new folder."""
        with self._lock:
            ref, path = self._zips.get((id(result), *key), (None, None))
            if ref is not None and ref() is result and path is not None and path.is_file():
                os.utime(path.parent)  # in use again: the folder is removed last
                return path
        path = make(self.new_dir())
        with self._lock:
            self._zips[(id(result), *key)] = (weakref.ref(result), path)
            while len(self._zips) > ZIPS_KEPT:
                self._zips.popitem(last=False)
        return path

    def count(self) -> int:
        """Export folders on disk now."""
        return sum(1 for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else 0
