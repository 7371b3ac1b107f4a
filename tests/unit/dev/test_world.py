"""The procedural world: deterministic, and its captions tell the truth about its pixels."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from imagesearch.dev import world


@pytest.fixture(scope="module")
def samples() -> list[world.Sample]:
    return world.generate(160, seed=7)


def test_same_seed_gives_identical_bytes_and_captions():
    first, second = world.generate(6, seed=11), world.generate(6, seed=11)
    assert [s.image_jpeg for s in first] == [s.image_jpeg for s in second]
    assert [s.captions for s in first] == [s.captions for s in second]
    assert [s.id for s in first] == [s.id for s in second]


def test_a_prefix_of_a_longer_run_is_identical_and_samples_are_independent():
    longer = world.generate(8, seed=11)
    assert [s.image_jpeg for s in world.generate(3, seed=11)] == [s.image_jpeg for s in longer[:3]]
    assert world.make_sample(11, 5).image_jpeg == longer[5].image_jpeg
    assert [s.id for s in world.generate(2, seed=11, start=6)] == [s.id for s in longer[6:]]


def test_different_seeds_differ():
    a, b = world.generate(20, seed=1), world.generate(20, seed=2)
    assert all(x.image_jpeg != y.image_jpeg for x, y in zip(a, b))
    assert [x.caption for x in a] != [y.caption for y in b]
    assert {x.id for x in a}.isdisjoint({y.id for y in b})


def test_images_are_small_rgb_jpegs(samples):
    for sample in samples[:20]:
        image = Image.open(io.BytesIO(sample.image_jpeg))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == (world.IMAGE_SIZE, world.IMAGE_SIZE)


def test_the_world_covers_its_grammar(samples):
    assert {s.background for s in samples} == set(world.BACKGROUNDS)
    assert {s.position for s in samples if s.position} == set(world.POSITIONS)
    assert {s.relation for s in samples if s.relation} == set(world.RELATIONS)
    assert {len(s.shapes) for s in samples} == {1, 2, 3, 4}
    assert {g.shape for s in samples for g in s.groups} == set(world.SHAPES)
    assert {g.colour for s in samples for g in s.groups} == set(world.COLOURS)
    assert {g.size for s in samples for g in s.groups} == set(world.SIZES)


def test_canonical_caption_states_the_attributes(samples):
    for sample in samples:
        assert world.parse_caption(sample.caption) == (sample.groups, sample.position, sample.relation)
        words = sample.caption.split()
        assert words[0] == world.COUNT_WORDS[sample.groups[0].count - 1]
        for caption in sample.captions:
            assert set(caption.split()) <= set(world.vocabulary()), caption
        assert len(set(sample.captions)) == len(sample.captions)


def test_examples_from_the_brief_read_as_expected():
    red, blue, green = (world.Group(2, "small", "red", "circle"), world.Group(1, "large", "blue", "square"),
                        world.Group(3, "small", "green", "star"))
    assert world.captions_for((red, blue), None, "left of")[0] == "two small red circles left of a large blue square"
    assert "two red circles left of a blue square" in world.captions_for((red, blue), None, "left of")
    assert "a large blue square right of two small red circles" in world.captions_for((red, blue), None, "left of")
    assert world.captions_for((green,), "top", None)[0] == "three small green stars at the top"
    assert "three green stars" in world.captions_for((green,), "top", None)
    one = world.Group(1, "large", "green", "star")
    assert "one green star" in world.captions_for((one,), "centre", None)


def test_shapes_match_counts_positions_and_relations(samples):
    half = world.IMAGE_SIZE / 2
    for sample in samples:
        for number, group in enumerate(sample.groups):
            members = [p for p in sample.shapes if p.group == number]
            assert len(members) == group.count
            assert all((p.shape, p.colour, p.size) == (group.shape, group.colour, group.size) for p in members)
            assert all(p.radius == world.SIZE_RADIUS[group.size] * world.IMAGE_SIZE for p in members)
        for p in sample.shapes:  # inside the picture
            assert p.radius <= p.cx <= world.IMAGE_SIZE - p.radius and p.radius <= p.cy <= world.IMAGE_SIZE - p.radius
        for i, p in enumerate(sample.shapes):  # never overlapping, so they can be counted
            for q in sample.shapes[i + 1:]:
                assert ((p.cx - q.cx) ** 2 + (p.cy - q.cy) ** 2) ** 0.5 > p.radius + q.radius
        xs = [p.cx for p in sample.shapes]
        ys = [p.cy for p in sample.shapes]
        if sample.position == "left":
            assert max(x + p.radius for x, p in zip(xs, sample.shapes)) < half
        elif sample.position == "right":
            assert min(x - p.radius for x, p in zip(xs, sample.shapes)) > half
        elif sample.position == "top":
            assert max(y + p.radius for y, p in zip(ys, sample.shapes)) < half
        elif sample.position == "bottom":
            assert min(y - p.radius for y, p in zip(ys, sample.shapes)) > half
        elif sample.position == "centre":
            assert all(abs(x - half) < half / 2 and abs(y - half) < half / 2 for x, y in zip(xs, ys))
        else:
            a = [p for p in sample.shapes if p.group == 0]
            b = [p for p in sample.shapes if p.group == 1]
            axis = "cx" if sample.relation == "left of" else "cy"
            assert max(getattr(p, axis) + p.radius for p in a) < min(getattr(p, axis) - p.radius for p in b)
            # two groups never look alike (they would read as one bigger group)
            assert (sample.groups[0].size, sample.groups[0].colour, sample.groups[0].shape) != \
                   (sample.groups[1].size, sample.groups[1].colour, sample.groups[1].shape)


def test_parse_caption_rejects_malformed_text():
    for text in ("", "one small purple circles left the small", "two large red circle at the top",
                 "one small red circle", "one small red circle above", "one tiny red circle at the top",
                 "one small red circle above a small blue star extra"):
        assert world.parse_caption(text) is None, text


def test_queries_group_images_by_canonical_caption(samples):
    doubled = samples[:30] + samples[:5]  # the same caption on several images
    queries = world.queries(doubled)
    assert [q["query"] for q in queries] == sorted({s.caption for s in doubled})
    for query in queries:
        assert query["relevant"] == [s.id for s in doubled if s.caption == query["query"]]
    assert any(len(q["relevant"]) > 1 for q in queries)


def test_write_dataset_files(tmp_path):
    written = world.write_dataset(tmp_path, 40, seed=3)
    assert written == world.generate(40, seed=3)
    images = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert images == sorted(f"{s.id}.jpg" for s in written)
    assert (tmp_path / "images" / f"{written[0].id}.jpg").read_bytes() == written[0].image_jpeg

    rows = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert rows == [{"image": f"{s.id}.jpg", "caption": c} for s in written for c in s.captions]

    queries = [json.loads(line) for line in (tmp_path / "queries.jsonl").read_text().splitlines()]
    canonical = {s.id: s.caption for s in written}
    assert sorted(i for q in queries for i in q["relevant"]) == sorted(canonical)
    for query in queries:
        assert set(query["relevant"]) == {i for i, c in canonical.items() if c == query["query"]}
