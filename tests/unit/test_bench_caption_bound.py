"""bench/caption.py's bound counts the work it says it counts (checked by hand on a tiny captioner)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from imagesearch.dev.tiny_models import build_captioner
from tests.support.paths import ROOT

WIDTH, LAYERS, INTER, IMAGE, VOCAB_WORDS = 64, 2, 128, 64, 40


@pytest.fixture(scope="module")
def caption_bench():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("caption_bench", ROOT / "bench" / "caption.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["caption_bench"] = module  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_captioner(tmp_path_factory.mktemp("cap") / "m", [f"w{i}" for i in range(VOCAB_WORDS)],
                           image_size=IMAGE, width=WIDTH, layers=LAYERS, heads=2, intermediate=INTER)


def test_encoder_flops_and_decoder_bytes_by_hand(caption_bench, tiny):
    work = caption_bench.count_work(tiny)
    tokens = (IMAGE // 16) ** 2 + 1  # 16 px patches and the class token
    per_layer = 2 * tokens * (4 * WIDTH * WIDTH + 2 * WIDTH * INTER) + 2 * (2 * tokens * tokens * WIDTH)
    patches = 2 * (tokens - 1) * (3 * 16 * 16) * WIDTH
    pooler = 2 * WIDTH * WIDTH
    assert work.image_tokens == tokens
    assert work.encoder_flops == LAYERS * per_layer + patches + pooler
    assert sorted(work.encoder_gemms) == sorted([(WIDTH, WIDTH)] * 4 + [(INTER, WIDTH), (WIDTH, INTER)])
    vocab, inner = VOCAB_WORDS + 4, 4 * WIDTH  # GPT-2's MLP is 4x wide (build_captioner sizes only ViT's)
    step_layer = (WIDTH * 3 * WIDTH + 3 * WIDTH) + 3 * (WIDTH * WIDTH + WIDTH) \
        + (WIDTH * inner + inner) + (inner * WIDTH + WIDTH) + 3 * 2 * WIDTH  # LN: ln_1, ln_cross_attn, ln_2
    assert work.decoder_step_params == LAYERS * step_layer + 2 * WIDTH + vocab * WIDTH  # ln_f, output layer
    assert work.cross_kv_flops == 2 * tokens * LAYERS * WIDTH * 2 * WIDTH  # once per caption, outside the bound


def test_bound_is_encoder_at_matmul_rate_plus_decoder_at_bandwidth(caption_bench, tiny, monkeypatch):
    work = caption_bench.count_work(tiny)
    monkeypatch.setattr(caption_bench, "matmul_rates", lambda *a, **k: {
        "torch_linear": {"gflops": 50.0, "gflops_per_cpu_s": 25.0},
        "onednn_packed": {"gflops": 100.0, "gflops_per_cpu_s": 60.0}})
    monkeypatch.setattr(caption_bench, "memory_bandwidth", lambda *a, **k: {
        "sum": {"gb_s": 20.0, "gb_per_cpu_s": 20.0}, "copy": {"gb_s": 10.0, "gb_per_cpu_s": 10.0}})
    b = caption_bench.bound(work, batch=8, steps=12, dtype=torch.bfloat16)
    encoder = 8 * work.encoder_flops / 100e9  # the faster kernel
    decoder = 12 * work.decoder_step_params * 2 / 20e9  # bf16: 2 bytes a weight, the faster of sum and copy
    assert b["encoder_s_per_batch"] == pytest.approx(encoder)
    assert b["decoder_s_per_batch"] == pytest.approx(decoder)
    assert b["cross_kv_s_per_batch"] == pytest.approx(8 * work.cross_kv_flops / 100e9)  # at the faster kernel
    assert b["captions_s"] == pytest.approx(8 / (encoder + decoder))
    assert b["captions_per_cpu_s"] == pytest.approx(8 / (8 * work.encoder_flops / 60e9 + decoder))


def test_ceilings_add_the_work_the_bound_leaves_out():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("caption_ceiling_bench", ROOT / "bench" / "caption_ceiling.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    # Bound 0.6 + 0.2 s; outside it 0.1 s of cross-attention K/V and 0.1 s of CLIP text.
    every_part_at_bound, encoder_as_measured = module.ceilings(0.6, 0.2, 0.1, 0.1, encoder_measured=0.8)
    assert every_part_at_bound == pytest.approx(0.8 / 1.0)
    assert encoder_as_measured == pytest.approx(0.8 / 1.2)
    # 0.8 of the bound leaves 1.0 s; 0.2 s of it is outside the bound, so both parts at 100 %.
    assert module.required_efficiency(0.8, 0.2, 0.8) == pytest.approx(1.0)
    assert module.required_efficiency(0.8, 0.1, 0.8) == pytest.approx(0.8 / 0.9)
    assert module.required_efficiency(0.8, 1.0, 0.8) == float("inf")
