"""The model catalogue: which model to choose per language and budget, with the recall it is chosen on.

Published recall is cited, never measured here (there are no real weights offline). What *is*
measured here is cost: dimension, memory and encode times, on the same architecture with random
weights (``bench/models.py`` writes ``measured.json`` beside this module; a model's cost does not
depend on its weight values). ``imagesearch models list`` prints this table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from imagesearch.vocab import ModelRole

MEASURED = Path(__file__).with_name("measured.json")

IMMICH = ("Immich docs/docs/features/searching.md: Crossmodal-3600, mean of R@1/R@5/R@10 for zero-shot "
          "text-to-image retrieval")
CN_CLIP = "OFA-Sys/Chinese-CLIP README: MUGE zero-shot text-to-image, mean of R@1/R@5/R@10 (52.1/76.7/84.4)"


@dataclass(frozen=True)
class Entry:
    name: str  # what `imagesearch models download NAME` takes
    role: ModelRole
    settings: dict[str, str]  # the environment that selects it
    languages: str
    choose_when: str
    recall: dict[str, float] = field(default_factory=dict)  # published, per language code
    citation: str = ""
    replica: bool = False  # an offline replica test covers it (tests/replicas/)

    def measured(self) -> dict:
        return _measured_table().get(self.name, {})


@lru_cache(maxsize=1)
def _measured_table() -> dict[str, dict]:
    """measured.json, read once per process (a listing asks it once per entry)."""
    return json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}


def _open_clip(name: str, tag: str) -> dict[str, str]:
    return {"IMAGESEARCH_CLIP_MODEL": name, "IMAGESEARCH_CLIP_PRETRAINED": tag}


CATALOGUE: tuple[Entry, ...] = (
    Entry("ViT-B-32/laion2b_s34b_b79k", ModelRole.CLIP, _open_clip("ViT-B-32", "laion2b_s34b_b79k"), "English",
          "the default, for English: 9.4 points above OpenAI's weights at the same size and speed",
          {"en": 68.78}, IMMICH, True),
    Entry("ViT-B-32/openai", ModelRole.CLIP, _open_clip("ViT-B-32", "openai"), "English",
          "only to match an existing OpenAI-CLIP index; QuickGELU, loaded as trained", {"en": 59.37}, IMMICH, True),
    Entry("ViT-B-16-SigLIP2/webli", ModelRole.CLIP, _open_clip("ViT-B-16-SigLIP2", "webli"), "English (+ some others)",
          "English: 6.4 points above the default at 2.5x its encode time in Immich's table",
          {"en": 75.19, "zh": 64.39}, IMMICH),
    Entry("xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k", ModelRole.CLIP,
          _open_clip("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"), "multilingual (XLM-R: 100 languages)",
          "Chinese and English queries on a small budget", {"en": 68.33, "zh": 72.52}, IMMICH, True),
    Entry("nllb-clip-base-siglip/v1", ModelRole.CLIP,
          {**_open_clip("nllb-clip-base-siglip", "v1"), "IMAGESEARCH_CLIP_LANGUAGE": "zho_Hans"},
          "multilingual (NLLB: 200 languages; set the query language)",
          "Chinese with more headroom; the language code goes before every text", {"en": 68.41, "zh": 72.65}, IMMICH),
    Entry("nllb-clip-large-siglip/v1", ModelRole.CLIP,
          {**_open_clip("nllb-clip-large-siglip", "v1"), "IMAGESEARCH_CLIP_LANGUAGE": "zho_Hans"},
          "multilingual (NLLB: 200 languages; set the query language)",
          "best Chinese recall in Immich's table, at about 30x the default's encode time",
          {"en": 71.19, "zh": 77.49}, IMMICH),
    Entry("xlm-roberta-large-ViT-H-14/frozen_laion5b_s13b_b90k", ModelRole.CLIP,
          _open_clip("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k"), "multilingual (XLM-R)",
          "Chinese and English near the top of both tables, no language code", {"en": 71.45, "zh": 77.19}, IMMICH),
    Entry("transformers:openai/clip-vit-base-patch32", ModelRole.CLIP,
          {"IMAGESEARCH_CLIP_MODEL": "transformers:openai/clip-vit-base-patch32"}, "English",
          "the OpenAI weights through transformers (same weights as ViT-B-32/openai)", {"en": 59.37}, IMMICH, True),
    Entry("transformers:OFA-Sys/chinese-clip-vit-base-patch16", ModelRole.CLIP,
          {"IMAGESEARCH_CLIP_MODEL": "transformers:OFA-Sys/chinese-clip-vit-base-patch16"}, "Chinese",
          "Chinese-only collections (trained on 200M Chinese pairs); English queries are weak",
          {"zh": 71.1}, CN_CLIP, True),
    Entry("transformers:google/siglip-base-patch16-224", ModelRole.CLIP,
          {"IMAGESEARCH_CLIP_MODEL": "transformers:google/siglip-base-patch16-224"}, "English",
          "English, SigLIP through transformers (same weights as open_clip's ViT-B-16-SigLIP/webli)",
          {"en": 71.64}, IMMICH, True),
    Entry("nlpconnect/vit-gpt2-image-captioning", ModelRole.CAPTIONER,
          {"IMAGESEARCH_CAPTIONER_MODEL": "nlpconnect/vit-gpt2-image-captioning"}, "English captions",
          "the default captioner, the source article's model", replica=True),
    Entry("Salesforce/blip-image-captioning-base", ModelRole.CAPTIONER,
          {"IMAGESEARCH_CAPTIONER_MODEL": "Salesforce/blip-image-captioning-base"}, "English captions",
          "an alternative captioner; its 384 px input is 3x vit-gpt2's image patches", replica=True),
)


def find(name: str) -> Entry | None:
    return next((entry for entry in CATALOGUE if entry.name == name), None)


def _cell(value: object) -> str:
    return "-" if value in (None, "") else str(value)


def markdown_table() -> str:
    """The catalogue as docs/models.md shows it (tests/unit/models/test_catalogue.py keeps them equal)."""
    rows = ["| name | role | languages | published recall en / zh (%) | dim | peak RSS MiB | ms / image | "
            "ms / query | choose when |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for entry in CATALOGUE:
        measured = entry.measured()
        recall = " / ".join(f"{entry.recall[k]:.1f}" if k in entry.recall else "-" for k in ("en", "zh"))
        rows.append(f"| `{entry.name}` | {entry.role} | {entry.languages} | {recall if entry.recall else '-'} | "
                    f"{_cell(measured.get('dim'))} | {_cell(measured.get('rss_mib'))} | "
                    f"{_cell(measured.get('ms_per_image'))} | {_cell(measured.get('ms_per_query'))} | "
                    f"{entry.choose_when} |")
    return "\n".join(rows)
