"""The influence index of contract §3 (Influence index): NewRank's log-scaled dimensions,
weighted (tests/test_scoring.py).

Ceilings are fixed per window length, not the current leader's value, so an event
changes only its own account's score and updates stay incremental.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from streams.core.state import AccountState
from streams.core.windows import Windows


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """Weights and per-day ceilings of the index (the defaults of contract §3, Influence
    index)."""

    weight_views: float = 0.40
    weight_likes: float = 0.25
    weight_fans: float = 0.25
    weight_uploads: float = 0.10
    cap_views_per_day: float = 10_000_000
    cap_likes_per_day: float = 500_000
    cap_uploads_per_day: float = 20
    cap_fans: float = 50_000_000


DEFAULT_SCORING = ScoringConfig()


def scoring_config(settings: object) -> ScoringConfig:
    """The scoring of settings that carry ScoringConfig's fields by name (rankflow's
    `Settings`, validated at start-up)."""
    return ScoringConfig(**{name: getattr(settings, name)
                            for name in ScoringConfig.__dataclass_fields__})


def dimension_score(value: float, ceiling: float) -> float:
    """`min(1000, 1000 * ln(1 + max(x, 0)) / ln(1 + C))`."""
    return _scaled(value, math.log1p(ceiling))


def _scaled(value: float, log_ceiling: float) -> float:
    if value <= 0:
        return 0.0
    return min(1000.0, 1000.0 * math.log1p(value) / log_ceiling)


@lru_cache(maxsize=1024)
def _log_ceilings(config: ScoringConfig, days: float) -> tuple[float, float, float, float]:
    """`ln(1 + C)` of views, likes, fans and uploads for a window `days` long (every
    account of every batch is scored in every window: computed once)."""
    return (math.log1p(config.cap_views_per_day * days),
            math.log1p(config.cap_likes_per_day * days), math.log1p(config.cap_fans),
            math.log1p(config.cap_uploads_per_day * days))


def influence_index(
    views: int,
    likes: int,
    uploads: int,
    fans: int,
    days: float,
    config: ScoringConfig = DEFAULT_SCORING,
) -> float:
    """The 0–1000 index of one account over a window `days` long."""
    log_views, log_likes, log_fans, log_uploads = _log_ceilings(config, days)
    score = (
        config.weight_views * _scaled(views, log_views)
        + config.weight_likes * _scaled(likes, log_likes)
        + config.weight_fans * _scaled(fans, log_fans)
        + config.weight_uploads * _scaled(uploads, log_uploads)
    )
    return round(score, 2)


@dataclass(slots=True)
class WindowScore:
    """(Not frozen: eight are built per account per batch, and a frozen dataclass is
    slower to build; figures in docs/performance.md.)"""

    views: int
    likes: int
    uploads: int
    index: float


@dataclass(frozen=True, slots=True)
class AccountView:
    """What the boards show of one account at one clock: computed here, written as is."""

    account_id: str
    partition: int
    listed: bool
    category: str
    name: str | None
    fans: int
    windows: dict[str, WindowScore]
    #: campaign -> window -> [views, likes, uploads, events]
    campaigns: dict[str, dict[str, list[int]]]


@lru_cache(maxsize=1024)
def _days(windows: Windows, window: str) -> float:
    return windows.days(window)


def account_view(state: AccountState, windows: Windows, clock_ms: int,
                 config: ScoringConfig = DEFAULT_SCORING) -> AccountView:
    """Score an account in every window at this clock."""
    fans = state.fans
    scores = {}
    for window, (views, likes, uploads, _) in state.counts.window_sums(windows,
                                                                        clock_ms).items():
        scores[window] = WindowScore(views, likes, uploads, influence_index(
            views, likes, uploads, fans, _days(windows, window), config))
    campaigns = {name: counts.window_sums(windows, clock_ms)
                 for name, counts in state.campaigns.items()}
    return AccountView(state.account_id, state.partition, state.listed, state.category,
                       state.profile.name if state.profile else None, fans, scores, campaigns)
