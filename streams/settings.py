"""All of rankflow's settings, read once from the environment (and a `.env` file).

Every variable is named `RANKFLOW_*` (contract §6). A bad value stops the program at
start-up with a message naming the variable: see `load_settings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.events import ID_PATTERN

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Period:
    """A named fixed event-time interval `start_ms <= ts < end_ms` (a board window)."""

    name: str
    start_ms: int
    end_ms: int

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS


def parse_periods(text: str) -> tuple[Period, ...]:
    """Parse `name=YYYY-MM-DD/YYYY-MM-DD,...` (UTC dates, end exclusive)."""
    periods: list[Period] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, span = item.partition("=")
        start_text, sep2, end_text = span.partition("/")
        if not sep or not sep2:
            raise ValueError(f"{item!r} is not name=YYYY-MM-DD/YYYY-MM-DD")
        if not ID_PATTERN.fullmatch(name) or name in ("1h", "24h", "7d", "30d", "all"):
            raise ValueError(f"period name {name!r} must match {ID_PATTERN.pattern} "
                             "and differ from the rolling windows")
        try:
            start = datetime.fromisoformat(start_text.strip()).replace(tzinfo=UTC)
            end = datetime.fromisoformat(end_text.strip()).replace(tzinfo=UTC)
        except ValueError as exc:
            raise ValueError(f"period {name!r}: {exc}") from None
        if end <= start:
            raise ValueError(f"period {name!r} ends before it starts")
        if any(p.name == name for p in periods):
            raise ValueError(f"period {name!r} is given twice")
        periods.append(Period(name, int(start.timestamp() * 1000), int(end.timestamp() * 1000)))
    return tuple(periods)


class Settings(BaseSettings):
    """rankflow's configuration (contract §6 plus tuning knobs with safe defaults)."""

    model_config = SettingsConfigDict(
        env_prefix="RANKFLOW_", env_file=".env", extra="ignore", frozen=True
    )

    kafka: str = "127.0.0.1:9092"
    redis: str = "redis://127.0.0.1:6379/0"
    prefix: str = "rf:"
    topic_prefix: str = ""
    app_id: str = "rankflow"
    clock: Literal["wall", "event"] = "wall"
    periods: str = ""
    partitions: int = Field(default=8, ge=1, le=1024)
    api_port: int = Field(default=8080, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    api_history_interval: float = Field(default=10.0, gt=0, le=3600)

    # Scoring (contract §3 defaults): weights summing to 1, ceilings per day of window.
    weight_views: float = Field(default=0.40, ge=0, le=1)
    weight_likes: float = Field(default=0.25, ge=0, le=1)
    weight_fans: float = Field(default=0.25, ge=0, le=1)
    weight_uploads: float = Field(default=0.10, ge=0, le=1)
    cap_views_per_day: float = Field(default=10_000_000, gt=0)
    cap_likes_per_day: float = Field(default=500_000, gt=0)
    cap_uploads_per_day: float = Field(default=20, gt=0)
    cap_fans: float = Field(default=50_000_000, gt=0)

    # Tuning; the defaults suit one worker on a small machine.
    batch_max_records: int = Field(default=20_000, ge=1)
    dedup_min_events: int = Field(default=100_000, ge=0)
    dedup_min_seconds: float = Field(default=600.0, ge=0)
    session_timeout: float = Field(default=10.0, gt=0)
    rebalance_timeout: float = Field(default=10.0, gt=0)
    kafka_version: str = "3.9.1"
    cache_dir: Path = Path(os.path.expanduser("~/.cache/rankflow"))
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("kafka")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        if not servers:
            raise ValueError("no bootstrap server given")
        return ",".join(servers)

    @field_validator("redis")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("periods")
    @classmethod
    def _periods(cls, value: str) -> str:
        parse_periods(value)
        return value

    @field_validator("app_id", "prefix")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _weights_sum_to_one(self) -> Settings:
        total = self.weight_views + self.weight_likes + self.weight_fans + self.weight_uploads
        if abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"RANKFLOW_WEIGHT_VIEWS + _LIKES + _FANS + _UPLOADS must sum to 1 "
                f"(the index stays on 0-1000), got {total:g}")
        return self

    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka.split(",")

    @property
    def named_periods(self) -> tuple[Period, ...]:
        return parse_periods(self.periods)


class SettingsError(SystemExit):
    """A bad setting: stops the program with a message naming the variable."""


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        if not err["loc"]:  # a rule across settings: its message names them
            lines.append(err["msg"].removeprefix("Value error, "))
            continue
        field = str(err["loc"][0])
        lines.append(f"RANKFLOW_{field.upper()}: {err['msg']} (got {err.get('input')!r})")
    return "bad setting: " + "; ".join(lines)


def load_settings() -> Settings:
    """Read the settings; a bad value raises SettingsError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
