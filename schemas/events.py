"""The wire models of contract §1 (Input topics): events, account profiles and dead-letter
envelopes.

One model per event kind, so each carries its own `count` rule and `kind` literal and
its JSON Schema says exactly what that topic accepts. Models are strict: a JSON string
is never coerced into an integer, nor a float into an integer (tests/test_schemas.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_COUNT = 1_000_000
#: Event times are epoch milliseconds; the bound (year 2286) keeps bucket arithmetic sane.
MAX_TS = 9_999_999_999_999

Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN.pattern)]
EventKind = Literal["view", "like", "follow", "upload"]
EVENT_KINDS: tuple[EventKind, ...] = ("view", "like", "follow", "upload")

_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)


class EventBase(BaseModel):
    """Fields shared by every event kind."""

    model_config = _STRICT

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    account_id: Identifier
    ts: Annotated[int, Field(ge=0, le=MAX_TS)]
    video_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    campaign: Identifier | None = None


class ViewEvent(EventBase):
    """Plays of an account's videos; an edge may pre-aggregate plays (count >= 1)."""

    kind: Literal["view"] | None = None
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 1


class LikeEvent(EventBase):
    """Likes; a negative count is an unlike."""

    kind: Literal["like"] | None = None
    count: Annotated[int, Field(ge=-MAX_COUNT, le=MAX_COUNT)] = 1

    @field_validator("count")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("count must not be 0")
        return value


class FollowEvent(LikeEvent):
    """Follows; a negative count is an unfollow."""

    kind: Literal["follow"] | None = None  # type: ignore[assignment]


class UploadEvent(EventBase):
    """A new video (a "work"): always exactly one."""

    kind: Literal["upload"] | None = None
    count: Annotated[int, Field(ge=1, le=1)] = 1


Event = ViewEvent | LikeEvent | FollowEvent | UploadEvent

EVENT_MODELS: dict[EventKind, type[EventBase]] = {
    "view": ViewEvent,
    "like": LikeEvent,
    "follow": FollowEvent,
    "upload": UploadEvent,
}


class Profile(BaseModel):
    """An account's profile on the compacted `accounts` topic."""

    model_config = _STRICT

    account_id: Identifier
    name: Annotated[str, StringConstraints(max_length=128)]
    category: Identifier
    fans: Annotated[int, Field(ge=0, le=2**53)]


class DeadLetter(BaseModel):
    """What `events.dlq` carries for a message that could not be used."""

    model_config = ConfigDict(strict=True, frozen=True)

    reason: str
    topic: str
    partition: int
    offset: int
    value: str
    value_encoding: Literal["utf-8", "base64"]


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "event.view": ViewEvent,
    "event.like": LikeEvent,
    "event.follow": FollowEvent,
    "event.upload": UploadEvent,
    "profile": Profile,
    "dead-letter": DeadLetter,
}
