"""How close to ``bench/caption.py``'s bound any implementation of the caption stage can come.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/caption_ceiling.py                 # fp32, batch 8, 12 tokens
    .venv/bin/python bench/caption_ceiling.py --precision bf16

The bound (issue 16) counts the encoder's FLOPs at the matmul rate and the decoder's per-token
weight traffic at the memory bandwidth. A caption stage must also do work the bound leaves out:
the cross-attention keys and values of the image tokens (computed once per caption) and the CLIP
text vectors of the captions. This script times each part of the production captioner
(``load_captioner``, the same random vit-gpt2 model as ``bench/caption.py``) on its own, next to
that part's bound measured in the same run, and reports two ceilings:

* ``ceiling_fraction``: bound / (bound + the cross-attention K/V at the matmul rate + the CLIP text
  encode as measured): the fraction an implementation would reach with its encoder and every decoder
  step exactly at their bounds and the excluded work at the GEMM rate;
* ``ceiling_fraction_encoder_as_measured``: the same with the encoder as it runs now;
* ``required_efficiency_for_target``: the share of their bounds at which encoder and decoder would
  both have to run for the stage to reach the target (0.8), the excluded work as above.

A target above ``ceiling_fraction`` cannot be met by a faster implementation of the same
computation, only by computing something else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import caption
import common
import torch

from imagesearch import imaging
from imagesearch.models.captioner import CaptionerSpec, load_captioner


def ceilings(encoder_bound: float, decoder_bound: float, cross_kv: float, clip_text: float,
             encoder_measured: float) -> tuple[float, float]:
    """(every part at its bound, the encoder as measured): bound / (least seconds a stage can take)."""
    bound_s = encoder_bound + decoder_bound
    return (bound_s / (bound_s + cross_kv + clip_text),
            bound_s / (encoder_measured + decoder_bound + cross_kv + clip_text))


def required_efficiency(bound_s: float, outside_s: float, target: float) -> float:
    """The share of their bounds at which the encoder and the decoder would both have to run for the
    stage to reach ``target`` of the bound, with the work outside it taking ``outside_s``:
    bound / (bound / e + outside) = target. Above 1: out of reach."""
    room = bound_s / target - outside_s
    return float("inf") if room <= 0 else bound_s / room


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=sorted(caption.DTYPES), default="fp32")
    parser.add_argument("--batch", type=int, default=8, help="CAPTION_BATCH_SIZE (production default 8)")
    parser.add_argument("--max-length", type=int, default=12, help="new tokens per caption, forced")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    dtype = caption.DTYPES[args.precision]

    directory = caption.captioner_dir(args.max_length)
    work = caption.count_work(directory)
    captioner = load_captioner(CaptionerSpec("vit-gpt2-random", directory, "cpu", args.max_length, 1, args.precision))
    clip = common.load_vit_b32(args.precision)
    images = [imaging.decode(t, min_side=256, max_pixels=64_000_000) for t in caption.thumbnails(args.batch)]
    model = captioner.model
    pixels = captioner.image_processor(images=images, return_tensors="pt")["pixel_values"].to(dtype=model.dtype)
    texts = captioner.caption(images)
    steps = args.max_length

    first_limits = caption.bound(work, args.batch, steps, dtype)
    with torch.inference_mode():
        encoded = model.encoder(pixel_values=pixels)
        hidden = encoded.last_hidden_state
        cross_kv = [m.crossattention.c_attn for m in model.decoder.transformer.h]

        def generate(tokens: int) -> None:
            model.generate(encoder_outputs=encoded, max_new_tokens=tokens, min_new_tokens=tokens, max_length=None,
                           num_beams=1, do_sample=False)

        def best(fn) -> float:
            return caption._best(fn, args.reps)[0]  # wall seconds

        measured = {
            "encoder_s": best(lambda: model.encoder(pixel_values=pixels)),
            "cross_kv_s": best(lambda: [m(hidden) for m in cross_kv]),
            "first_token_s": best(lambda: generate(1)),
            "two_tokens_s": best(lambda: generate(2)),
            "all_tokens_s": best(lambda: generate(steps)),
            "clip_text_s": best(lambda: clip.encode_texts(texts)),
        }
    measured["per_step_s"] = (measured["all_tokens_s"] - measured["two_tokens_s"]) / (steps - 2)
    # Rates measured around the parts, the better counting (as in caption.py): a neighbour's burst
    # during one measurement must not make the bound look easier.
    limits = max(first_limits, caption.bound(work, args.batch, steps, dtype), key=lambda b: b["captions_s"])
    cross_kv_at_rate = limits["cross_kv_s_per_batch"]
    bound_s = limits["encoder_s_per_batch"] + limits["decoder_s_per_batch"]
    step_bound_s = limits["decoder_s_per_batch"] / steps
    parts_s = measured["encoder_s"] + measured["all_tokens_s"] + measured["clip_text_s"]
    ceiling, ceiling_encoder = ceilings(limits["encoder_s_per_batch"], limits["decoder_s_per_batch"],
                                        cross_kv_at_rate, measured["clip_text_s"], measured["encoder_s"])
    out = {
        "benchmark": "caption_ceiling", "precision": args.precision, "batch": args.batch,
        "new_tokens_per_caption": steps, "reps": args.reps,
        "bound_s_per_batch": round(bound_s, 4), "bound_captions_s": round(args.batch / bound_s, 3),
        "bound_parts_s": {"encoder": round(limits["encoder_s_per_batch"], 4),
                          "decoder_steps": round(limits["decoder_s_per_batch"], 4),
                          "one_step": round(step_bound_s, 5)},
        "not_in_bound_s": {"cross_kv_at_matmul_rate": round(cross_kv_at_rate, 4),
                           "clip_text_measured": round(measured["clip_text_s"], 4)},
        "measured_s": {k: round(v, 4) for k, v in measured.items()},
        "encoder_vs_bound": round(measured["encoder_s"] / limits["encoder_s_per_batch"], 3),
        "cross_kv_vs_matmul_rate": round(measured["cross_kv_s"] / cross_kv_at_rate, 3),
        "step_vs_bound": round(measured["per_step_s"] / step_bound_s, 3),
        "parts_fraction_of_bound": round(bound_s / parts_s, 3),
        "ceiling_fraction": round(ceiling, 3),
        "ceiling_fraction_encoder_as_measured": round(ceiling_encoder, 3),
        "required_efficiency_for_target": round(required_efficiency(
            bound_s, cross_kv_at_rate + measured["clip_text_s"], caption.TARGETS["fraction_of_bound"]), 3),
        "target_fraction": caption.TARGETS["fraction_of_bound"],
        "target_within_ceiling": ceiling >= caption.TARGETS["fraction_of_bound"],
        "matmul_gflops": limits["matmul_gflops"], "memory_gb_s": limits["memory_gb_s"],
        "loadavg_1m_before": load_before, "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - started, 1), "machine": common.machine(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
