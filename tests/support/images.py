"""Small images made in memory, for uploads and ingestion."""

from __future__ import annotations

import io


def jpeg(color=(200, 30, 30), size=(96, 64), shape: str | None = None) -> bytes:
    """A JPEG of one ``color``, with a white circle or a black square on it when ``shape`` says so."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, color)
    if shape:
        draw = ImageDraw.Draw(image)
        draw.ellipse((10, 10, 40, 40), fill=(255, 255, 255)) if shape == "circle" else \
            draw.rectangle((10, 10, 40, 40), fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="JPEG")
    return out.getvalue()
