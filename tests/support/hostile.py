"""A generated corpus of hostile and unusual image files, with what the pipeline must make of each."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


def _png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG that claims 900 MP: compressed zeros, refused before any pixel is decoded."""
    raw = zlib.compress(b"\0" * (width // 8 + 1) * 64, 9)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def corpus() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected final status: "indexed" or "failed")."""
    noise = Image.effect_noise((400, 300), 60).convert("RGB")
    whole = _save(noise, "JPEG")
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 8
    return {
        "bomb.png": (_png_bomb(), "failed"),
        "truncated.jpg": (whole[: len(whole) // 3], "failed"),
        "garbage.jpg": (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20, "failed"),
        "text.jpg": (b"just some text pretending to be a photo\n" * 10, "failed"),
        "html.png": (b"<html><body>hello</body></html>", "failed"),
        "eps.jpg": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "failed"),
        "cmyk.jpg": (_save(Image.new("CMYK", (120, 90), (0, 200, 200, 0)), "JPEG"), "indexed"),
        "sixteen-bit.png": (_save(Image.new("I;16", (120, 90), 50000), "PNG"), "indexed"),
        "palette-transparent.png": (_save(Image.new("P", (120, 90), 0), "PNG", transparency=0), "indexed"),
        "animated.gif": (animated.getvalue(), "indexed"),
        "rotated-exif.jpg": (_save(Image.new("RGB", (200, 100), (9, 9, 9)), "JPEG", exif=exif), "indexed"),
        "webp.webp": (_save(Image.new("RGB", (120, 90), (10, 200, 10)), "WEBP"), "indexed"),
        "tiny.png": (_save(Image.new("RGB", (1, 1)), "PNG"), "indexed"),
        **_optional_codecs(),
    }


def _optional_codecs() -> dict[str, tuple[bytes, str]]:
    """AVIF where this Pillow build has the codec (HEIC needs pillow-heif, not a dependency)."""
    from PIL import features

    if not features.check("avif"):
        return {}
    return {"photo.avif": (_save(Image.new("RGB", (120, 90), (200, 100, 10)), "AVIF"), "indexed")}
