"""Decoding: every odd image becomes the right RGB image; every bad one gets a clear ImageError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attnviz.pipeline.image import ImageError, decode_image, preprocess, resized_size
from tests.images import bad_files, odd_images

ODD = odd_images()
BAD = bad_files()


@pytest.mark.parametrize("name", list(ODD))
def test_odd_images_decode_to_rgb(name: str) -> None:
    d = decode_image(ODD[name])
    assert d.image.mode == "RGB"
    arr = np.asarray(d.image)
    assert arr.dtype == np.uint8 and arr.ndim == 3


def test_specific_conversions() -> None:
    assert decode_image(ODD["one_pixel.png"]).image.getpixel((0, 0)) == (200, 30, 30)
    g16 = np.asarray(decode_image(ODD["gray16.png"]).image)
    assert (
        g16[0, 0, 0] == 0
        and g16[-1, -1, 0] == 255
        and "16-bit image scaled to 8 bits" in decode_image(ODD["gray16.png"]).notes
    )
    d = decode_image(ODD["palette_transparent.png"])
    assert "transparency composited on white" in d.notes
    gif = decode_image(ODD["animated.gif"])
    assert gif.notes == ["first frame of 3"] and gif.image.getpixel((5, 5))[0] > 200  # the red first frame
    assert "CMYK converted to RGB" in decode_image(ODD["cmyk.jpg"]).notes


def test_exif_orientation_is_applied() -> None:
    d = decode_image(ODD["exif_rotated.jpg"])
    assert d.image.size == (40, 60)  # 60x40 stored, rotated 90 degrees clockwise for display
    arr = np.asarray(d.image).astype(int)
    assert arr[5, 20, 0] > 200 and arr[5, 20, 2] < 60  # the red (left) half is now on top
    assert arr[-5, 20, 2] > 200 and arr[-5, 20, 0] < 60
    assert any("EXIF orientation (6)" in n for n in d.notes)


@pytest.mark.parametrize("name", list(BAD))
def test_bad_files_get_clear_errors(name: str) -> None:
    data, match = BAD[name]
    with pytest.raises(ImageError, match=match):
        decode_image(data)


def test_limits_are_configurable() -> None:
    png = ODD["grayscale.png"]
    with pytest.raises(ImageError, match="above the upload limit"):
        decode_image(png, max_bytes=10)
    with pytest.raises(ImageError, match=r"96x64 = 0.00614 megapixels, above the limit of 0.001 MP"):
        decode_image(png, max_pixels=1000)


def test_other_inputs(tmp_path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        decode_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="cannot read an image from a int"):
        decode_image(3)  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="uint8"):
        decode_image(np.zeros((4, 4), np.float32))
    assert decode_image(np.zeros((4, 5, 3), np.uint8)).image.size == (5, 4)


@pytest.mark.parametrize(
    ("size", "short", "expected"),
    [
        ((451, 300), 224, (337, 224)),
        ((300, 451), 224, (224, 337)),
        ((1, 1), 224, (224, 224)),
        ((4000, 10), 224, (896, 32)),
    ],
)
def test_resize_keeps_aspect_without_crop(size: tuple[int, int], short: int, expected: tuple[int, int]) -> None:
    assert resized_size(size, short) == expected


def test_preprocess_normalises_with_given_stats() -> None:
    im = Image.new("RGB", (40, 20), (255, 0, 128))
    x = preprocess(im, 32, [0.5, 0.5, 0.5], [0.5, 0.25, 1.0])
    assert x.shape == (1, 3, 32, 64)
    torch.testing.assert_close(x[0, :, 5, 5], torch.tensor([1.0, -2.0, 128 / 255 - 0.5]))
