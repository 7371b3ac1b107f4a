"""Greedy captions of the DEMO captioner in fp32 stay exactly what they were before the CPU speed work.

tests/data/demo_captions_fp32.json was written by this module's ``--write`` with the captioner code
of commit ee9fa2d (before issue 16's changes to imagesearch/models/captioner.py): any change to how
the captioner loads or generates (attention kernel, cache, thread settings) must leave every
fp32 caption identical, batched and one image per call. Refresh only when the demo weights are
retrained:

    .venv/bin/python -m tests.unit.models.test_captioner_regression --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from imagesearch.dev import world
from tests.support.paths import ROOT

DEMO = ROOT / "models" / "demo"
GOLDEN = ROOT / "tests" / "data" / "demo_captions_fp32.json"
SEED, START, COUNT, BATCH = 2, 3000, 48, 8  # held-out world seed (training used 1), outside other tests' range
SINGLE = 8  # the first SINGLE images are also captioned one per call
BEAM_COUNT, BEAMS = 8, 3  # beam search shares the generation code; a few images guard it too

pytestmark = pytest.mark.skipif(
    not (DEMO / "captioner" / "model.safetensors").is_file(),
    reason="models/demo is absent: train it with `python scripts/train_demo_models.py` (~20 min on 2 CPU cores)",
)


def _inputs() -> list:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import measure_demo_models as measure
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    # What the caption worker hands the captioner: the stored 256 px thumbnail.
    return [measure.captioner_input(s) for s in world.generate(COUNT, seed=SEED, start=START)]


def _load(num_beams: int = 1):
    from imagesearch.models.captioner import CaptionerSpec, load_captioner

    return load_captioner(CaptionerSpec("demo", DEMO / "captioner", "cpu", 24, num_beams, "fp32"))


def compute() -> dict:
    images = _inputs()
    greedy = _load()
    batched = [c for s in range(0, COUNT, BATCH) for c in greedy.caption(images[s:s + BATCH])]
    single = [greedy.caption([image])[0] for image in images[:SINGLE]]
    beam = _load(BEAMS).caption(images[:BEAM_COUNT])
    return {"captioner": greedy.identity, "world_seed": SEED, "start": START, "batch": BATCH, "max_length": 24,
            "greedy_batched": batched, "greedy_single": single, f"beam{BEAMS}": beam}


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def images() -> list:
    return _inputs()


def test_golden_file_is_for_these_weights(golden):
    assert golden["captioner"] == _load().identity, "demo weights changed: rewrite the golden file (--write)"


def test_fp32_greedy_batched_captions_unchanged(golden, images):
    captioner = _load()
    got = [c for s in range(0, COUNT, BATCH) for c in captioner.caption(images[s:s + BATCH])]
    assert got == golden["greedy_batched"]
    # The file itself must say something: real sentences of the world's grammar, not all alike.
    assert len(set(got)) > COUNT // 2
    assert all(world.parse_caption(c) is not None for c in got)


def test_fp32_greedy_single_captions_unchanged_and_equal_to_batched(golden, images):
    captioner = _load()
    got = [captioner.caption([image])[0] for image in images[:SINGLE]]
    assert got == golden["greedy_single"]
    assert got == golden["greedy_batched"][:SINGLE]


def test_fp32_beam_captions_unchanged(golden, images):
    assert _load(BEAMS).caption(images[:BEAM_COUNT]) == golden[f"beam{BEAMS}"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    GOLDEN.write_text(json.dumps(compute(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {Path(GOLDEN).relative_to(ROOT)}")
