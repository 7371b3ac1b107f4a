"""A generated product catalogue, for trying the catalogue path end to end (backfill with sidecars,
typed attributes, filtered listing, edits) without anyone's real product data.

``write_catalogue(folder, n)`` writes ``n`` product pictures (a flat silhouette of the product in
its colour on a light background: a dress, sneakers, a handbag...) named ``<sku>.jpg``, each with
the sidecar ``<sku>.jpg.json`` a folder backfill reads::

    {"title": "女士红色连衣裙 Red summer dress", "description": "...", "tags": ["dress", "red", "women"],
     "attributes": {"brand": "Aurora", "price": 129.9, "in_stock": true, "released": "2024-03-05"}}

Titles mix Chinese and English as catalogues from China often do (the Chinese part is what a
Chinese shopper types, two characters at a time). Every product is a pure function of
``(seed, index)``. Load them with ``IMAGESEARCH_ATTRIBUTES`` set to :data:`ATTRIBUTES`::

    imagesearch dev products ./catalogue --n 1000
    IMAGESEARCH_ATTRIBUTES=brand:keyword,price:number,in_stock:boolean,released:date \\
        imagesearch backfill ./catalogue --collection catalogue
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

ATTRIBUTES = "brand:keyword,price:number,in_stock:boolean,released:date"
SIDE = 128

# (English noun, Chinese noun, English title words, price range)
CATEGORIES: tuple[tuple[str, str, str, tuple[float, float]], ...] = (
    ("dress", "连衣裙", "summer dress", (59.0, 399.0)),
    ("sneakers", "运动鞋", "running sneakers", (49.0, 259.0)),
    ("handbag", "手提包", "leather handbag", (79.0, 899.0)),
    ("mug", "马克杯", "ceramic mug", (9.0, 39.0)),
    ("hat", "遮阳帽", "sun hat", (15.0, 89.0)),
    ("lamp", "台灯", "desk lamp", (25.0, 199.0)),
    ("backpack", "双肩包", "travel backpack", (39.0, 299.0)),
    ("watch", "手表", "sports watch", (99.0, 1299.0)),
)
COLOURS: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("red", "红色", (200, 30, 40)),
    ("blue", "蓝色", (30, 70, 200)),
    ("green", "绿色", (30, 150, 60)),
    ("black", "黑色", (25, 25, 25)),
    ("white", "白色", (245, 245, 240)),
    ("yellow", "黄色", (235, 200, 30)),
    ("pink", "粉色", (235, 130, 170)),
    ("grey", "灰色", (130, 130, 130)),
)
AUDIENCES: tuple[tuple[str, str], ...] = (("women", "女士"), ("men", "男士"), ("kids", "儿童"))
BRANDS: tuple[str, ...] = ("Aurora", "Zephyr", "Nimbus", "Solstice", "Meridian", "青山")
_FIRST_RELEASE = date(2020, 1, 1)
_RELEASE_DAYS = 6 * 365


@dataclass(frozen=True)
class Product:
    index: int
    sku: str
    category: str
    colour: str
    audience: str
    title: str
    description: str
    brand: str
    price: float
    in_stock: bool
    released: str  # ISO 8601 date

    @property
    def file_name(self) -> str:
        return f"{self.sku}.jpg"

    @property
    def tags(self) -> list[str]:
        return [self.category, self.colour, self.audience]

    def attributes(self) -> dict[str, Any]:
        return {"brand": self.brand, "price": self.price, "in_stock": self.in_stock, "released": self.released}

    def sidecar(self) -> dict[str, Any]:
        return {"title": self.title, "description": self.description, "tags": self.tags,
                "attributes": self.attributes()}


def make_product(seed: int, index: int) -> Product:
    rng = random.Random(f"products:{seed}:{index}")
    category, noun_zh, words_en, (low, high) = rng.choice(CATEGORIES)
    colour, colour_zh, _rgb = rng.choice(COLOURS)
    audience, audience_zh = rng.choice(AUDIENCES)
    brand = rng.choice(BRANDS)
    released = _FIRST_RELEASE + timedelta(days=rng.randrange(_RELEASE_DAYS))
    price = round(rng.uniform(low, high), 1)
    title = f"{audience_zh}{colour_zh}{noun_zh} {colour.capitalize()} {words_en}"
    description = (f"{brand} {words_en} in {colour}, for {audience}. {brand}出品，{colour_zh}{noun_zh}，"
                   f"{released.year}年上市。")
    return Product(index=index, sku=f"p{index:05d}", category=category, colour=colour, audience=audience,
                   title=title, description=description, brand=brand, price=price, in_stock=rng.random() < 0.7,
                   released=released.isoformat())


def products(n: int, seed: int = 0) -> list[Product]:
    return [make_product(seed, i) for i in range(n)]


def render(product: Product, seed: int = 0) -> bytes:
    """The product's picture: its silhouette in its colour, placed and sized a little at random."""
    rng = random.Random(f"render:{seed}:{product.index}")
    rgb = next(c for name, _zh, c in COLOURS if name == product.colour)
    shade = rng.randint(225, 250)
    background = (shade, shade, min(255, shade + rng.randint(0, 5)))
    image = Image.new("RGB", (SIDE, SIDE), background)
    draw = ImageDraw.Draw(image)
    # A white product on a near-white background needs an outline to be seen.
    outline = (90, 90, 90) if sum(rgb) > 600 else None
    scale = rng.uniform(0.8, 1.0)
    cx, cy = SIDE / 2 + rng.uniform(-8, 8), SIDE / 2 + rng.uniform(-8, 8)
    _SILHOUETTES[product.category](draw, cx, cy, SIDE * 0.4 * scale, rgb, outline)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=88)
    return out.getvalue()


def write_catalogue(folder: Path | str, n: int = 1000, seed: int = 0) -> list[Product]:
    """Write ``n`` products (``<sku>.jpg`` and ``<sku>.jpg.json``) into ``folder``; returns them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = products(n, seed)
    for product in written:
        (folder / product.file_name).write_bytes(render(product, seed))
        (folder / f"{product.file_name}.json").write_text(json.dumps(product.sidecar(), ensure_ascii=False, indent=1),
                                                          encoding="utf-8")
    return written


# -- silhouettes: (draw, centre x, centre y, half size, colour, outline) ------------------------------

Colour = tuple[int, int, int]
Draw = Callable[[ImageDraw.ImageDraw, float, float, float, Colour, Colour | None], None]


def _dress(d: ImageDraw.ImageDraw, x: float, y: float, r: float, c: Colour, o: Colour | None) -> None:
    d.polygon([(x - 0.3 * r, y - r), (x + 0.3 * r, y - r), (x + 0.25 * r, y - 0.2 * r), (x + 0.8 * r, y + r),
               (x - 0.8 * r, y + r), (x - 0.25 * r, y - 0.2 * r)], fill=c, outline=o)


def _sneakers(d: ImageDraw.ImageDraw, x: float, y: float, r: float, c: Colour, o: Colour | None) -> None:
    d.polygon([(x - r, y + 0.1 * r), (x - 0.6 * r, y - 0.5 * r), (x - 0.1 * r, y - 0.5 * r), (x + 0.2 * r, y),
               (x + r, y + 0.15 * r), (x + r, y + 0.45 * r), (x - r, y + 0.45 * r)], fill=c, outline=o)
    d.rectangle([x - r, y + 0.45 * r, x + r, y + 0.6 * r], fill=(240, 240, 240), outline=(90, 90, 90))


def _handbag(d: ImageDraw.ImageDraw, x: float, y: float, r: float, c: Colour, o: Colour | None) -> None:
    d.arc([x - 0.5 * r, y - r, x + 0.5 * r, y], 180, 360, fill=o or c, width=max(2, int(r / 8)))
    d.rectangle([x - 0.9 * r, y - 0.5 * r, x + 0.9 * r, y + 0.8 * r], fill=c, outline=o)


def _mug(d: ImageDraw.ImageDraw, x: float, y: float, r: float, c: Colour, o: Colour | None) -> None:
    d.ellipse([x + 0.35 * r, y - 0.4 * r, x + 0.95 * r, y + 0.4 * r], outline=o or c, width=max(2, int(r / 7)))
    d.rectangle([x - 0.6 * r, y - 0.7 * r, x + 0.5 * r, y + 0.8 * r], fill=c, outline=o)


def _hat(d: ImageDraw.ImageDraw, x: float, y: float, r: float, c: Colour, o: Colour | None) -> None:
    d.ellipse([x - r, y + 0.05 * r, x + r, y + 0.5 * r], fill=c, outline=o)
    d.chord([x - 0.5 * r, y - 0.6 * r, x + 0.5 * r, y + 0.6 * r], 180, 360, fill=c, outline=o)


def _lamp(d: ImageDraw.ImageDraw, x: float, y: float, r: float, c: Colour, o: Colour | None) -> None:
    d.rectangle([x - 0.06 * r, y - 0.2 * r, x + 0.06 * r, y + 0.8 * r], fill=(80, 80, 80))
    d.rectangle([x - 0.5 * r, y + 0.8 * r, x + 0.5 * r, y + r], fill=(80, 80, 80))
    d.polygon([(x - 0.35 * r, y - r), (x + 0.35 * r, y - r), (x + 0.7 * r, y - 0.2 * r), (x - 0.7 * r, y - 0.2 * r)],
              fill=c, outline=o)


def _backpack(d: ImageDraw.ImageDraw, x: float, y: float, r: float, c: Colour, o: Colour | None) -> None:
    d.rounded_rectangle([x - 0.7 * r, y - r, x + 0.7 * r, y + r], radius=int(0.3 * r), fill=c, outline=o)
    d.rounded_rectangle([x - 0.45 * r, y + 0.1 * r, x + 0.45 * r, y + 0.75 * r], radius=int(0.1 * r),
                        fill=tuple(max(0, v - 40) for v in c), outline=o)


def _watch(d: ImageDraw.ImageDraw, x: float, y: float, r: float, c: Colour, o: Colour | None) -> None:
    d.rectangle([x - 0.3 * r, y - r, x + 0.3 * r, y + r], fill=c, outline=o)
    d.ellipse([x - 0.55 * r, y - 0.55 * r, x + 0.55 * r, y + 0.55 * r], fill=(60, 60, 60))
    d.ellipse([x - 0.42 * r, y - 0.42 * r, x + 0.42 * r, y + 0.42 * r], fill=(250, 250, 250))
    d.line([x, y, x, y - 0.3 * r], fill=(20, 20, 20), width=2)
    d.line([x, y, x + 0.22 * r, y], fill=(20, 20, 20), width=2)


_SILHOUETTES: dict[str, Draw] = {"dress": _dress, "sneakers": _sneakers, "handbag": _handbag, "mug": _mug,
                                 "hat": _hat, "lamp": _lamp, "backpack": _backpack, "watch": _watch}
