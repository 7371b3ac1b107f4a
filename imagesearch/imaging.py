"""Safe, reduced-size image decoding and thumbnails.

Images come from strangers: every failure here is an :class:`InvalidImage` (a permanent error,
never retried), and nothing is decoded at full size when the model needs a few hundred pixels.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from imagesearch.errors import PermanentError

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
