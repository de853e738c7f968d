"""Pydantic models of everything rankflow reads from or writes to Kafka, contract §1
(Input topics)."""

from schemas.events import (
    EVENT_KINDS,
    EVENT_MODELS,
    DeadLetter,
    Event,
    EventBase,
    FollowEvent,
    LikeEvent,
    Profile,
    UploadEvent,
    ViewEvent,
)

__all__ = [
    "EVENT_KINDS",
    "EVENT_MODELS",
    "DeadLetter",
    "Event",
    "EventBase",
    "FollowEvent",
    "LikeEvent",
    "Profile",
    "UploadEvent",
    "ViewEvent",
]
