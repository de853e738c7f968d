"""Response models of the read API, contract §5 (Read API)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Entry(BaseModel):
    """One account on a board; ties share a rank (competition ranking: 1, 1, 3)."""

    rank: int = Field(ge=1)
    account_id: str
    name: str | None
    category: str | None
    score: float
    views: int
    likes: int
    fans: int
    uploads: int


class Leaderboard(BaseModel):
    window: str
    board: str
    total: int = Field(description="accounts on the board")
    offset: int
    limit: int
    entries: list[Entry]


class Around(BaseModel):
    window: str
    board: str
    account_id: str
    rank: int
    total: int
    entries: list[Entry]


class WindowMetrics(BaseModel):
    views: int
    likes: int
    uploads: int
    index: float


class BoardRank(BaseModel):
    window: str
    board: str
    rank: int
    score: float


class Account(BaseModel):
    account_id: str
    name: str | None
    category: str | None
    fans: int
    windows: dict[str, WindowMetrics]
    ranks: list[BoardRank]


class CampaignWindow(BaseModel):
    views: int
    likes: int
    uploads: int
    accounts: int
    top: list[Entry]


class Campaign(BaseModel):
    campaign: str
    windows: dict[str, CampaignWindow]


class AccountHistory(BaseModel):
    account_id: str
    window: str
    board: str
    step: str = Field(description="10s (the last 24 hours) or 10m (the last 30 days)")
    points: list[list[float]] = Field(
        description="[ms, index, rank] at each tick the account was in the board's top "
        "100, oldest first")


class SeriesPoint(BaseModel):
    t: int = Field(description="bucket start, epoch ms (event time)")
    views: int
    likes: int
    uploads: int
    accounts: int = Field(description="distinct accounts with a campaign-tagged event")


class CampaignSeries(BaseModel):
    campaign: str
    step: str = Field(description="1m (the last 24 hours) or 1h (the last 30 days)")
    points: list[SeriesPoint] = Field(
        description="ascending t; buckets with no event are left out")


class Health(BaseModel):
    status: str
    redis: bool
    events: int | None = None
    updated_at: int | None = Field(default=None, description="ms of the last worker write")
    data_age_seconds: float | None = None


class Error(BaseModel):
    error: str
    detail: object | None = None
