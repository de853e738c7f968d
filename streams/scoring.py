"""The influence index of contract §3: NewRank's log-scaled dimensions, weighted.

Ceilings are fixed per window length, not the current leader's value, so an event
changes only its own account's score and updates stay incremental.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """Weights and per-day ceilings of the index (contract §3 defaults)."""

    weight_views: float = 0.40
    weight_likes: float = 0.25
    weight_fans: float = 0.25
    weight_uploads: float = 0.10
    cap_views_per_day: float = 10_000_000
    cap_likes_per_day: float = 500_000
    cap_uploads_per_day: float = 20
    cap_fans: float = 50_000_000


DEFAULT_SCORING = ScoringConfig()


def dimension_score(value: float, ceiling: float) -> float:
    """`min(1000, 1000 * ln(1 + max(x, 0)) / ln(1 + C))`."""
    if value <= 0:
        return 0.0
    return min(1000.0, 1000.0 * math.log1p(value) / math.log1p(ceiling))


def influence_index(
    views: int,
    likes: int,
    uploads: int,
    fans: int,
    days: float,
    config: ScoringConfig = DEFAULT_SCORING,
) -> float:
    """The 0–1000 index of one account over a window `days` long."""
    score = (
        config.weight_views * dimension_score(views, config.cap_views_per_day * days)
        + config.weight_likes * dimension_score(likes, config.cap_likes_per_day * days)
        + config.weight_fans * dimension_score(fans, config.cap_fans)
        + config.weight_uploads * dimension_score(uploads, config.cap_uploads_per_day * days)
    )
    return round(score, 2)
