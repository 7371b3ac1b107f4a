"""Safe, reduced-size image decoding and thumbnails.

Images come from strangers: every failure here is an :class:`InvalidImage` (a permanent error,
never retried), and nothing is decoded at full size when the model needs a few hundred pixels.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from datetime import UTC, datetime, timedelta, timezone

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from imagesearch.errors import PermanentError

log = logging.getLogger(__name__)

Image.init()
# Formats Pillow can open here, from a fixed allowlist (no EPS/PSD/... parsers exposed to uploads).
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF", "HEIF"}) & set(Image.OPEN)


class InvalidImage(PermanentError):
    """The bytes are not an image this service accepts. Permanent: retrying cannot help."""


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise InvalidImage("empty file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between max_pixels and 2x; treat the warning as the refusal it is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
            width, height = image.size
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"not a supported image: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"unreadable image: {exc}") from exc
    if width * height > max_pixels:
        raise InvalidImage(f"image has {width * height} pixels, more than the limit of {max_pixels}")
    return image


def probe(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Check the header only (cheap, for the API): returns (format, width, height)."""
    image = _open(data, max_pixels)
    return image.format or "", image.size[0], image.size[1]


def decode(data: bytes, *, min_side: int, max_pixels: int) -> Image.Image:
    """Decode to RGB with the shorter side at least ``min_side`` (when the source is larger).

    JPEG's DCT scaling (``draft``) decodes at 1/2, 1/4 or 1/8 size directly, which is most of the
    cost saved on 12 MP photos. EXIF orientation is applied so thumbnails and vectors see the
    picture the way people do.
    """
    image = _open(data, max_pixels)
    try:
        if image.format in ("JPEG", "MPO"):
            width, height = image.size
            scale = max(1, min(width, height) // max(min_side, 1))
            if scale > 1:
                image.draft("RGB", (width // scale, height // scale))
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            image = _to_rgb(image)
        if min(image.size) > 2 * min_side:
            ratio = min_side / min(image.size)
            image = image.resize(
                (max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
                Image.Resampling.BILINEAR,
                reducing_gap=2.0,
            )
    except InvalidImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"corrupt or truncated image: {exc}") from exc
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything to white.
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")


def thumbnail_jpeg(image: Image.Image, size: int, quality: int = 85) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()


# (date tag, its offset tag), most specific first: EXIF 2.31 pairs each date with its own offset.
_DATE_TAGS = (
    (ExifTags.Base.DateTimeOriginal, ExifTags.Base.OffsetTimeOriginal),  # 0x9003, 0x9011
    (ExifTags.Base.DateTimeDigitized, ExifTags.Base.OffsetTimeDigitized),  # 0x9004, 0x9012
    (ExifTags.Base.DateTime, ExifTags.Base.OffsetTime),  # 0x0132 (IFD0), 0x9010
)
# "YYYY:MM:DD HH:MM:SS"; dashes and a "T" are accepted too, as some writers use them.
_EXIF_DATE = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")


def taken_at(image: Image.Image) -> float | None:
    """When the picture was taken, in epoch seconds, from the EXIF of an opened image; None if unknown.

    Reads ``DateTimeOriginal`` (0x9003), else ``DateTimeDigitized`` (0x9004), else ``DateTime``
    (0x0132), each with its own offset tag (``OffsetTimeOriginal`` 0x9011, ``OffsetTimeDigitized``
    0x9012, ``OffsetTime`` 0x9010) when present. **Without an offset the local time is taken as
    UTC**: EXIF before 2.31 has no time zone, so such a value may be off by the camera's UTC offset
    (hours, never days). An offset that does not parse counts as absent.

    Only the EXIF segment is parsed (no pixels are decoded), so it costs nothing next to the decode;
    the image returned by :func:`decode` keeps its EXIF. Malformed metadata ("0000:00:00 00:00:00",
    blanks, garbage bytes, a broken IFD) gives None and never raises: a bad date must not fail the
    indexing of a good picture.
    """
    try:
        exif = image.getexif()
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        for date_tag, offset_tag in _DATE_TAGS:
            # Some writers put the Exif-IFD tags in IFD0: look there second.
            when = _exif_datetime(sub.get(date_tag, exif.get(date_tag)),
                                  sub.get(offset_tag, exif.get(offset_tag)))
            if when is not None:
                return when
    except Exception as exc:  # noqa: BLE001 - Pillow's TIFF parser raises many types on hostile EXIF
        log.debug("unreadable EXIF date: %s: %s", type(exc).__name__, exc)
    return None


def _exif_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="strict")  # garbage bytes raise, and mean "no date"
    if isinstance(value, tuple) and len(value) == 1:  # a count-1 ASCII array some writers produce
        return _exif_text(value[0])
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ")


def _exif_datetime(raw: object, raw_offset: object) -> float | None:
    try:
        text = _exif_text(raw)
    except UnicodeDecodeError:
        return None
    match = _EXIF_DATE.fullmatch(text) if text else None
    if match is None:
        return None
    zone = UTC
    try:
        offset = _EXIF_OFFSET.fullmatch(_exif_text(raw_offset) or "")
    except UnicodeDecodeError:
        offset = None
    if offset is not None and int(offset[2]) < 24 and int(offset[3]) < 60:
        delta = timedelta(hours=int(offset[2]), minutes=int(offset[3]))
        zone = timezone(-delta if offset[1] == "-" else delta)
    try:
        # datetime refuses month 0, day 32, year 0 ("0000:00:00 00:00:00", a camera with no clock set).
        return datetime(*(int(part) for part in match.groups()), tzinfo=zone).timestamp()
    except ValueError:
        return None
