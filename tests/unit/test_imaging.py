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


# --- taken_at: the EXIF date, in epoch seconds --------------------------------------------------

EXIF_IFD, ORIGINAL, DIGITIZED, DATETIME = 0x8769, 0x9003, 0x9004, 0x0132
OFFSET_ORIGINAL, OFFSET_DIGITIZED, OFFSET = 0x9011, 0x9012, 0x9010
JULY_4_1230_UTC = 1625401800.0  # 2021-07-04T12:30:00Z, written out so the test does not share the parser's code


def _exif_jpeg(ifd0: dict | None = None, exif_ifd: dict | None = None, size=(64, 48), mode="RGB",
               exif: bytes | None = None) -> bytes:
    if exif is None:
        tags = Image.Exif()
        for tag, value in (ifd0 or {}).items():
            tags[tag] = value
        for tag, value in (exif_ifd or {}).items():
            tags.get_ifd(EXIF_IFD)[tag] = value
        exif = tags.tobytes()
    return _encode(Image.new(mode, size), "JPEG", exif=exif)


def _taken_at(data: bytes) -> float | None:
    return imaging.taken_at(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("offset, expected", [
    ("+09:00", JULY_4_1230_UTC - 9 * 3600),
    ("-05:30", JULY_4_1230_UTC + 5.5 * 3600),
    ("+00:00", JULY_4_1230_UTC),
    (None, JULY_4_1230_UTC),  # no offset: read as UTC, as the docstring says
])
def test_date_time_original_with_and_without_its_offset(offset, expected):
    tags = {ORIGINAL: "2021:07:04 12:30:00"} | ({OFFSET_ORIGINAL: offset} if offset else {})
    assert _taken_at(_exif_jpeg(exif_ifd=tags)) == expected


def test_original_wins_over_digitized_and_datetime_each_with_its_own_offset():
    both = _exif_jpeg(ifd0={DATETIME: "2030:01:01 00:00:00", OFFSET: "+01:00"},
                      exif_ifd={ORIGINAL: "2021:07:04 12:30:00", DIGITIZED: "2025:01:01 00:00:00"})
    assert _taken_at(both) == JULY_4_1230_UTC
    digitized = _exif_jpeg(exif_ifd={DIGITIZED: "2021:07:04 14:30:00", OFFSET_DIGITIZED: "+02:00",
                                     OFFSET_ORIGINAL: "+09:00"})  # an Original offset without its date is unused
    assert _taken_at(digitized) == JULY_4_1230_UTC
    only_datetime = _exif_jpeg(ifd0={DATETIME: "2021:07:04 11:30:00"}, exif_ifd={OFFSET: "-01:00"})
    assert _taken_at(only_datetime) == JULY_4_1230_UTC


def test_a_malformed_original_falls_back_to_the_next_date():
    data = _exif_jpeg(ifd0={DATETIME: "2021:07:04 12:30:00"}, exif_ifd={ORIGINAL: "0000:00:00 00:00:00"})
    assert _taken_at(data) == JULY_4_1230_UTC


@pytest.mark.parametrize("value", [
    "0000:00:00 00:00:00",  # a camera whose clock was never set
    "    :  :     :  :  ",  # the blank EXIF prescribes for "unknown"
    "2021:13:45 25:61:00",
    "yesterday",
    "",
    b"\xff\xfe\x00\x80garbage",
])
def test_malformed_dates_give_none(value):
    assert _taken_at(_exif_jpeg(exif_ifd={ORIGINAL: value, OFFSET_ORIGINAL: "+09:00"})) is None


@pytest.mark.parametrize("offset", ["+25:00", "09:00", "garbage", b"\xff\xfe"])
def test_a_malformed_offset_counts_as_absent(offset):
    assert _taken_at(_exif_jpeg(exif_ifd={ORIGINAL: "2021:07:04 12:30:00", OFFSET_ORIGINAL: offset})) \
        == JULY_4_1230_UTC


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow's own, expected here
@pytest.mark.parametrize("exif", [
    b"Exif\x00\x00\x00\x00\x00",
    b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x00\x00",  # an IFD claiming 65535 entries
    b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x69\x87\x04\x00\x01\x00\x00\x00\xff\xff\xff\x7f",  # Exif IFD far away
    b"\xde\xad\xbe\xef" * 10,
])
def test_a_broken_exif_segment_gives_none_and_the_image_still_decodes(exif):
    data = _exif_jpeg(exif=exif)
    assert _taken_at(data) is None
    assert imaging.taken_at(imaging.decode(data, min_side=8, max_pixels=10**6)) is None


def test_no_exif_gives_none():
    assert _taken_at(_encode(Image.new("RGB", (20, 10)), "PNG")) is None
    assert _taken_at(_encode(Image.new("RGB", (20, 10)), "JPEG")) is None


@pytest.mark.parametrize("size, mode, orientation", [
    ((2000, 1500), "RGB", None),  # DCT-scaled decode, then resized
    ((200, 100), "RGB", 6),  # rotated by exif_transpose
    ((300, 200), "CMYK", None),  # converted to RGB
])
def test_the_decoded_image_keeps_its_exif_date(size, mode, orientation):
    """The embed stage reads the date from the image ``decode`` returned: no second decode."""
    data = _exif_jpeg(ifd0={0x0112: orientation} if orientation else {}, size=size, mode=mode,
                      exif_ifd={ORIGINAL: "2021:07:04 21:30:00", OFFSET_ORIGINAL: "+09:00"})
    decoded = imaging.decode(data, min_side=64, max_pixels=10**8)
    assert decoded.mode == "RGB" and imaging.taken_at(decoded) == JULY_4_1230_UTC
