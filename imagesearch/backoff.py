"""The one retry delay: capped exponential backoff with equal jitter.

Equal jitter waits half the capped exponential delay for sure and draws the other half at random
(AWS Architecture Blog, "Exponential Backoff And Jitter"): retries from many workers spread out
instead of arriving in lockstep, yet none comes back much sooner than the schedule intends, which
full jitter (a draw from zero) would allow.
"""

from __future__ import annotations

import random


def equal_jitter(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
    ceiling = min(cap, base * 2 ** max(0, attempt))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
