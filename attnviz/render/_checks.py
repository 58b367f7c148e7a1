"""Input validation shared by the render modules: precise TypeError/ValueError messages."""

from __future__ import annotations

import numbers

import numpy as np


def _array(x: object, name: str, ndim: int | None = None, shape_doc: str = "") -> np.ndarray:
    """Check that ``x`` is a real-valued ndarray (optionally of ``ndim`` dims) and return it."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers (integer or float dtype), got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        doc = f" {shape_doc}" if shape_doc else ""
        raise ValueError(f"{name} must be {ndim}-D{doc}, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    return x


def _finite(x: np.ndarray, name: str) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")


def _pair(value: object, name: str, doc: str, positive: bool = True) -> tuple[int, int]:
    """Check a pair of ints, e.g. a size (width, height) or a grid (h, w)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair {doc} of ints, got {value!r}")
    a, b = value
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be a pair {doc} of ints, got {value!r}")
    if positive and (a < 1 or b < 1):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return int(a), int(b)


def _image(image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy.ndarray, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    return image


def _alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a number, got {type(alpha).__name__}")
    if not 0.0 <= float(alpha) <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return float(alpha)


def _topk(topk: object) -> int | None:
    if topk is None:
        return None
    if isinstance(topk, bool) or not isinstance(topk, numbers.Integral):
        raise TypeError(f"topk must be an int or None, got {type(topk).__name__}")
    if topk < 1:
        raise ValueError(f"topk must be >= 1 or None, got {topk}")
    return int(topk)


def _title(title: object, name: str = "title") -> str:
    if not isinstance(title, str):
        raise TypeError(f"{name} must be a str, got {type(title).__name__}")
    return title


def _gate(gate: object) -> np.ndarray:
    g = _array(gate, "gate", 1, "(C,) one weight per channel")
    _finite(g, "gate")
    return g.astype(np.float64, copy=False)
