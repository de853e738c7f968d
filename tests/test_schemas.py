"""Every rule of contract §1, accepted and rejected, on the pydantic models."""

import json

import pytest
from pydantic import ValidationError

from schemas.events import EVENT_MODELS, DeadLetter, Profile
from schemas.jsonschema import SCHEMA_DIR, render_schemas


def event(**fields):
    base = {"event_id": "e-1", "account_id": "acct_1", "ts": 1_700_000_000_000}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def valid(kind, raw):
    return EVENT_MODELS[kind].model_validate_json(raw)


def invalid(kind, raw):
    with pytest.raises(ValidationError):
        EVENT_MODELS[kind].model_validate_json(raw)


@pytest.mark.parametrize("kind", ["view", "like", "follow", "upload"])
def test_minimal_event_defaults(kind):
    parsed = valid(kind, event())
    assert parsed.count == 1
    assert parsed.video_id is None and parsed.campaign is None and parsed.kind is None


@pytest.mark.parametrize("event_id,ok", [("x", True), ("x" * 64, True), ("", False),
                                         ("x" * 65, False), ("any chars: 快 !", True)])
def test_event_id_length(event_id, ok):
    (valid if ok else invalid)("view", event(event_id=event_id))


@pytest.mark.parametrize("account_id,ok", [
    ("a", True), ("A-z_0.9", True), ("x" * 64, True), ("x" * 65, False), ("", False),
    ("has space", False), ("a:b", False), ("a{b}", False), ("快手", False), ("a\n", False),
    ("a*", False),
])
def test_account_id_charset(account_id, ok):
    (valid if ok else invalid)("like", event(account_id=account_id))


@pytest.mark.parametrize("ts,ok", [(0, True), (1_700_000_000_000, True), (-1, False),
                                   ("1700000000000", False), (1.5, False), (1e12, False),
                                   (True, False), (None, False), (10**13, False)])
def test_ts_is_an_integer(ts, ok):
    (valid if ok else invalid)("view", event(ts=ts))


def test_ts_is_required():
    invalid("view", json.dumps({"event_id": "e", "account_id": "a"}))


@pytest.mark.parametrize("kind,count,ok", [
    ("view", 1, True), ("view", 1_000_000, True), ("view", 0, False), ("view", -1, False),
    ("view", 1_000_001, False),
    ("like", -1, True), ("like", -1_000_000, True), ("like", 0, False),
    ("like", 1_000_001, False), ("like", -1_000_001, False),
    ("follow", -5, True), ("follow", 0, False), ("follow", 2, True),
    ("upload", 1, True), ("upload", 2, False), ("upload", 0, False), ("upload", -1, False),
    ("view", "3", False), ("view", 2.0, False), ("upload", True, False), ("like", None, False),
])
def test_count_rules_per_kind(kind, count, ok):
    (valid if ok else invalid)(kind, event(count=count))


@pytest.mark.parametrize("video_id,ok", [(None, True), ("v" * 64, True), ("v" * 65, False),
                                         (7, False)])
def test_video_id(video_id, ok):
    (valid if ok else invalid)("view", event(video_id=video_id))


@pytest.mark.parametrize("campaign,ok", [(None, True), ("dagong-jiangren", True),
                                         ("bad tag", False), ("", False), ("#tag", False)])
def test_campaign_charset(campaign, ok):
    (valid if ok else invalid)("view", event(campaign=campaign))


@pytest.mark.parametrize("topic_kind", ["view", "like", "follow", "upload"])
@pytest.mark.parametrize("claimed", ["view", "like", "follow", "upload"])
def test_kind_must_match_topic(topic_kind, claimed):
    (valid if claimed == topic_kind else invalid)(topic_kind, event(kind=claimed))


def test_unknown_kind_and_extra_fields():
    invalid("view", event(kind="share"))
    assert valid("view", event(extra={"x": 1}, other=3)).account_id == "acct_1"


@pytest.mark.parametrize("raw", [b"", b"null", b"[]", b"{}", b"not json", b"\xff\xfe",
                                 b'"string"', b"1"])
def test_not_an_event_object(raw):
    invalid("view", raw)


def profile(**fields):
    base = {"account_id": "acct_1", "name": "中国长安网", "category": "central", "fans": 10}
    base.update(fields)
    return json.dumps(base)


@pytest.mark.parametrize("fields,ok", [
    ({}, True), ({"name": "x" * 128}, True), ({"name": "x" * 129}, False),
    ({"name": ""}, True), ({"fans": 0}, True), ({"fans": -1}, False), ({"fans": "1"}, False),
    ({"category": "police"}, True), ({"category": "bad cat"}, False),
    ({"category": ""}, False), ({"account_id": "no way"}, False), ({"name": None}, False),
])
def test_profile_rules(fields, ok):
    if ok:
        assert Profile.model_validate_json(profile(**fields)).account_id == "acct_1"
    else:
        with pytest.raises(ValidationError):
            Profile.model_validate_json(profile(**fields))


def test_dead_letter_envelope_fields():
    letter = DeadLetter(reason="r", topic="events.view", partition=1, offset=2, value="x",
                        value_encoding="utf-8")
    assert set(letter.model_dump()) == {"reason", "topic", "partition", "offset", "value",
                                        "value_encoding"}
    with pytest.raises(ValidationError):
        DeadLetter(reason="r", topic="t", partition=1, offset=2, value="x",
                   value_encoding="latin-1")


def test_json_schemas_in_repo_are_current():
    """`rankflow schemas` writes them; producers read them from schemas/json/."""
    for name, text in render_schemas().items():
        assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run `rankflow schemas`")
