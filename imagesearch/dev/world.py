"""A deterministic procedural image world with ground-truth captions.

Why it exists: offline there is no pretrained CLIP or captioner, and untrained models make every
search result meaningless. This world is small enough that tiny models trained on CPU in minutes
learn it well, so tests and demos can check that search *finds the right images*, not only that the
code runs. Everything is a pure function of ``(seed, index)``: the same seed gives the same bytes.

Each image holds one to four shapes (circle, square, triangle, star) in six colours and two sizes,
arranged as one group at a position (left/right/top/bottom/centre) or as two groups in a spatial
relation (left of / above). Backgrounds vary (solid, gradient, soft texture, faint stripes) and
images carry light blur, noise and JPEG artefacts so models cannot key on exact pixel values.

One module although over 350 lines: the caption grammar, its renderer and its parser
(``parse_caption``) must change together, and splitting them would hide that.

The caption grammar is deliberately small and regular (33 words)::

    <count> <size> <colour> <shape>[s] <position phrase>
        "one small green star at the top", "three large red circles in the centre"
    <count> <size> <colour> <shape>[s] (left of | above) a|<count> <size> <colour> <shape>[s]
        "two small red circles left of a large blue square"

The first caption of a sample is canonical (one per image, a pure function of its structure); the
others are true paraphrases (relation swapped, "a" for "one", size or position left out) that help a
CLIP model understand shorter queries such as "one green star" or "three green stars".
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
# Hue in degrees; saturated colours so that they never look like the low-saturation backgrounds.
COLOUR_HUES: dict[str, float] = {
    "red": 0.0,
    "orange": 28.0,
    "yellow": 55.0,
    "green": 125.0,
    "blue": 222.0,
    "purple": 282.0,
}
COLOURS: tuple[str, ...] = tuple(COLOUR_HUES)
# Circumradius as a fraction of the image side. At the 64-px model input a small shape spans ~9 px
# and a large one ~14 px: different enough to name, small enough that four fit in half an image.
SIZE_RADIUS: dict[str, float] = {"small": 0.068, "large": 0.108}
SIZES: tuple[str, ...] = tuple(SIZE_RADIUS)
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
# Canonical relations always name the left (or top) group first; the inverse is a paraphrase.
RELATIONS: tuple[str, ...] = ("left of", "above")
INVERSE_RELATION: dict[str, str] = {"left of": "right of", "above": "below"}
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three", "four")
# Count pairs for two-group images: at most four shapes in total.
TWO_GROUP_COUNTS: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (2, 2))

BACKGROUNDS: tuple[str, ...] = ("solid", "gradient", "texture", "stripes")
IMAGE_SIZE = 128
_SUPERSAMPLE = 2  # draw at 2x and downsample: antialiased edges without a rasteriser dependency
_MARGIN = 0.02
_MIDLINE_GAP = 0.03  # groups keep clear of the middle line so "left"/"right" is never ambiguous


@dataclass(frozen=True)
class Group:
    """Identical shapes that a caption names together ("two small red circles")."""

    count: int
    size: str
    colour: str
    shape: str

    def phrase(self, one: str = "one", with_size: bool = True) -> str:
        count = one if self.count == 1 else COUNT_WORDS[self.count - 1]
        noun = self.shape if self.count == 1 else self.shape + "s"
        words = [count] + ([self.size] if with_size else []) + [self.colour, noun]
        return " ".join(words)


@dataclass(frozen=True)
class PlacedShape:
    """One drawn shape, in pixels of the output image (centre and circumradius)."""

    group: int
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float


@dataclass(frozen=True)
class Sample:
    id: str
    image_jpeg: bytes
    captions: tuple[str, ...]  # captions[0] is canonical
    groups: tuple[Group, ...]
    position: str | None  # one-group images
    relation: str | None  # two-group images: groups[0] <relation> groups[1]
    shapes: tuple[PlacedShape, ...]
    background: str

    @property
    def caption(self) -> str:
        return self.captions[0]

    def image(self) -> Image.Image:
        return Image.open(io.BytesIO(self.image_jpeg)).convert("RGB")


def vocabulary() -> list[str]:
    """Every word any caption can use, sorted (the grammar is closed)."""
    words = set(COUNT_WORDS) | {"a"} | set(SIZES) | set(COLOURS)
    words |= set(SHAPES) | {s + "s" for s in SHAPES}
    for phrase in list(POSITION_PHRASES.values()) + list(RELATIONS) + list(INVERSE_RELATION.values()):
        words |= set(phrase.split())
    return sorted(words)


def captions_for(groups: tuple[Group, ...], position: str | None, relation: str | None) -> tuple[str, ...]:
    """Canonical caption first, then the true paraphrases, without duplicates, in a fixed order."""
    out: list[str] = []
    if len(groups) == 1:
        (g,) = groups
        assert position is not None
        where = POSITION_PHRASES[position]
        out += [f"{g.phrase()} {where}", f"{g.phrase('a')} {where}",
                f"{g.phrase(with_size=False)} {where}", g.phrase(), g.phrase(with_size=False),
                g.phrase("a", with_size=False)]
    else:
        a, b = groups
        assert relation is not None
        inverse = INVERSE_RELATION[relation]
        for with_size in (True, False):
            out += [f"{a.phrase(with_size=with_size)} {relation} {b.phrase('a', with_size)}",
                    f"{b.phrase(with_size=with_size)} {inverse} {a.phrase('a', with_size)}",
                    f"{a.phrase('a', with_size)} {relation} {b.phrase('a', with_size)}",
                    f"{b.phrase('a', with_size)} {inverse} {a.phrase('a', with_size)}"]
    return tuple(dict.fromkeys(out))


def parse_caption(text: str) -> tuple[tuple[Group, ...], str | None, str | None] | None:
    """Inverse of the canonical caption: ``(groups, position, relation)``, or None if malformed.

    Lets evaluations score a generated caption per attribute instead of only all-or-nothing.
    """
    words = text.split()
    nouns = {s: s for s in SHAPES} | {s + "s": s for s in SHAPES}

    def group_at(i: int, allow_a: bool) -> tuple[Group, int] | None:
        if len(words) < i + 4:
            return None
        count_word, size, colour, noun = words[i:i + 4]
        count = 1 if (count_word == "a" and allow_a) else (COUNT_WORDS.index(count_word) + 1
                                                             if count_word in COUNT_WORDS else 0)
        if not count or size not in SIZES or colour not in COLOURS or noun not in nouns:
            return None
        if (count == 1) != (noun in SHAPES):  # "one circles" / "two circle" are not captions
            return None
        return Group(count, size, colour, nouns[noun]), i + 4

    first = group_at(0, False)
    if first is None:
        return None
    group, i = first
    rest = " ".join(words[i:])
    for position, phrase in POSITION_PHRASES.items():
        if rest == phrase:
            return (group,), position, None
    for relation in RELATIONS:
        if rest.startswith(relation + " "):
            second = group_at(i + len(relation.split()), True)
            if second is not None and second[1] == len(words):
                return (group, second[0]), None, relation
    return None


# ----------------------------------------------------------------------------- layout

# Unit offsets of the shapes of a group (multiplied by the pitch); several arrangements per count
# so that counting, not a fixed pattern, is what identifies "three".
_ARRANGEMENTS: dict[int, tuple[tuple[tuple[float, float], ...], ...]] = {
    1: (((0.0, 0.0),),),
    2: (((-0.5, 0.0), (0.5, 0.0)), ((0.0, -0.5), (0.0, 0.5)), ((-0.5, -0.5), (0.5, 0.5)),
        ((-0.5, 0.5), (0.5, -0.5))),
    3: (((-1.0, 0.0), (0.0, 0.0), (1.0, 0.0)), ((0.0, -1.0), (0.0, 0.0), (0.0, 1.0)),
        ((-0.5, 0.43), (0.5, 0.43), (0.0, -0.43)), ((-0.5, -0.43), (0.5, -0.43), (0.0, 0.43))),
    4: (((-1.5, 0.0), (-0.5, 0.0), (0.5, 0.0), (1.5, 0.0)), ((0.0, -1.5), (0.0, -0.5), (0.0, 0.5), (0.0, 1.5)),
        ((-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5))),
}

# Region (x0, x1, y0, y1) as fractions of the side, and the band the group's centre prefers on the
# axis the position does not name (so "on the left" means left and vertically central).
_HALF = 0.5 - _MIDLINE_GAP
_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (_MARGIN, _HALF, _MARGIN, 1 - _MARGIN),
    "right": (1 - _HALF, 1 - _MARGIN, _MARGIN, 1 - _MARGIN),
    "top": (_MARGIN, 1 - _MARGIN, _MARGIN, _HALF),
    "bottom": (_MARGIN, 1 - _MARGIN, 1 - _HALF, 1 - _MARGIN),
    "centre": (0.16, 0.84, 0.16, 0.84),
}
_BAND = {"left": 0.1, "right": 0.1, "top": 0.1, "bottom": 0.1, "centre": 0.05}


def _place_group(rng: np.random.Generator, group: Group, region: str, side: float) -> list[tuple[float, float]]:
    """Centres (in pixels) of the group's shapes, all inside the region, never overlapping."""
    radius = SIZE_RADIUS[group.size] * side
    x0, x1, y0, y1 = (v * side for v in _REGIONS[region])
    fitting = []
    for gap_frac in (0.08, 0.04, 0.02):  # prefer airy groups; squeeze only when they cannot fit
        pitch = 2 * radius + gap_frac * side
        for offsets in _ARRANGEMENTS[group.count]:
            xs = [ox * pitch for ox, _ in offsets]
            ys = [oy * pitch for _, oy in offsets]
            half_w = (max(xs) - min(xs)) / 2 + radius
            half_h = (max(ys) - min(ys)) / 2 + radius
            if 2 * half_w <= x1 - x0 and 2 * half_h <= y1 - y0:
                fitting.append((offsets, pitch, half_w, half_h))
        if fitting:
            break
    if not fitting:  # cannot happen with the sizes above; fail loudly rather than draw overlaps
        raise AssertionError(f"{group} does not fit {region}")
    offsets, pitch, half_w, half_h = fitting[int(rng.integers(len(fitting)))]
    # The group's centre: anywhere along the named axis, near the middle of the other one.
    lo_x, hi_x = x0 + half_w, x1 - half_w
    lo_y, hi_y = y0 + half_h, y1 - half_h
    band = _BAND[region] * side
    if region in ("left", "right"):
        lo_y, hi_y = max(lo_y, side / 2 - band), min(hi_y, side / 2 + band)
    elif region in ("top", "bottom"):
        lo_x, hi_x = max(lo_x, side / 2 - band), min(hi_x, side / 2 + band)
    else:
        lo_x, hi_x = max(lo_x, side / 2 - band), min(hi_x, side / 2 + band)
        lo_y, hi_y = max(lo_y, side / 2 - band), min(hi_y, side / 2 + band)
    cx = rng.uniform(lo_x, hi_x) if hi_x > lo_x else (lo_x + hi_x) / 2
    cy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else (lo_y + hi_y) / 2
    # A pixel of jitter per shape keeps rows from looking machine-perfect without closing the gap.
    jitter = min(1.0, (pitch - 2 * radius) / 3)
    return [(cx + ox * pitch + rng.uniform(-jitter, jitter), cy + oy * pitch + rng.uniform(-jitter, jitter))
            for ox, oy in offsets]


def _random_group(rng: np.random.Generator, count: int) -> Group:
    return Group(count, SIZES[int(rng.integers(len(SIZES)))], COLOURS[int(rng.integers(len(COLOURS)))],
                 SHAPES[int(rng.integers(len(SHAPES)))])


# ----------------------------------------------------------------------------- drawing

def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = v - c
    return tuple(round(255 * (channel + m)) for channel in (r, g, b))  # type: ignore[return-value]


def _shape_rgb(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    hue = COLOUR_HUES[colour] + rng.uniform(-6, 6)
    low_v = 0.85 if colour in ("yellow", "orange") else 0.7  # dark yellow reads as olive/brown
    return _hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(low_v, 1.0))


def _background(rng: np.random.Generator, side: int) -> tuple[np.ndarray, str]:
    """Low-saturation backgrounds: varied, but never mistakable for a named colour."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]

    def tone() -> np.ndarray:
        return np.array(_hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, 0.15), rng.uniform(0.2, 0.95)), float)

    base = tone()
    if kind == "solid":
        pixels = np.broadcast_to(base, (side, side, 3)).copy()
    elif kind == "gradient":
        other = tone()
        t = np.linspace(0, 1, side)[:, None] if rng.random() < 0.5 else np.linspace(0, 1, side)[None, :]
        t = np.broadcast_to(t, (side, side))[..., None]
        pixels = base * (1 - t) + other * t
    elif kind == "texture":
        coarse = rng.normal(0, 1, (6, 6)).astype(np.float32)
        smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((side, side), Image.Resampling.BICUBIC))
        pixels = base + smooth[..., None] * rng.uniform(8, 20)
    else:  # faint stripes, horizontal or vertical
        period = rng.uniform(6, 16) * _SUPERSAMPLE
        axis = np.arange(side, dtype=float)
        wave = np.sin(2 * math.pi * axis / period)
        wave = wave[:, None] if rng.random() < 0.5 else wave[None, :]
        pixels = base + np.broadcast_to(wave, (side, side))[..., None] * rng.uniform(6, 14)
    return np.clip(pixels, 0, 255), kind


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        points = [(r * 0.8 * math.cos(math.pi / 4 + k * math.pi / 2), r * 0.8 * math.sin(math.pi / 4 + k * math.pi / 2))
                  for k in range(4)]
    elif shape == "triangle":
        points = [(r * math.cos(-math.pi / 2 + k * 2 * math.pi / 3), r * math.sin(-math.pi / 2 + k * 2 * math.pi / 3))
                  for k in range(3)]
    elif shape == "star":
        points = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            theta = -math.pi / 2 + k * math.pi / 5
            points.append((rr * math.cos(theta), rr * math.sin(theta)))
    else:
        raise ValueError(shape)
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _render(rng: np.random.Generator, shapes: list[PlacedShape]) -> tuple[bytes, str]:
    big = IMAGE_SIZE * _SUPERSAMPLE
    pixels, background = _background(rng, big)
    canvas = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for shape in shapes:
        fill = _shape_rgb(rng, shape.colour)
        cx, cy, r = (v * _SUPERSAMPLE for v in (shape.cx, shape.cy, shape.radius))
        # Small rotations only: a square turned 45 degrees would be a diamond, a new shape.
        angle = math.radians(rng.uniform(-12, 12))
        if shape.shape == "circle":
            rr = r * 0.85  # equal visual weight to the polygons, which do not fill their circumcircle
            draw.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=fill)
        else:
            draw.polygon(_polygon(shape.shape, cx, cy, r, angle), fill=fill)
    image = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 0.8))))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(0, 5), (IMAGE_SIZE, IMAGE_SIZE, 3))
    image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=int(rng.integers(60, 93)))
    return out.getvalue(), background


# ----------------------------------------------------------------------------- public API

def make_sample(seed: int, index: int) -> Sample:
    """Sample ``index`` of the world ``seed``; independent of every other index."""
    rng = np.random.default_rng([seed, index])
    side = float(IMAGE_SIZE)
    if rng.random() < 0.5:
        groups: tuple[Group, ...] = (_random_group(rng, int(rng.integers(1, 5))),)
        position: str | None = POSITIONS[int(rng.integers(len(POSITIONS)))]
        relation: str | None = None
        regions = [position]
    else:
        counts = TWO_GROUP_COUNTS[int(rng.integers(len(TWO_GROUP_COUNTS)))]
        first = _random_group(rng, counts[0])
        while True:  # two groups that look alike would just be one bigger group
            second = _random_group(rng, counts[1])
            if (second.size, second.colour, second.shape) != (first.size, first.colour, first.shape):
                break
        groups, position = (first, second), None
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
        regions = ["left", "right"] if relation == "left of" else ["top", "bottom"]
    placed: list[PlacedShape] = []
    for number, (group, region) in enumerate(zip(groups, regions)):
        for cx, cy in _place_group(rng, group, region, side):
            placed.append(PlacedShape(number, group.shape, group.colour, group.size, cx, cy,
                                      SIZE_RADIUS[group.size] * side))
    # Draw order is shuffled so that the first group is not always painted first.
    order = rng.permutation(len(placed))
    jpeg, background = _render(rng, [placed[i] for i in order])
    return Sample(
        id=f"w{seed}-{index:06d}",
        image_jpeg=jpeg,
        captions=captions_for(groups, position, relation),
        groups=groups,
        position=position,
        relation=relation,
        shapes=tuple(placed),
        background=background,
    )


def generate(n: int, seed: int, start: int = 0) -> list[Sample]:
    """Samples ``start .. start+n-1`` of the world ``seed`` (a prefix of a longer run is identical)."""
    return [make_sample(seed, index) for index in range(start, start + n)]


def queries(samples: Iterable[Sample]) -> list[dict]:
    """One query per distinct canonical caption; relevant = every image with that caption."""
    relevant: dict[str, list[str]] = {}
    for sample in samples:
        relevant.setdefault(sample.caption, []).append(sample.id)
    return [{"query": text, "relevant": ids} for text, ids in sorted(relevant.items())]


def write_dataset(folder: Path | str, n: int, seed: int) -> list[Sample]:
    """``images/<id>.jpg``, ``captions.jsonl`` (COCO/Flickr style) and ``queries.jsonl``."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    samples = generate(n, seed)
    with (folder / "captions.jsonl").open("w", encoding="utf-8") as captions:
        for sample in samples:
            (folder / "images" / f"{sample.id}.jpg").write_bytes(sample.image_jpeg)
            for text in sample.captions:
                captions.write(json.dumps({"image": f"{sample.id}.jpg", "caption": text}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for query in queries(samples):
            handle.write(json.dumps(query) + "\n")
    return samples


if __name__ == "__main__":  # python -m imagesearch.dev.world OUT_DIR [N] [SEED]
    import sys

    target = Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    world_seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    write_dataset(target, count, world_seed)
    print(f"wrote {count} images to {target}")
