"""Bytes from Kafka -> a validated event or profile, or the reason it is dead-lettered.

Pure functions: no broker, no clock. The time rule uses the record's own timestamp
(when it was produced), so a replay after a crash decides exactly as the first pass did.

Every message must first be strict JSON (RFC 8259: no NaN or Infinity, no duplicate
keys in an object, valid UTF-8, at most `MAX_MESSAGE_BYTES`), then match its pydantic
model (schemas/events.py). The models are the rules; `fast_event_fields` checks the
common shape (msgspec in C, then a few rules by hand) and accepts only what the model
accepts, with the same values (tests/test_validation_equivalence.py); it defers
everything else to the model, which also words every rejection. It is there for speed
(figures in docs/performance.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import UNSET, Meta, UnsetType
from orjson import JSONDecodeError as _JSONDecodeError
from orjson import loads as _loads
from pydantic import ValidationError

from schemas.events import (
    EVENT_MODELS,
    ID_PATTERN,
    MAX_COUNT,
    MAX_TS,
    DeadLetter,
    EventKind,
    Profile,
)
from streams.core.partitioner import partition_for_key

FUTURE_TOLERANCE_MS = 5 * 60_000
#: the largest event or profile message accepted (a real one is about 150 bytes)
MAX_MESSAGE_BYTES = 64 * 1024


#: (event_id, account_id, ts, count, campaign) of a valid event
EventFields = tuple[str, str, int, int, "str | None"]


@dataclass(slots=True)
class ValidEvent:
    """An event that passed every rule of contract §1 (Input topics): what the
    aggregation needs."""

    event_id: str
    account_id: str
    ts: int
    count: int
    campaign: str | None


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
    """The partition Kafka's default (murmur2) partitioner gives this key
    (tests/test_ingest.py::test_partition_for_matches_kafkas_default_partitioner)."""
    return partition_for_key(account_id.encode(), partitions)


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


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name, value in pairs:
        if name in seen:
            raise ValueError(f"duplicate key {name[:80]!r} in one object")
        seen[name] = value
    return seen


def _flat_and_unique(obj: dict[str, Any], value: bytes) -> bool:
    """True when `obj`, decoded from `value`, holds no object or array and `value` has
    no escape and no key twice (False says only: not shown this way).

    Flat, no escapes: every quote delimits a key or a string value, so the quotes in
    the bytes add up to those of the decoded object exactly when no key came twice.
    """
    quotes = 2 * len(obj)
    for item in obj.values():
        kind = type(item)
        if kind is str:
            quotes += 2
        elif kind is dict or kind is list:
            return False
    return b"\\" not in value and value.count(b'"') == quotes


def strict_json(value: bytes) -> Any:
    """Decode strict JSON; raises ValueError saying what is wrong with it."""
    if len(value) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message is {len(value)} bytes; at most {MAX_MESSAGE_BYTES} "
                         "are accepted")
    try:
        decoded = _loads(value)
    except _JSONDecodeError as exc:
        raise ValueError(f"not strict JSON: {exc}") from None
    if type(decoded) is dict and _flat_and_unique(decoded, value):
        return decoded
    try:
        json.loads(value, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    return decoded


#: verdicts on ids seen (a dict lookup is cheaper than an lru_cache call); cleared when
#: full, so that hostile ids cannot grow it
_ID_VERDICTS: dict[str, bool] = {}
ID_VERDICTS_MAX = 1 << 16


def _id(value: Any) -> bool:
    if type(value) is not str:
        return False
    verdict = _ID_VERDICTS.get(value)
    if verdict is None:
        if len(_ID_VERDICTS) >= ID_VERDICTS_MAX:
            _ID_VERDICTS.clear()
        verdict = _ID_VERDICTS[value] = ID_PATTERN.fullmatch(value) is not None
    return verdict


def _wire_decoder(kind: EventKind, count: Any) -> Callable[[bytes], Any]:
    """A msgspec decoder of one kind's events: the model's rules that msgspec states in C.

    Optional fields default to UNSET, so that the fields present are known (see
    `fast_event_fields`). Unknown fields are skipped unread: the quote count rules
    them out. The id charset is checked by `_id`, whose verdicts are cached.
    """
    wire = msgspec.defstruct(f"Wire{kind.title()}Event", [
        ("event_id", Annotated[str, Meta(min_length=1, max_length=64)]),
        ("account_id", str),
        ("ts", Annotated[int, Meta(ge=0, le=MAX_TS)]),
        ("count", count | UnsetType, UNSET),
        ("video_id", Annotated[str, Meta(max_length=64)] | None | UnsetType, UNSET),
        ("campaign", str | None | UnsetType, UNSET),
        ("kind", Literal[kind] | None | UnsetType, UNSET),
    ], frozen=True, gc=False)
    return msgspec.json.Decoder(wire).decode


#: quotes of an optional field, by the type of its decoded value: absent, null, a string
_QUOTES: dict[type, int] = {UnsetType: 0, type(None): 2, str: 4}
_SIGNED_COUNT = Annotated[int, Meta(ge=-MAX_COUNT, le=MAX_COUNT)]
_WIRE_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "view": _wire_decoder("view", Annotated[int, Meta(ge=1, le=MAX_COUNT)]),
    "like": _wire_decoder("like", _SIGNED_COUNT),
    "follow": _wire_decoder("follow", _SIGNED_COUNT),
    "upload": _wire_decoder("upload", Annotated[int, Meta(ge=1, le=1)]),
}


def fast_event_fields(kind: EventKind, value: bytes) -> EventFields | None:
    """(event_id, account_id, ts, count, campaign) of a message in the usual shape (an
    object of the model's fields only) that passes every rule; None to defer to
    `parse_event`.

    msgspec decodes and checks the fields in one C call (strict JSON, types, lengths,
    ranges, `kind`); the rest is by hand, and tests/test_validation_equivalence.py holds
    it to the model.
    Every quote in JSON delimits a string (a key or a value) or is escaped in one, so
    the quotes add up to those of the fields decoded (two per key, two per string
    value) exactly when no key is unknown or given twice and no quote is escaped:
    msgspec keeps the last of two equal keys and skips unknown ones unread.
    """
    if len(value) > MAX_MESSAGE_BYTES:
        return None
    try:
        event = _WIRE_DECODERS[kind](value)
    except (msgspec.DecodeError, ValueError, RecursionError):  # not UTF-8, nested deep
        return None
    count, campaign = event.count, event.campaign
    # (UNSET, None, a string): 0, 2 or 4 quotes
    quotes = 10 + _QUOTES[type(event.video_id)] + _QUOTES[type(event.kind)]
    if count is UNSET:
        count = 1
    else:
        quotes += 2
    if type(campaign) is str:
        if not _id(campaign):
            return None
        quotes += 4
    elif campaign is None:
        quotes += 2
    else:
        campaign = None
    account_id = event.account_id
    if count == 0 or not _id(account_id) or value.count(b'"') != quotes:
        return None
    return event.event_id, account_id, event.ts, count, campaign


def model_event(kind: EventKind, value: bytes) -> ValidEvent | Rejected:
    """The pydantic model's verdict on a message: the reference for `fast_event_fields`."""
    try:
        e = EVENT_MODELS[kind].model_validate_json(value)
    except ValidationError as exc:
        return Rejected(f"invalid {kind} event: {_reason(exc)}")
    return ValidEvent(e.event_id, e.account_id, e.ts, e.count,  # type: ignore[attr-defined]
                      e.campaign)


def parse_event(
    kind: EventKind,
    key: bytes | None,
    value: bytes | None,
    produced_ms: int | None = None,
) -> ValidEvent | Rejected:
    """Validate one event message of the given topic kind (contract §1, Input topics).

    `produced_ms` (the record timestamp) enables the future rule, under either clock: an
    event more than 5 minutes ahead of it is rejected.
    """
    if value is None:
        return Rejected("value is null: an event topic takes event JSON")
    fields = fast_event_fields(kind, value)
    if fields is not None:
        event: ValidEvent | Rejected = ValidEvent(*fields)
    else:
        try:
            strict_json(value)
        except ValueError as exc:
            return Rejected(f"invalid {kind} event: {exc}")
        event = model_event(kind, value)
    if isinstance(event, Rejected):
        return event
    if key is not None and key != event.account_id.encode():
        return _check_key(key, event.account_id) or Rejected("key does not match account_id")
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
        strict_json(value)
    except ValueError as exc:
        return Rejected(f"invalid profile: {exc}")
    try:
        profile = Profile.model_validate_json(value)
    except ValidationError as exc:
        return Rejected(f"invalid profile: {_reason(exc)}")
    return _check_key(key, profile.account_id) or profile


def dead_letter(reason: str, topic: str, partition: int, offset: int,
                value: bytes | None) -> bytes:
    """The dead-letter envelope of contract §1 (Input topics) as JSON bytes; `value` kept
    untouched (tests/test_ingest.py::test_dead_letter_keeps_the_value_untouched).

    UTF-8 text stays text; other bytes, and values over MAX_MESSAGE_BYTES (whose JSON
    escapes could take six bytes per byte), are base64: an envelope is at most 4/3 of
    its value plus the reason.
    """
    raw = value or b""
    text: str | None = None
    if len(raw) <= MAX_MESSAGE_BYTES:
        with contextlib.suppress(UnicodeDecodeError):
            text = raw.decode("utf-8")
    encoding = "utf-8" if text is not None else "base64"
    if text is None:
        text = base64.b64encode(raw).decode("ascii")
    letter = DeadLetter(reason=reason, topic=topic, partition=partition, offset=offset,
                        value=text, value_encoding=encoding)  # type: ignore[arg-type]
    return orjson.dumps(letter.model_dump())
