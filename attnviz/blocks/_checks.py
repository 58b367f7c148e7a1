"""Argument checks shared by the blocks: clear ``ValueError`` messages, never ``assert``."""

from __future__ import annotations


def check_channels(block: str, channels: object, *, divisible_by: int = 1, why: str = "") -> int:
    """Return ``channels`` if it is an int >= 1 divisible by ``divisible_by``; else raise ``ValueError``."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"{block}: channels must be a positive integer, got {channels!r}")
    if channels % divisible_by:
        lo = channels - channels % divisible_by
        hint = f"use a multiple of {divisible_by} such as {lo or divisible_by} or {lo + divisible_by}"
        raise ValueError(f"{block}: channels={channels} cannot be split {why}; {hint}")
    return channels


def check_positive(block: str, name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1; else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{block}: {name} must be a positive integer, got {value!r}")
    return value


def check_odd_kernel(block: str, kernel_size: object, name: str = "kernel_size") -> int:
    """Return ``kernel_size`` if it is a positive odd int (so 'same' padding is (k-1)//2); else raise."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"{block}: {name} must be a positive odd integer so the map keeps its size "
            f"(padding (k-1)//2), got {kernel_size!r}; try 3, 5 or 7"
        )
    return kernel_size


def check_stride(block: str, stride: object) -> int:
    """Strides a 3x3-replacing block supports: 1 or 2."""
    if stride not in (1, 2) or isinstance(stride, bool):
        raise ValueError(f"{block}: stride must be 1 or 2, got {stride!r}")
    return int(stride)  # type: ignore[arg-type]


def hidden_width(block: str, channels: int, reduction: int, minimum: int, hidden: int | None = None) -> int:
    """Bottleneck width ``max(channels // reduction, minimum)``, or ``hidden`` when given.

    Guards the blog bug where ``C // 16`` is 0 or 1 for small C (ATTENTION.md, bug 9).
    """
    if hidden is not None:
        return check_positive(block, "hidden", hidden)
    check_positive(block, "reduction", reduction)
    return max(channels // reduction, minimum)
