"""Bytes from Kafka -> a validated event or profile, or the reason it is dead-lettered.

Pure functions: no broker, no clock. The time rule uses the record's own timestamp
(when it was produced), so a replay after a crash decides exactly as the first pass did.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import lru_cache

import orjson
from aiokafka.partitioner import murmur2
from pydantic import ValidationError

from schemas.events import EVENT_MODELS, ID_PATTERN, DeadLetter, EventBase, EventKind, Profile

FUTURE_TOLERANCE_MS = 5 * 60_000


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that cannot be used, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A null profile: the account leaves every board until a new profile arrives."""

    account_id: str


@lru_cache(maxsize=1 << 20)
def partition_for(account_id: str, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives this key."""
    return (murmur2(account_id.encode()) & 0x7FFFFFFF) % partitions


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


def _check_key(key: bytes | None, account_id: str) -> Rejected | None:
    if key is None:
        return None
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return Rejected("key is not valid UTF-8")
    if text != account_id:
        return Rejected(f"key {text[:80]!r} does not match account_id {account_id!r}")
    return None


def parse_event(
    kind: EventKind,
    key: bytes | None,
    value: bytes | None,
    produced_ms: int | None = None,
) -> EventBase | Rejected:
    """Validate one event message of the given topic kind (contract §1).

    `produced_ms` (the record timestamp) enables the wall-clock rule: an event more
    than 5 minutes ahead of it is rejected.
    """
    if value is None:
        return Rejected("value is null: an event topic takes event JSON")
    try:
        event = EVENT_MODELS[kind].model_validate_json(value)
    except ValidationError as exc:
        return Rejected(f"invalid {kind} event: {_reason(exc)}")
    bad_key = _check_key(key, event.account_id)
    if bad_key is not None:
        return bad_key
    if produced_ms is not None and event.ts > produced_ms + FUTURE_TOLERANCE_MS:
        return Rejected(
            f"ts {event.ts} is more than 5 minutes after the time it was produced ({produced_ms})"
        )
    return event


def parse_profile(key: bytes | None, value: bytes | None) -> Profile | Tombstone | Rejected:
    """Validate one message of the compacted `accounts` topic."""
    if value is None:
        if key is None:
            return Rejected("tombstone without a key names no account")
        try:
            account_id = key.decode()
        except UnicodeDecodeError:
            return Rejected("key is not valid UTF-8")
        if not ID_PATTERN.fullmatch(account_id):
            return Rejected(f"tombstone key {account_id[:80]!r} is not a valid account_id")
        return Tombstone(account_id)
    try:
        profile = Profile.model_validate_json(value)
    except ValidationError as exc:
        return Rejected(f"invalid profile: {_reason(exc)}")
    return _check_key(key, profile.account_id) or profile


def dead_letter(reason: str, topic: str, partition: int, offset: int,
                value: bytes | None) -> bytes:
    """The dead-letter envelope (contract §1) as JSON bytes; `value` kept untouched."""
    raw = value or b""
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    letter = DeadLetter(reason=reason, topic=topic, partition=partition, offset=offset,
                        value=text, value_encoding=encoding)  # type: ignore[arg-type]
    return orjson.dumps(letter.model_dump())
