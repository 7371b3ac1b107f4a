"""Safe decoding: reduced size, orientation, odd modes, and refusals as InvalidImage."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

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


# --- the header, and the tensor path's pieces (the GPU embed path, run here on the CPU) -----------

def test_the_header_gives_the_size_as_shown_and_the_date_without_decoding():
    data = _exif_jpeg(ifd0={0x0112: 6}, exif_ifd={ORIGINAL: "2021:07:04 12:30:00"}, size=(64, 48))
    head = imaging.header(imaging.open_image(data, max_pixels=10**6))
    assert (head.format, head.mode, head.width, head.height, head.orientation) == ("JPEG", "RGB", 64, 48, 6)
    assert head.size == (48, 64) and head.taken_at == JULY_4_1230_UTC
    no_pixels = data[: data.index(b"\xff\xda")]  # everything before the scan: a decode would fail
    assert imaging.header(imaging.open_image(no_pixels, max_pixels=10**6)) == head


def test_decode_with_size_reports_the_source_size_not_the_reduced_decode():
    image, size = imaging.decode_with_size(_exif_jpeg(ifd0={0x0112: 8}, size=(4000, 3000)), min_side=256,
                                           max_pixels=10**8)
    assert max(image.size) < 3000 and image.size[0] < image.size[1]
    assert size == (3000, 4000)


def test_decode_with_size_follows_an_orientation_stored_after_the_pixels():
    """A PNG may carry its eXIf chunk after the image data: Pillow sees it only once the pixels are loaded."""
    import struct
    import zlib

    exif = Image.Exif()
    exif[0x0112] = 6
    png = _encode(Image.new("RGB", (40, 20), (1, 2, 3)), "PNG")
    payload = exif.tobytes()
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    late = png[:-12] + chunk + png[-12:]  # just before IEND
    assert imaging.header(imaging.open_image(late, max_pixels=10**6)).orientation is None  # not read from a PNG
    image, size = imaging.decode_with_size(late, min_side=16, max_pixels=10**6)
    assert image.size == (20, 40) and size == (20, 40)


def test_unidentified_files_are_refused_without_a_memory_address():
    with pytest.raises(imaging.InvalidImage) as refused:
        imaging.decode(b"<html>hello</html>", min_side=32, max_pixels=10**6)
    assert str(refused.value) == "not a supported image: cannot identify image file"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_turns_a_tensor_as_exif_transpose_turns_the_image(orientation):
    torch = pytest.importorskip("torch")
    pixels = np.random.default_rng(orientation).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)  # asymmetric
    image = Image.fromarray(pixels)
    image.getexif()[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    got = imaging.orient(torch.from_numpy(pixels).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("width, height", [(1000, 500), (500, 1000), (257, 256), (4032, 3024), (3024, 4032),
                                           (1411, 1411), (100, 80), (256, 10), (999, 1), (1, 999), (641, 427)])
def test_thumbnail_size_is_pillows(width, height):
    thumb = Image.new("1", (width, height))
    thumb.thumbnail((256, 256), Image.Resampling.BICUBIC)
    assert imaging.thumbnail_size(width, height, 256) == thumb.size


def _head(data: bytes) -> imaging.Header:
    return imaging.header(imaging.open_image(data, max_pixels=10**7))


def test_only_complete_rgb_and_grey_jpegs_take_the_tensor_path():
    rgb = _encode(Image.effect_noise((120, 90), 60).convert("RGB"), "JPEG")
    grey = _encode(Image.new("L", (40, 30), 90), "JPEG")
    cmyk = _encode(Image.new("CMYK", (40, 30), (0, 200, 200, 0)), "JPEG")
    png = _encode(Image.new("RGB", (40, 30)), "PNG")
    assert imaging.tensor_decodable(_head(rgb), rgb) and imaging.tensor_decodable(_head(grey), grey)
    assert not imaging.tensor_decodable(_head(cmyk), cmyk)  # Pillow converts CMYK and Adobe's inverted CMYK
    assert not imaging.tensor_decodable(_head(png), png)
    cut = rgb[:-40]
    assert not imaging.tensor_decodable(_head(cut), cut)  # no end marker: a decoder might invent the rest
    padded = rgb + b"\0\0"
    assert not imaging.tensor_decodable(_head(padded), padded)


TORCHVISION_CODECS_DEPRECATED = "ignore:The image decoding and encoding capabilities:DeprecationWarning"  # in 0.29


@pytest.mark.filterwarnings(TORCHVISION_CODECS_DEPRECATED)
def test_a_jpeg_that_fails_to_decode_costs_only_itself():
    torch = pytest.importorskip("torch")
    good = _encode(Image.new("RGB", (40, 30), (10, 200, 10)), "JPEG")
    bad = good[:200] + b"\xff\x3c" * 40 + good[280:]  # an unknown marker in the scan
    decoded = imaging.decode_jpegs([good, bad, good], torch.device("cpu"))
    assert decoded[1] is None and all(t is not None and tuple(t.shape) == (3, 30, 40) for t in decoded[::2])
    assert abs(decoded[0].float().mean(dim=(1, 2)) - torch.tensor([10.0, 200.0, 10.0])).max() < 3


@pytest.mark.filterwarnings(TORCHVISION_CODECS_DEPRECATED)
def test_tensor_thumbnails_are_jpegs_of_pillows_size():
    torch = pytest.importorskip("torch")
    images = [torch.full((3, 600, 800), 120, dtype=torch.uint8), torch.full((3, 800, 600), 30, dtype=torch.uint8),
              torch.full((3, 600, 800), 200, dtype=torch.uint8), torch.zeros((3, 100, 50), dtype=torch.uint8)]
    thumbs = imaging.thumbnails_from_tensors(images, 256)
    opened = [Image.open(io.BytesIO(t)) for t in thumbs]
    assert [o.format for o in opened] == ["JPEG"] * 4
    assert [o.size for o in opened] == [(256, 192), (192, 256), (256, 192), (50, 100)]
    assert abs(np.asarray(opened[2], dtype=np.float32).mean() - 200) < 2
