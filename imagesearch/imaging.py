"""Safe, reduced-size image decoding and thumbnails.

Images come from strangers: every failure here is an :class:`InvalidImage` (a permanent error,
never retried), and nothing is decoded at full size when the model needs a few hundred pixels.
"""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from imagesearch.errors import PermanentError

if TYPE_CHECKING:  # torch is imported where tensors are made: the API's header checks never load it
    import torch

log = logging.getLogger(__name__)

Image.init()
# Formats Pillow can open here, from a fixed allowlist (no EPS/PSD/... parsers exposed to uploads).
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF", "HEIF"}) & set(Image.OPEN)


_OBJECT_REPR = re.compile(r"\s*<[^<>]* object at 0x[0-9a-f]+>")


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
        # Pillow names the stream it read ("<_io.BytesIO object at 0x7f...>"): an address, not a reason.
        raise InvalidImage(f"not a supported image: {_OBJECT_REPR.sub('', str(exc)).strip()}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"unreadable image: {exc}") from exc
    if width * height > max_pixels:
        raise InvalidImage(f"image has {width * height} pixels, more than the limit of {max_pixels}")
    return image


def probe(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Check the header only (cheap, for the API): returns (format, width, height)."""
    image = _open(data, max_pixels)
    return image.format or "", image.size[0], image.size[1]


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The image with only its header parsed, after the checks every decode starts with: a format
    from the allowlist and at most ``max_pixels`` pixels. Nothing is decoded yet."""
    return _open(data, max_pixels)


@dataclass(frozen=True)
class Header:
    """What an opened image's header says, before any pixel is decoded."""

    format: str
    mode: str
    width: int  # as stored, before orientation
    height: int
    # EXIF orientation 1-8 (1: as stored). None when not read: a JPEG whose EXIF does not parse (the
    # Pillow path then fails or succeeds with it exactly as it does for everyone), or another format,
    # whose EXIF Pillow may only find by loading the pixels (a PNG's eXIf chunk can follow them).
    orientation: int | None
    taken_at: float | None  # the EXIF date, JPEGs only (see taken_at)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as people see the picture: after the EXIF orientation."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


def header(image: Image.Image) -> Header:
    """Format, size, and for a JPEG its EXIF orientation and date, of an image from :func:`open_image`.
    A JPEG's EXIF segment precedes its pixels, so nothing is decoded (Pillow's ``getexif`` loads a
    PNG's pixels to look for a late eXIf chunk: other formats are not asked)."""
    width, height = image.size
    if image.format != "JPEG":
        return Header(image.format or "", image.mode, width, height, None, None)
    try:
        # The same lookup exif_transpose makes (it also reads an XMP tiff:Orientation).
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
        orientation: int | None = value if isinstance(value, int) else 1
    except Exception as exc:  # noqa: BLE001 - Pillow's TIFF parser raises many types on hostile EXIF
        log.debug("unreadable EXIF orientation: %s: %s", type(exc).__name__, exc)
        orientation = None
    return Header(image.format, image.mode, width, height, orientation, taken_at(image))


def decode_with_size(data: bytes, *, min_side: int, max_pixels: int) -> tuple[Image.Image, tuple[int, int]]:
    """:func:`decode`, and the (width, height) of the picture as shown at full size: the header's,
    EXIF orientation applied, where the decode's own size is the reduced one's."""
    head = header(_open(data, max_pixels))
    image = decode(data, min_side=min_side, max_pixels=max_pixels)
    width, height = head.size
    # Reduced-size decodes round both sides the same way, so only a transpose turns a landscape
    # picture portrait: exif_transpose's, by an orientation the header did not read (not a JPEG).
    if (width - height) * (image.width - image.height) < 0:
        width, height = height, width
    return image, (width, height)


def decode(data: bytes, *, min_side: int, max_pixels: int) -> Image.Image:
    """Decode to RGB with the shorter side at least ``min_side`` (when the source is larger).

    JPEG's DCT scaling (``draft``) decodes at 1/2, 1/4 or 1/8 size directly, which is most of the
    cost saved on 12 MP photos. EXIF orientation is applied so thumbnails and vectors see the
    picture the way people do.
    """
    return decode_opened(_open(data, max_pixels), min_side=min_side)


def decode_opened(image: Image.Image, *, min_side: int) -> Image.Image:
    """:func:`decode` for an image :func:`open_image` returned (its header is not parsed twice)."""
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


THUMBNAIL_QUALITY = 85


def thumbnail_jpeg(image: Image.Image, size: int, quality: int = THUMBNAIL_QUALITY) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def thumbnail_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The size ``Image.thumbnail((size, size))`` gives a ``width`` x ``height`` image (Pillow's own
    rounding, which keeps the aspect ratio closest), so both decode paths store equal thumbnails."""
    if width <= size and height <= size:
        return width, height

    def round_aspect(number: float, key: object) -> int:
        return max(min(math.floor(number), math.ceil(number), key=key), 1)

    x, y = size, size
    aspect = width / height
    if x / y >= aspect:
        x = round_aspect(y * aspect, key=lambda n: abs(aspect - n / y))
    else:
        y = round_aspect(x / aspect, key=lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


# -- decoding JPEGs into tensors (nvJPEG on CUDA, libjpeg-turbo on CPU) ---------------------------
#
# The embed stage's tensor path. Every image has passed open_image (allowlist, pixel cap) and had
# its header read before it gets here; anything this path does not take, or fails on, goes to the
# Pillow path above, so an image ends the same way on both.

# Header modes nvJPEG decodes to RGB exactly as Pillow does; CMYK/YCCK (Adobe's inverted CMYK
# among them) stay with Pillow's conversion.
_TENSOR_MODES = frozenset({"RGB", "L"})
_EOI = b"\xff\xd9"


def tensor_decodable(head: Header, data: bytes) -> bool:
    """Whether the tensor path takes this image: a plain JPEG (not MPO) in RGB or greyscale, with a
    readable orientation, whose bytes end with the end-of-image marker. Pillow refuses a truncated
    JPEG; a GPU decoder could fill the missing rows instead, so a file without its end marker (or
    with bytes after it: motion photos, MPO) never reaches it."""
    return (head.format == "JPEG" and head.mode in _TENSOR_MODES and head.orientation is not None
            and data.endswith(_EOI))


def decode_jpegs(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """RGB uint8 (3, H, W) tensors on ``device``, decoded in one batched call (nvJPEG's batched
    decoder on CUDA takes a list); None for each image that fails to decode on its own. A batch
    that fails is retried one image at a time, so one bad file costs only itself."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    # bytearray: torch.frombuffer on immutable bytes warns; the copy is small next to the decode.
    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    try:
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except RuntimeError as exc:
        log.debug("batched JPEG decode failed, decoding one by one: %s", exc)
    decoded: list[torch.Tensor | None] = []
    for tensor in encoded:
        try:
            decoded.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
        except RuntimeError as exc:
            log.debug("JPEG decode failed, left to Pillow: %s", exc)
            decoded.append(None)
    return decoded


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to a (C, H, W) tensor, as ``ImageOps.exif_transpose`` does to an image."""
    import torch

    if orientation == 2:  # FLIP_LEFT_RIGHT
        return image.flip(-1)
    if orientation == 3:  # ROTATE_180
        return image.flip(-2, -1)
    if orientation == 4:  # FLIP_TOP_BOTTOM
        return image.flip(-2)
    if orientation == 5:  # TRANSPOSE
        return image.transpose(-2, -1)
    if orientation == 6:  # ROTATE_270 (clockwise)
        return torch.rot90(image, -1, dims=(-2, -1))
    if orientation == 7:  # TRANSVERSE
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:  # ROTATE_90 (counter-clockwise)
        return torch.rot90(image, 1, dims=(-2, -1))
    return image


# Images per float copy when resizing on a device: a 12 MP image is 144 MB in float32.
RESIZE_CHUNK = 32


def group_by_shape(images: Sequence[torch.Tensor]) -> dict[tuple[int, int], list[int]]:
    """Indices of the images by (height, width): same-sized images are resized in one call (uploads
    from one camera mostly share a size), which on a GPU saves a launch per image."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        height, width = image.shape[-2:]
        groups.setdefault((int(height), int(width)), []).append(i)
    return groups


def thumbnails_from_tensors(images: Sequence[torch.Tensor], size: int,
                            quality: int = THUMBNAIL_QUALITY) -> list[bytes]:
    """JPEG thumbnails of oriented RGB uint8 tensors, longest side ``size`` (the sizes
    :func:`thumbnail_jpeg` gives): downscaled on the tensors' device, encoded there (nvJPEG on
    CUDA), or on the CPU where the device encoder is missing."""
    import torch
    from torchvision.io import encode_jpeg
    from torchvision.transforms.v2 import functional as F

    small: list[torch.Tensor] = list(images)
    for shape, members in group_by_shape(images).items():
        height, width = shape
        w, h = thumbnail_size(width, height, size)
        if (w, h) == (width, height):
            continue
        for start in range(0, len(members), RESIZE_CHUNK):
            chosen = members[start:start + RESIZE_CHUNK]
            batch = torch.stack([images[i] for i in chosen]).float()
            batch = F.resize(batch, [h, w], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
            batch = batch.round_().clamp_(0, 255).to(torch.uint8)
            for i, thumb in zip(chosen, batch):
                small[i] = thumb.contiguous()
    if not small:
        return []
    try:
        encoded = encode_jpeg(small, quality=quality)
    except RuntimeError as exc:  # a torchvision built without the CUDA encoder
        log.debug("device JPEG encode failed, encoding on the CPU: %s", exc)
        encoded = encode_jpeg([image.cpu() for image in small], quality=quality)
    return [data.cpu().numpy().tobytes() for data in encoded]


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
