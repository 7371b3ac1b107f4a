"""A deterministic procedural image world with ground-truth captions.

Why it exists: offline there is no pretrained CLIP or captioner, and untrained models make every
search result meaningless. This world is small enough that tiny models trained on CPU in minutes
learn it well, so tests and demos can check that search *finds the right images*, not only that the
code runs. Everything is a pure function of ``(seed, index)``: the same seed gives the same bytes.

Each image holds one to four shapes (circle, square, triangle, star) in six colours and two sizes,
arranged as one group at a position (left/right/top/bottom/centre) or as two groups in a spatial
relation (left of / above). Backgrounds vary (solid, gradient, soft texture, faint stripes) and
images carry light blur, noise and JPEG artefacts so models cannot key on exact pixel values.

One module although over 700 lines: the two caption grammars, the structure they describe, the
strict parser (``parse_caption``) and the query reader (``describe``) must change together, and
splitting them would hide that.

The caption grammar is deliberately small and regular (33 words)::

    <count> <size> <colour> <shape>[s] <position phrase>
        "one small green star at the top", "three large red circles in the centre"
    <count> <size> <colour> <shape>[s] (left of | above) a|<count> <size> <colour> <shape>[s]
        "two small red circles left of a large blue square"

The first caption of a sample is canonical (one per image, a pure function of its structure); the
others are true paraphrases (relation swapped, "a" for "one", size or position left out) that help a
CLIP model understand shorter queries such as "one green star" or "three green stars".

Every sample also has Chinese captions (``Sample.captions_zh``) from a grammar of its own, not a
word-for-word translation: count + measure word (两, not 二, before a measure word; 颗 for stars,
个 for the rest) + colour + size + shape, and the place first for a single group::

    <place>有<count><measure><colour><size><shape>     "左边有两个红色小圆形", "顶部有一颗绿色小星星"
    <group A>在<group B>的(左边 | 上方)                "两个红色小圆形在一个蓝色大正方形的左边"

with the same kinds of true paraphrases (relation swapped, "B的左边有A", size or place left out).
The English captions are unchanged by it, byte for byte.

``describe`` reads a query in either language into a ``Description`` (what it says about the
groups, their sizes, the place and the relation; what it leaves out matches anything) and
``matches`` judges it against a sample's true structure, so a Chinese query is marked right or
wrong by what the image shows, never by comparing its text with an English caption.
"""

from __future__ import annotations

import io
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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

# Chinese. Counts take a measure word, and before one "two" is 两 (二 is for counting aloud).
ZH_COUNTS: tuple[str, ...] = ("一", "两", "三", "四")
ZH_MEASURE_WORDS: dict[str, str] = {"circle": "个", "square": "个", "triangle": "个", "star": "颗"}
ZH_SHAPES: dict[str, str] = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星星"}
ZH_COLOURS: dict[str, str] = {"red": "红色", "orange": "橙色", "yellow": "黄色", "green": "绿色", "blue": "蓝色",
                              "purple": "紫色"}
ZH_SIZES: dict[str, str] = {"small": "小", "large": "大"}
# A single group's place in the picture (顶部/底部: the top/bottom part of the image) ...
ZH_POSITIONS: dict[str, str] = {"left": "左边", "right": "右边", "top": "顶部", "bottom": "底部", "centre": "中间"}
# ... and one group relative to another: "A在B的左边" (A left of B), "A在B的上方" (A above B).
ZH_RELATIONS: dict[str, str] = {"left of": "左边", "above": "上方", "right of": "右边", "below": "下方"}

LANGUAGES: tuple[str, ...] = ("en", "zh")

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

    def phrase_zh(self, with_size: bool = True) -> str:
        """"两个红色小圆形": count, measure word, colour, size, shape (Chinese nouns have no plural)."""
        size = ZH_SIZES[self.size] if with_size else ""
        return (ZH_COUNTS[self.count - 1] + ZH_MEASURE_WORDS[self.shape] + ZH_COLOURS[self.colour] + size
                + ZH_SHAPES[self.shape])


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

    @property
    def captions_zh(self) -> tuple[str, ...]:
        """Chinese captions, canonical first: a pure function of the structure, like ``captions``."""
        return captions_zh_for(self.groups, self.position, self.relation)

    @property
    def caption_zh(self) -> str:
        return self.captions_zh[0]

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


# ----------------------------------------------------------------------------- Chinese captions

def vocabulary_zh() -> list[str]:
    """Every character a Chinese caption can use, sorted (a character-level tokenizer needs no more)."""
    pieces = list(ZH_COUNTS) + list(ZH_MEASURE_WORDS.values()) + list(ZH_SHAPES.values())
    pieces += list(ZH_COLOURS.values()) + list(ZH_SIZES.values()) + list(ZH_POSITIONS.values())
    pieces += list(ZH_RELATIONS.values()) + ["有", "在", "的"]
    return sorted({char for piece in pieces for char in piece})


def captions_zh_for(groups: tuple[Group, ...], position: str | None, relation: str | None) -> tuple[str, ...]:
    """Chinese canonical caption first, then its true paraphrases, in a fixed order.

    One group: the place first ("左边有…", the usual way to say what is where), then "…在左边",
    then the same without the size, then without the place. Two groups: "A在B的左边" names the
    left (or top) group first, like the English canonical caption; the paraphrases swap the
    relation ("B在A的右边") or lead with the reference group ("B的左边有A").
    """
    out: list[str] = []
    if len(groups) == 1:
        (g,) = groups
        assert position is not None
        where = ZH_POSITIONS[position]
        for with_size in (True, False):
            out += [f"{where}有{g.phrase_zh(with_size)}", f"{g.phrase_zh(with_size)}在{where}"]
        out += [g.phrase_zh(), g.phrase_zh(with_size=False)]
    else:
        a, b = groups
        assert relation is not None
        rel, inverse = ZH_RELATIONS[relation], ZH_RELATIONS[INVERSE_RELATION[relation]]
        for with_size in (True, False):
            first, second = a.phrase_zh(with_size), b.phrase_zh(with_size)
            out += [f"{first}在{second}的{rel}", f"{second}在{first}的{inverse}",
                    f"{second}的{rel}有{first}", f"{first}的{inverse}有{second}"]
    return tuple(dict.fromkeys(out))


# ----------------------------------------------------------------------------- reading queries

@dataclass(frozen=True)
class GroupPattern:
    """What a query says about one group; None leaves that attribute open."""

    shape: str
    count: int | None = None
    size: str | None = None
    colour: str | None = None

    def fits(self, group: Group) -> bool:
        return (self.shape == group.shape and self.count in (None, group.count)
                and self.size in (None, group.size) and self.colour in (None, group.colour))


@dataclass(frozen=True)
class Description:
    """A query read as structure: one group (at ``position``, None = anywhere) or two groups with
    ``groups[0] <relation> groups[1]`` (relation is "left of" or "above": inverses are swapped)."""

    groups: tuple[GroupPattern, ...]
    position: str | None = None
    relation: str | None = None


class Structure(Protocol):
    """What an image shows, as ``matches`` reads it (a ``Sample`` is one)."""

    @property
    def groups(self) -> tuple[Group, ...]: ...

    @property
    def position(self) -> str | None: ...

    @property
    def relation(self) -> str | None: ...


def matches(description: Description, sample: Structure) -> bool:
    """Whether the query is true of the image, the way the captions are true of it.

    Like every caption of the world, a description names all the groups an image has: "two red
    circles" is true of an image of two red circles anywhere, not of one that also shows a square.
    """
    if len(description.groups) != len(sample.groups):
        return False
    if not all(p.fits(g) for p, g in zip(description.groups, sample.groups)):
        return False
    if len(sample.groups) == 1:
        return description.position in (None, sample.position)
    return description.relation == sample.relation


def render(description: Description, language: str = "en") -> str:
    """A caption-style text saying exactly what ``description`` says ("two red circles on the left",
    "左边有两个红色圆形"); ``describe(render(d, language)) == d``. Lets training write texts for
    structures no image has, such as a true caption with one attribute changed."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, not {language!r}")
    groups = description.groups
    if language == "en":
        first = _render_en(groups[0], "one")
        if len(groups) == 2:
            return f"{first} {description.relation} {_render_en(groups[1], 'a')}"
        return f"{first} {POSITION_PHRASES[description.position]}" if description.position else first
    first = _render_zh(groups[0])
    if len(groups) == 2:
        return f"{first}在{_render_zh(groups[1])}的{ZH_RELATIONS[description.relation or '']}"
    return f"{ZH_POSITIONS[description.position]}有{first}" if description.position else first


def _render_en(pattern: GroupPattern, one: str) -> str:
    words = [] if pattern.count is None else [one if pattern.count == 1 else COUNT_WORDS[pattern.count - 1]]
    words += [w for w in (pattern.size, pattern.colour) if w]
    words.append(pattern.shape if pattern.count == 1 else pattern.shape + "s")
    return " ".join(words)


def _render_zh(pattern: GroupPattern) -> str:
    count = "" if pattern.count is None else ZH_COUNTS[pattern.count - 1] + ZH_MEASURE_WORDS[pattern.shape]
    colour = ZH_COLOURS[pattern.colour] if pattern.colour else ""
    size = ZH_SIZES[pattern.size] if pattern.size else ""
    return count + colour + size + ZH_SHAPES[pattern.shape]


def is_chinese(text: str) -> bool:
    """True when the text holds a CJK ideograph (the test that picks the query language "zh")."""
    return any(_is_cjk(char) for char in text)


def query_language(text: str) -> str:
    return "zh" if is_chinese(text) else "en"


def describe(text: str) -> Description | None:
    """Read an English or Chinese query about the world; None when it is not about the world.

    More forgiving than the caption grammar (it takes "a"/"an", "center", "big", 二, 的, a few
    synonyms and full-width characters) because people, not the generator, write queries.
    """
    text = unicodedata.normalize("NFKC", text)
    return _describe_zh(text) if is_chinese(text) else _describe_en(text)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF


def _normalise_relation(groups: tuple[GroupPattern, GroupPattern], relation: str) -> Description:
    if relation in RELATIONS:
        return Description(groups, relation=relation)
    canonical = next(r for r, inverse in INVERSE_RELATION.items() if inverse == relation)
    return Description((groups[1], groups[0]), relation=canonical)


# English: word lists the tolerant reader accepts (canonical words first).
_EN_COUNTS = {"one": 1, "a": 1, "an": 1, "single": 1, "two": 2, "three": 3, "four": 4}
_EN_SIZES = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
_EN_NOUNS = {s: s for s in SHAPES} | {s + "s": s for s in SHAPES}
_EN_PLACES = {
    "left": ("on the left", "at the left", "to the left", "left"),
    "right": ("on the right", "at the right", "to the right", "right"),
    "top": ("at the top", "on the top", "on top", "top"),
    "bottom": ("at the bottom", "on the bottom", "bottom"),
    "centre": ("in the centre", "in the center", "in the middle", "at the centre", "at the center", "centre",
               "center", "middle"),
}
_EN_RELATIONS = {
    "left of": ("to the left of", "on the left of", "left of"),
    "right of": ("to the right of", "on the right of", "right of"),
    "above": ("on top of", "above"),
    "below": ("underneath", "beneath", "below", "under"),
}


def _en_group(words: list[str], i: int) -> tuple[GroupPattern, int] | None:
    count = _EN_COUNTS.get(words[i]) if i < len(words) else None
    i += count is not None
    size = _EN_SIZES.get(words[i]) if i < len(words) else None
    i += size is not None
    colour = words[i] if i < len(words) and words[i] in COLOURS else None
    i += colour is not None
    if size is None and i < len(words) and words[i] in _EN_SIZES:  # "red small circle"
        size = _EN_SIZES[words[i]]
        i += 1
    if i >= len(words) or words[i] not in _EN_NOUNS:
        return None
    return GroupPattern(_EN_NOUNS[words[i]], count, size, colour), i + 1


def _describe_en(text: str) -> Description | None:
    words = re.sub(r"[^a-z]+", " ", text.lower()).split()
    if words[:1] == ["the"]:
        words = words[1:]
    first = _en_group(words, 0)
    if first is None:
        return None
    group, i = first
    rest = " ".join(words[i:])
    if not rest:
        return Description((group,))
    for position, phrases in _EN_PLACES.items():
        if rest in phrases:
            return Description((group,), position=position)
    for relation, phrases in _EN_RELATIONS.items():
        for phrase in phrases:
            if rest.startswith(phrase + " "):
                j = i + len(phrase.split())
                j += words[j:j + 1] == ["the"]
                second = _en_group(words, j)
                if second is not None and second[1] == len(words):
                    return _normalise_relation((group, second[0]), relation)
    return None


# Chinese: alternatives, longest first, that the reader maps back to the world's words.
_ZH_COUNT_WORDS = {"一": 1, "两": 2, "二": 2, "俩": 2, "三": 3, "四": 4, "1": 1, "2": 2, "3": 3, "4": 4}
_ZH_SHAPE_WORDS = {"圆形": "circle", "圆圈": "circle", "圆": "circle", "正方形": "square", "方形": "square",
                   "方块": "square", "三角形": "triangle", "三角": "triangle", "星星": "star", "星形": "star",
                   "五角星": "star", "星": "star"}
_ZH_COLOUR_WORDS = {word: colour for colour, zh in ZH_COLOURS.items() for word in (zh, zh[0])}
_ZH_SIZE_WORDS = {"小": "small", "大": "large"}
_ZH_PLACE_WORDS = {"left": ("左边", "左侧", "左面", "左方"), "right": ("右边", "右侧", "右面", "右方"),
                   "top": ("顶部", "上方", "上面", "上边", "上部", "顶端"),
                   "bottom": ("底部", "下方", "下面", "下边", "下部", "底端"),
                   "centre": ("中间", "中央", "中心", "正中")}
_ZH_RELATION_WORDS = {"left of": ("左边", "左侧", "左面", "左方"), "right of": ("右边", "右侧", "右面", "右方"),
                      "above": ("上方", "上面", "上边"), "below": ("下方", "下面", "下边")}


def _alternatives(words: Iterable[str]) -> str:
    return "|".join(sorted(map(re.escape, words), key=len, reverse=True))


def _zh_group_regex(tag: str) -> str:
    # count and measure word, then size and colour in either order with an optional 的, then the shape.
    return (rf"(?P<count{tag}>{_alternatives(_ZH_COUNT_WORDS)})?(?:个|颗|只|枚)?"
            rf"(?:(?P<size_a{tag}>{_alternatives(_ZH_SIZE_WORDS)})的?)?"
            rf"(?:(?P<colour{tag}>{_alternatives(_ZH_COLOUR_WORDS)})的?)?"
            rf"(?:(?P<size_b{tag}>{_alternatives(_ZH_SIZE_WORDS)})的?)?"
            rf"(?P<shape{tag}>{_alternatives(_ZH_SHAPE_WORDS)})")


_ZH_A, _ZH_B = _zh_group_regex("1"), _zh_group_regex("2")
_ZH_AT = "(?:在|位于|处于)"
_ZH_PLACE = rf"(?P<place>{_alternatives(w for ws in _ZH_PLACE_WORDS.values() for w in ws)})"
_ZH_RELATION = rf"(?P<rel>{_alternatives(w for ws in _ZH_RELATION_WORDS.values() for w in ws)})"
_ZH_FORMS: tuple[re.Pattern[str], ...] = tuple(re.compile(pattern) for pattern in (
    _ZH_A,                                                     # 两个红色圆形
    rf"(?:{_ZH_AT})?{_ZH_PLACE}(?:有|是){_ZH_A}",              # 左边有两个红色圆形
    rf"{_ZH_A}{_ZH_AT}(?:图片|图中|画面)?{_ZH_PLACE}",          # 两个红色圆形在(图片)左边
    rf"{_ZH_A}{_ZH_AT}{_ZH_B}的?{_ZH_RELATION}",               # A在B的左边
    rf"{_ZH_B}的?{_ZH_RELATION}(?:有|是){_ZH_A}",              # B的左边有A (A is left of B)
))


def _zh_pattern(match: re.Match[str], tag: str) -> GroupPattern:
    count, size = match.group(f"count{tag}"), match.group(f"size_a{tag}") or match.group(f"size_b{tag}")
    colour = match.group(f"colour{tag}")
    return GroupPattern(_ZH_SHAPE_WORDS[match.group(f"shape{tag}")],
                        _ZH_COUNT_WORDS[count] if count else None,
                        _ZH_SIZE_WORDS[size] if size else None,
                        _ZH_COLOUR_WORDS[colour] if colour else None)


def _describe_zh(text: str) -> Description | None:
    text = re.sub(r"[\s\W_]+", "", text)  # spaces and punctuation (full-width ones too) carry nothing here
    text = re.sub(r"^(?:(?:一张|这张)?(?:图片|图像|照片|画面)(?:里|中|上)?)", "", text)  # "图片里…"
    for pattern in _ZH_FORMS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        first = _zh_pattern(match, "1")
        groups = match.groupdict()
        if groups.get("rel"):
            second = _zh_pattern(match, "2")
            relation = next(r for r, words in _ZH_RELATION_WORDS.items() if groups["rel"] in words)
            return _normalise_relation((first, second), relation)
        if groups.get("place"):
            position = next(p for p, words in _ZH_PLACE_WORDS.items() if groups["place"] in words)
            return Description((first,), position=position)
        return Description((first,))
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


def queries(samples: Iterable[Sample], language: str = "en") -> list[dict]:
    """One query per distinct canonical caption in ``language`` ("en" or "zh"); relevant = every
    image with that caption. Both languages group the images alike: each canonical caption names
    the whole structure."""
    relevant: dict[str, list[str]] = {}
    for sample in samples:
        relevant.setdefault(_canonical(sample, language), []).append(sample.id)
    return [{"query": text, "relevant": ids} for text, ids in sorted(relevant.items())]


def _canonical(sample: Sample, language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, not {language!r}")
    return sample.caption if language == "en" else sample.caption_zh


def write_dataset(folder: Path | str, n: int, seed: int) -> list[Sample]:
    """``images/<id>.jpg``, ``captions.jsonl`` (COCO/Flickr style: every English caption, then every
    Chinese one, each row with its ``language``) and ``queries.jsonl`` (the English queries, then
    the Chinese ones, each with its ``language``)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    samples = generate(n, seed)
    with (folder / "captions.jsonl").open("w", encoding="utf-8") as captions:
        for sample in samples:
            (folder / "images" / f"{sample.id}.jpg").write_bytes(sample.image_jpeg)
        for language in LANGUAGES:
            for sample in samples:
                for text in (sample.captions if language == "en" else sample.captions_zh):
                    row = {"image": f"{sample.id}.jpg", "caption": text, "language": language}
                    captions.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for language in LANGUAGES:
            for query in queries(samples, language):
                handle.write(json.dumps(query | {"language": language}, ensure_ascii=False) + "\n")
    return samples


if __name__ == "__main__":  # python -m imagesearch.dev.world OUT_DIR [N] [SEED]
    import sys

    target = Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    world_seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    write_dataset(target, count, world_seed)
    print(f"wrote {count} images to {target}")
