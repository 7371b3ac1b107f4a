"""Safe decoding: reduced size, orientation, odd modes, and refusals as InvalidImage."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imagesearch import imaging


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


def test_large_jpeg_is_decoded_at_reduced_size():
    data = _encode(Image.new("RGB", (4000, 3000), (10, 120, 200)), "JPEG")
    image = imaging.decode(data, min_side=448, max_pixels=64_000_000)
    assert image.mode == "RGB" and 448 <= min(image.size) <= 2 * 448
    assert abs(image.width / image.height - 4 / 3) < 0.02


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    data = _encode(Image.new("RGB", (200, 100)), "JPEG", exif=exif)
    assert imaging.decode(data, min_side=64, max_pixels=10**7).size == (100, 200)


@pytest.mark.parametrize("image, fmt", [
    (Image.new("CMYK", (50, 40), (0, 255, 255, 0)), "JPEG"),
    (Image.new("I;16", (50, 40), 40000), "PNG"),
    (Image.new("LA", (50, 40), (100, 0)), "PNG"),
    (Image.new("P", (50, 40), 3), "GIF"),
])
def test_unusual_modes_become_rgb(image, fmt):
    decoded = imaging.decode(_encode(image, fmt), min_side=32, max_pixels=10**7)
    assert decoded.mode == "RGB" and decoded.size == (50, 40)


def test_transparent_pixels_become_white_not_black():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert imaging.decode(_encode(rgba, "PNG"), min_side=8, max_pixels=10**6).getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"GIF89a-but-not-really", "not a supported image|unreadable"),
    (b"%!PS-Adobe-3.0 EPSF-3.0", "not a supported image"),
])
def test_garbage_is_refused(data, message):
    with pytest.raises(imaging.InvalidImage, match=message):
        imaging.decode(data, min_side=32, max_pixels=10**6)


def test_truncated_and_oversized_images_are_refused():
    data = _encode(Image.effect_noise((600, 600), 50).convert("RGB"), "JPEG")
    with pytest.raises(imaging.InvalidImage, match=r"truncated|corrupt|unreadable"):
        imaging.decode(data[: len(data) // 2], min_side=32, max_pixels=10**7)
    big = _encode(Image.new("L", (3000, 3000)), "PNG")  # small file, 9 MP
    with pytest.raises(imaging.InvalidImage, match="pixels"):
        imaging.probe(big, max_pixels=1_000_000)


@pytest.mark.parametrize("limit", [6_000_000, 1_000_000])  # 9 MP: Pillow warns (1x-2x) or errors (>2x)
def test_pillow_bomb_warning_and_error_are_both_refusals(monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    big = _encode(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(imaging.InvalidImage, match="not a supported image"):
        imaging.probe(big, max_pixels=10**9)


def test_thumbnail_is_a_small_jpeg():
    thumb = imaging.thumbnail_jpeg(Image.new("RGB", (1000, 500)), 256)
    opened = Image.open(io.BytesIO(thumb))
    assert opened.format == "JPEG" and max(opened.size) == 256
