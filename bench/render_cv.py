"""OpenCV vs numpy + PIL for drawing overlays, side by side in one run (issue: use OpenCV where it is faster).

    python bench/render_cv.py [--repeat 20]

Rows: one 800x600 overlay (upsample a 14x19 map, colour it, blend), a page of overlays for a 4:3 photo (16 maps
at the gallery size), the colour lookup alone, and JPEG encoding (PIL vs OpenCV). attnviz.render uses OpenCV for
the first three and keeps PIL for JPEG, as these numbers say. One thread for each library.
"""

from __future__ import annotations

import argparse
import io

import cv2
import numpy as np
from _common import header, interleave, med, ratio, table
from PIL import Image

from attnviz import render


def reference_overlay(image: np.ndarray, map01: np.ndarray, lut: np.ndarray, alpha: float) -> np.ndarray:
    """attnviz's drawing before OpenCV: PIL bilinear resize, numpy take, float32 blend."""
    h, w = image.shape[:2]
    up = np.asarray(Image.fromarray(map01.astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR))
    idx = np.rint(np.clip(up, 0, 1) * 255).astype(np.uint8)
    out = image.astype(np.float32) * np.float32(1 - alpha)
    out += np.take(lut.astype(np.float32) * np.float32(alpha), idx, axis=0)
    return np.rint(out).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    header("Overlays: OpenCV vs numpy + PIL (bench/render_cv.py)", "cpu", "one thread; medians of interleaved rounds")
    lut = render.colormap_lut("turbo")
    image = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    m = rng.random((14, 19)).astype(np.float32)
    page = [rng.random((s, s * 4 // 3)).astype(np.float32) for s in (56, 28, 14, 7) for _ in range(4)]
    idx = rng.integers(0, 256, (600, 800), dtype=np.uint8)
    rows = []
    cases = {
        "one overlay 800x600": (
            lambda: reference_overlay(image, m, lut, 0.5),
            lambda: render.overlay(image, m, "turbo", 0.5),
        ),
        "page of 16 overlays": (
            lambda: [reference_overlay(image, p, lut, 0.5) for p in page],
            lambda: [render.overlay(image, p, "turbo", 0.5) for p in page],
        ),
        "colour lookup 800x600": (lambda: np.take(lut, idx, axis=0), lambda: render._lookup(idx, lut)),
    }
    for name, (old, new) in cases.items():
        t = interleave({"numpy+PIL": old, "OpenCV": new}, args.repeat, warmup=1, device="cpu")
        rows.append(
            [name, f"{med(t['numpy+PIL']):.2f}", f"{med(t['OpenCV']):.2f}", f"{ratio(t['OpenCV'], t['numpy+PIL']):.3f}"]
        )
    diff = np.abs(reference_overlay(image, m, lut, 0.5).astype(int) - render.overlay(image, m, "turbo", 0.5)).max()

    from attnviz.sources.demo import example

    photo = np.asarray(Image.open(example("rocket.jpg")).convert("RGB").resize((800, 533)))
    shown = render.overlay(photo, m, "turbo", 0.5)  # what the gallery sends: a real photo's overlay

    def pil_jpeg() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(shown).save(buf, "JPEG", quality=90, subsampling=0)
        return buf.getvalue()

    def cv_jpeg() -> bytes:  # the same settings: quality 90, no chroma subsampling (4:4:4)
        params = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        return cv2.imencode(".jpg", shown[..., ::-1], params)[1].tobytes()

    t = interleave({"PIL": pil_jpeg, "OpenCV": cv_jpeg}, args.repeat, warmup=1, device="cpu")
    rows.append(
        [
            "JPEG of an 800x533 photo overlay (PIL kept)",
            f"{med(t['PIL']):.2f}",
            f"{med(t['OpenCV']):.2f}",
            f"{ratio(t['OpenCV'], t['PIL']):.3f}",
        ]
    )
    table(["case", "numpy+PIL ms", "OpenCV ms", "OpenCV / numpy+PIL"], rows)
    print(f"\nlargest pixel difference of one overlay, OpenCV vs the float reference: {diff}/255")


if __name__ == "__main__":
    main()
