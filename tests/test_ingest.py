"""Bytes to event, profile, tombstone or reason; the dead-letter envelope."""

import base64

import orjson

from schemas.events import Profile
from streams.core.ingest import (
    Rejected,
    Tombstone,
    ValidEvent,
    dead_letter,
    parse_event,
    parse_profile,
    partition_for,
)


def test_a_good_event_with_and_without_a_key():
    raw = orjson.dumps({"event_id": "1", "account_id": "a", "ts": 5})
    assert parse_event("view", b"a", raw) == ValidEvent("1", "a", 5, 1, None)
    assert parse_event("view", None, raw) == ValidEvent("1", "a", 5, 1, None)


def test_reasons_name_the_field():
    raw = orjson.dumps({"event_id": "1", "account_id": "a", "ts": 5, "count": 0})
    rejected = parse_event("view", b"a", raw)
    assert isinstance(rejected, Rejected)
    assert rejected.reason.startswith("invalid view event: count:")


def test_key_must_match_and_be_utf8():
    raw = orjson.dumps({"event_id": "1", "account_id": "a", "ts": 5})
    assert "does not match" in parse_event("view", b"b", raw).reason
    assert "UTF-8" in parse_event("view", b"\xff", raw).reason


def test_future_rule_uses_the_record_time():
    raw = orjson.dumps({"event_id": "1", "account_id": "a", "ts": 400_001})
    assert isinstance(parse_event("view", b"a", raw, produced_ms=100_000), Rejected)
    assert isinstance(parse_event("view", b"a", raw, produced_ms=100_001), ValidEvent)
    assert isinstance(parse_event("view", b"a", raw, produced_ms=None), ValidEvent)


def test_profiles_and_tombstones():
    raw = orjson.dumps({"account_id": "a", "name": "n", "category": "c", "fans": 1})
    assert isinstance(parse_profile(b"a", raw), Profile)
    assert parse_profile(b"a", None) == Tombstone("a")
    assert isinstance(parse_profile(None, None), Rejected)
    assert isinstance(parse_profile(b"bad key", None), Rejected)
    assert isinstance(parse_profile(b"b", raw), Rejected)


def test_dead_letter_keeps_the_value_untouched():
    text = orjson.loads(dead_letter("r", "events.view", 3, 9, "快手 {".encode()))
    assert text == {"reason": "r", "topic": "events.view", "partition": 3, "offset": 9,
                    "value": "快手 {", "value_encoding": "utf-8"}
    binary = orjson.loads(dead_letter("r", "t", 0, 0, b"\xff\xfe"))
    assert binary["value_encoding"] == "base64"
    assert base64.b64decode(binary["value"]) == b"\xff\xfe"
    assert orjson.loads(dead_letter("r", "t", 0, 0, None))["value"] == ""


def test_partition_for_matches_kafkas_default_partitioner():
    # murmur2 values from the Java client's test vectors / Kafka's DefaultPartitioner
    from aiokafka.partitioner import DefaultPartitioner

    for key in ("a", "central.00001", "police.00999", "x" * 64):
        expected = DefaultPartitioner()(key.encode(), list(range(8)), list(range(8)))
        assert partition_for(key, 8) == expected


def test_only_strict_json_is_accepted():
    base = b'{"event_id":"1","account_id":"a","ts":5'
    cases = {
        base + b',"x":NaN}': "not strict JSON",
        base + b',"x":-Infinity}': "not strict JSON",
        base + b',"ts":6}': "duplicate key 'ts'",
        base + b',"t\\u0073":6}': "duplicate key 'ts'",
        base + b',"x":{"y":1,"y":2}}': "duplicate key 'y'",
        b"[" * 2000 + b"]" * 2000: "not strict JSON",
        base + b',"x":"\xff"}': "not strict JSON",
        base + b',"x":' + b"9" * 5000 + b"}": "invalid view event",
        base + b',"x":"' + b"a" * 70_000 + b'"}': "at most 65536",
    }
    for raw, reason in cases.items():
        rejected = parse_event("view", b"a", raw)
        assert isinstance(rejected, Rejected), raw[:60]
        assert reason in rejected.reason, (raw[:60], rejected.reason)
    profile = b'{"account_id":"a","name":"n","category":"c","fans":1,"fans":2}'
    assert "duplicate key 'fans'" in parse_profile(b"a", profile).reason  # type: ignore[union-attr]


def test_an_oversized_value_is_kept_whole_as_base64():
    value = b"\x01" * 1_048_576
    letter = orjson.loads(dead_letter("too big", "events.view", 0, 1, value))
    assert letter["value_encoding"] == "base64"
    assert base64.b64decode(letter["value"]) == value
