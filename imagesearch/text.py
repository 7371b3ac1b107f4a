"""Text normalisation shared by queries and stored texts, so both sides of a comparison agree.

NFKC folds full-width ASCII (``ＲＥＤ``, ``２``) and the ideographic space to their ordinary forms,
and compatibility characters (ligatures, circled digits) to what they stand for: users typing on a
Chinese input method get the same vector as users typing ASCII.
"""

from __future__ import annotations

import re
import unicodedata


def normalize_text(text: str) -> str:
    """NFKC, then runs of whitespace (any Unicode space) collapsed to one ASCII space and trimmed."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


# Han, Hiragana, Katakana, Hangul: scripts written without spaces between words.
_CJK = re.compile(r"[\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
                  r"\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]+")


def cjk_bigrams(text: str) -> str:
    """``text`` with each run of CJK characters replaced by its overlapping bigrams, space-separated
    (a lone character stays a unigram), as Lucene's ``cjk_bigram`` filter emits them.

    The embedded store indexes and queries through this, so that "连衣" finds "红色连衣裙" there as
    OpenSearch's ``cjk_bigram`` finds it: a run of Han characters is otherwise one token. Text
    outside CJK runs is left for the tokenizer (porter stemming for English).
    """
    def bigrams(match: re.Match[str]) -> str:
        run = match.group(0)
        if len(run) == 1:
            return f" {run} "
        return " " + " ".join(run[i:i + 2] for i in range(len(run) - 1)) + " "

    return " ".join(_CJK.sub(bigrams, normalize_text(text)).split())
