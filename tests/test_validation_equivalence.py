"""The hand-written event check accepts exactly what the pydantic models accept.

`streams.ingest.fast_event_fields` skips pydantic for the usual (flat) event shape. These properties
hold it to the models (schemas/events.py): whenever it accepts a message, the model
accepts it too, with the same values; and for every message, `parse_event` decides as
"strict JSON, then the model" does. Typical events must take the fast path.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.events import EVENT_KINDS, MAX_COUNT, MAX_TS
from streams.core.ingest import (
    Rejected,
    ValidEvent,
    fast_event_fields,
    model_event,
    parse_event,
    strict_json,
)

kinds = st.sampled_from(EVENT_KINDS)
ids = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
#: near-misses of every rule, next to the values that pass it
edgy_ints = st.one_of(
    st.integers(-3, 3), st.sampled_from([MAX_COUNT, MAX_COUNT + 1, -MAX_COUNT, -MAX_COUNT - 1,
                                         MAX_TS, MAX_TS + 1, 2**63, 2**64, -(2**63)]),
    st.integers(-(2**70), 2**70))
scalars = st.one_of(st.none(), st.booleans(), edgy_ints,
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=70))
ids_or_not = st.one_of(ids, st.text(max_size=70), ids.map(lambda s: s + "\n"),
                       st.just(""), scalars)
fields = {
    "event_id": st.one_of(st.text(min_size=1, max_size=64), st.text(max_size=70), scalars),
    "account_id": ids_or_not,
    "ts": st.one_of(st.integers(0, MAX_TS), edgy_ints, scalars),
    "count": st.one_of(edgy_ints, scalars),
    "kind": st.one_of(kinds, st.none(), st.text(max_size=8), scalars),
    "campaign": st.one_of(st.none(), ids_or_not),
    "video_id": st.one_of(st.none(), st.text(max_size=70), scalars),
}
extra = st.dictionaries(st.text(max_size=10), st.one_of(
    scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars,
                                                              max_size=2)), max_size=3)


@st.composite
def event_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj = {name: draw(strategy) for name, strategy in fields.items()
           if draw(st.booleans()) or name in ("event_id", "account_id", "ts")}
    if draw(st.booleans()):
        obj = {**draw(extra), **obj}
    return obj


def encode(obj: Any, style: int) -> bytes:
    """The same object as different producers write it."""
    if style == 0:
        return orjson.dumps(obj)
    if style == 1:
        return json.dumps(obj, indent=1).encode()
    return json.dumps(obj, ensure_ascii=True, separators=(", ", " : ")).encode()


def reference(kind: str, raw: bytes) -> ValidEvent | Rejected:
    """What the rules say, with no fast path: strict JSON, then the pydantic model."""
    try:
        strict_json(raw)
    except ValueError as exc:
        return Rejected(str(exc))
    return model_event(kind, raw)  # type: ignore[arg-type]


def same_verdict(a: ValidEvent | Rejected, b: ValidEvent | Rejected) -> bool:
    if isinstance(a, Rejected) or isinstance(b, Rejected):
        return isinstance(a, Rejected) and isinstance(b, Rejected)
    return a == b


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds, event_objects(), st.integers(0, 2))
@example("like", {"event_id": "e", "account_id": "a", "ts": 1, "count": True}, 0)
@example("view", {"event_id": "e", "account_id": "a", "ts": 1.0}, 0)
@example("upload", {"event_id": "e", "account_id": "a\n", "ts": 1}, 1)
def test_fast_path_accepts_only_what_the_model_accepts(kind: str, obj: dict[str, Any],
                                                       style: int) -> None:
    try:
        raw = encode(obj, style)
    except (TypeError, ValueError):  # orjson refuses ints beyond 64 bits
        raw = json.dumps(obj).encode()
    fast = fast_event_fields(kind, raw)  # type: ignore[arg-type]
    if fast is not None:
        assert model_event(kind, raw) == ValidEvent(*fast)  # type: ignore[arg-type]
    assert same_verdict(parse_event(kind, None, raw), reference(kind, raw))  # type: ignore[arg-type]


@settings(max_examples=2000, deadline=None)
@given(kinds, event_objects(), st.binary(max_size=4), st.integers(0, 300))
def test_mutated_bytes_get_the_same_verdict(kind: str, obj: dict[str, Any], junk: bytes,
                                            at: int) -> None:
    raw = json.dumps(obj).encode()
    at = min(at, len(raw))
    mutated = raw[:at] + junk + raw[at + len(junk) // 2:]
    fast = fast_event_fields(kind, mutated)  # type: ignore[arg-type]
    if fast is not None:
        assert reference(kind, mutated) == ValidEvent(*fast)
    assert same_verdict(parse_event(kind, None, mutated), reference(kind, mutated))  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(kinds, ids, st.integers(0, MAX_TS), st.integers(1, MAX_COUNT), st.none() | ids,
       st.text(st.characters(exclude_characters='"\\', exclude_categories=("Cc", "Cs")),
               min_size=1, max_size=64), st.booleans())
def test_typical_events_take_the_fast_path(kind: str, account: str, ts: int, count: int,
                                           campaign: str | None, event_id: str,
                                           with_kind: bool) -> None:
    count = 1 if kind == "upload" else count
    obj = {"event_id": event_id, "account_id": account, "ts": ts, "count": count,
           "campaign": campaign, "video_id": "v1"}
    if with_kind:
        obj["kind"] = kind
    raw = orjson.dumps(obj)
    fast = fast_event_fields(kind, raw)  # type: ignore[arg-type]
    assert fast == (event_id, account, ts, count, campaign)
    assert model_event(kind, raw) == ValidEvent(*fast)  # type: ignore[arg-type]


def test_shapes_the_fast_path_defers_get_the_models_verdict() -> None:
    """msgspec keeps the last of two equal keys and skips unknown fields unread, and an
    escaped quote adds one: the quote count sends each to the model."""
    twice = b'{"event_id":"e1","account_id":"a","ts":1,"campaign":"c","campaign":null}'
    unknown = b'{"event_id":"e1","account_id":"a","ts":1,"x":"\\u00e9","y":[1,{"z":2}]}'
    not_strict = b'{"event_id":"e1","account_id":"a","ts":1,"x":1e999}'
    quoted = b'{"event_id":"e1","account_id":"a","ts":1,"video_id":"say \\"hi\\""}'
    for raw, accepted in ((twice, False), (unknown, True), (not_strict, False),
                          (quoted, True)):
        assert fast_event_fields("view", raw) is None
        verdict = parse_event("view", None, raw)
        assert isinstance(verdict, ValidEvent) is accepted, (raw, verdict)
        assert same_verdict(verdict, reference("view", raw))


def test_escapes_take_the_fast_path_with_the_models_values() -> None:
    raw = b'{"event_id":"\\u00e9t\\u00e9\\n","account_id":"a","ts":1,"video_id":"\\ud83d\\ude00"}'
    assert fast_event_fields("view", raw) == ("\u00e9t\u00e9\n", "a", 1, 1, None)
    assert model_event("view", raw) == ValidEvent("\u00e9t\u00e9\n", "a", 1, 1, None)
