"""Hostile input through the pure core (issue #6, item 4): fuzzing `BatchAggregator.process`.

Every input topic (events.view/like/follow/upload, accounts, and the internal re-keyed
topic with random headers) gets at least 100,000 random and mutated messages: a seeded
`random.Random` mutator supplies the volume, hypothesis the structure-aware shapes.

An independent reference (the stdlib `json` module and the rules of contract §1, written
out again here, not imported from streams/) predicts what must become of each message:
counted, dead-lettered, re-keyed, a duplicate dead letter, or (re-keyed copies of one
source message) a replay that changes nothing. The test checks that the core agrees
message by message, that every dead letter is a contract envelope with a reason and the
value as received, that `counted + dead_lettered + rekeyed == messages`, that the
accounts' sums are exactly those of the counted events (nothing lost, nothing counted
twice), that replaying a batch at the same offsets sends and counts nothing again, and
that no id outside `[A-Za-z0-9_.-]` reaches the state (and so a Redis key).
The counts go to tests/artifacts/fuzz.json.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import DeadLetter
from streams.core.aggregate import KIND_HEADER, ORIGIN_HEADER, BatchAggregator, new_runtime
from streams.core.dedup import RecentEventIds
from streams.core.ingest import Rejected, model_event, parse_event, parse_profile
from streams.core.state import AccountProfile, AccountState
from streams.core.topics import Topics
from streams.core.windows import Windows
from streams.sink.keys import RedisKeys

ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "fuzz.json"
NOW = 1_700_000_000_000
DAY = 86_400_000
PARTITIONS = 8
TOPICS = Topics()
DLQ, REKEYED, ACCOUNTS = TOPICS.dlq, TOPICS.rekeyed, TOPICS.accounts
KINDS = ("view", "like", "follow", "upload")
LABELS = (*KINDS, "accounts", "rekeyed")
TOPIC_OF = {**{k: TOPICS.event(k) for k in KINDS}, "accounts": ACCOUNTS,
            "rekeyed": REKEYED}
KIND_OF_TOPIC = {TOPICS.event(k): k for k in KINDS}
#: messages per input topic in the volume run (the contract asks for at least 100,000)
VOLUME_PER_TOPIC = 100_000
ROUND = 2_500
#: the share of each volume batch's partitions that is re-delivered and must change nothing
REPLAY_SHARE = 0.25

# --- the contract's rules, restated (independent of streams/ and schemas/) ----------------

MAX_BYTES = 64 * 1024
MAX_COUNT = 1_000_000
MAX_TS = 9_999_999_999_999
MAX_FANS = 2**53
FUTURE_MS = 5 * 60_000
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
MISSING = object()

VALID_ACCOUNTS = ("a", "b", "acct", "A-1", "x.y_z", "police.00042", "media.7", "Z" * 64,
                  "0", "_", ".", "-", "9.9-9_9", *(f"u{i}" for i in range(40)))
CAMPAIGNS = ("c1", "safe-driving", "youth.day", "X_2")
CATEGORIES = ("police", "media", "central", "youth-league")
#: ids that would break a Redis key (or a naive check) if they got through
HOSTILE_IDS = ("a:b", "a*", "a b", "{a}", "a\nb", "a\n", "\na", "a\r", "a\t", "a\x00", "é",
               "你好", "a/b", "a?", "[a]", "rf:acct:x", "*", ":", " ", "", "\u200ba",
               "ａ", "a\u2028", "Z" * 65, "A" * 1000, "a'b", 'a"b', "a\\b", "a%2F", "😀")


def is_id(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= 64 and not value.strip(ID_CHARS)


@lru_cache(maxsize=1 << 16)
def home(account_id: str) -> int:
    """The partition Kafka's default partitioner gives this key."""
    return (murmur2(account_id.encode()) & 0x7FFFFFFF) % PARTITIONS


class Bad(Exception):
    """The reference rejects the JSON."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise Bad("duplicate key")
        obj[name] = value
    return obj


def _constant(name: str) -> Any:
    raise Bad(f"{name} is not JSON")


def _float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise Bad("number out of range")
    return number


def _int(text: str) -> int:
    if len(text) > 4000:
        raise Bad("number out of range")
    number = int(text)
    if len(text) > 300:
        try:
            float(number)
        except OverflowError:
            raise Bad("number out of range") from None
    return number


STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
#: brackets to steps of the nesting depth, everything else dropped
BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\x02\x02")
NOT_BRACKETS = bytes(set(range(256)) - set(b"[{]}"))
STEP = (0, 1, -1)
#: numbers that may overflow a double: only these take the slower checking decoder
LONG_NUMBER = re.compile(rb"\d{300}|[eE][+]?0*\d{3}")
SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")
SURROGATES = re.compile("[\ud800-\udfff]")


def _depth(value: bytes) -> int:
    """The deepest nesting of arrays and objects (outside strings)."""
    steps = STRINGS.sub(b"", value).translate(BRACKETS, NOT_BRACKETS)
    return max(accumulate(map(STEP.__getitem__, steps)), default=0)


def reference_json(value: bytes) -> tuple[str, Any]:
    """('ok', obj), ('bad', why) or ('unsure', obj): strict JSON per RFC 8259 and §1.

    'unsure' is nesting deeper than 200 (up to orjson's 1024): the contract sets no depth
    limit, but pydantic's JSON parser stops at 201 levels and the stdlib's at its recursion
    limit, so a dead letter is then as right as accepting the message.
    """
    if len(value) > MAX_BYTES:
        return "bad", "size"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "bad", "utf-8"
    depth = 0
    if value.count(b"[") + value.count(b"{") > 190:
        depth = _depth(value)
        if depth > 1024:
            return "bad", "depth"
    decoder = CHECKING_DECODER if LONG_NUMBER.search(value) else DECODER
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4000))
    try:
        obj = decoder.decode(text)
    except Bad as exc:
        return "bad", str(exc)
    except ValueError:
        return "bad", "syntax"
    finally:
        sys.setrecursionlimit(limit)
    if SURROGATE_ESCAPE.search(value) and _has_lone_surrogate(obj):
        return "bad", "lone surrogate"
    return ("unsure" if depth > 200 else "ok"), obj


DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)
CHECKING_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant,
                                    parse_float=_float, parse_int=_int)


def _has_lone_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if SURROGATES.search(item):
                return True
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False


def check_key(key: bytes | None, account_id: str) -> str | None:
    if key is None:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return "key"
    return None if text == account_id else "key"


def reference_event(kind: str, obj: Any, key: bytes | None, produced: int
                    ) -> tuple[str, Any]:
    """('ok', (event_id, account_id, ts, count, campaign)) or ('bad', why)."""
    if type(obj) is not dict:
        return "bad", "schema"
    event_id, account_id, ts = obj.get("event_id"), obj.get("account_id"), obj.get("ts")
    count, campaign = obj.get("count", 1), obj.get("campaign")
    video_id, kind_field = obj.get("video_id"), obj.get("kind")
    if not (type(event_id) is str and 1 <= len(event_id) <= 64 and is_id(account_id)
            and type(ts) is int and 0 <= ts <= MAX_TS and type(count) is int
            and (campaign is None or is_id(campaign))
            and (video_id is None or (type(video_id) is str and len(video_id) <= 64))
            and kind_field in (None, kind)):
        return "bad", "schema"
    if kind == "view":
        ok = 1 <= count <= MAX_COUNT
    elif kind == "upload":
        ok = count == 1
    else:
        ok = count != 0 and abs(count) <= MAX_COUNT
    if not ok:
        return "bad", "schema"
    if check_key(key, account_id):
        return "bad", "key"
    if ts > produced + FUTURE_MS:
        return "bad", "future"
    return "ok", (event_id, account_id, ts, count, campaign)


def reference_profile(obj: Any, key: bytes | None) -> tuple[str, Any]:
    """('ok', (account_id, AccountProfile)) or ('bad', why)."""
    if type(obj) is not dict:
        return "bad", "schema"
    account_id, name = obj.get("account_id"), obj.get("name", MISSING)
    category, fans = obj.get("category"), obj.get("fans")
    if not (is_id(account_id) and type(name) is str and len(name) <= 128 and is_id(category)
            and type(fans) is int and 0 <= fans <= MAX_FANS):
        return "bad", "schema"
    if check_key(key, account_id):
        return "bad", "key"
    return "ok", (account_id, AccountProfile(name, category, fans))


ENVELOPE_FIELDS = set(DeadLetter.model_fields)
#: what a dead letter's reason must say, per reason the reference found
REASON_HINTS = {
    "size": ("at most 65536",),
    "utf-8": ("not strict JSON",),
    "depth": ("not strict JSON", "recursion"),
    "json": ("not strict JSON", "duplicate key", "recursion"),
    "schema": ("invalid ",),
    "key": ("key",),
    "future": ("more than 5 minutes",),
    "null": ("value is null",),
    "tombstone": ("tombstone",),
    "duplicate": ("duplicate event_id",),
    "misplaced": ("wrong partition",),
    "header": (KIND_HEADER,),
    "origin": (ORIGIN_HEADER,),
    "unsure": ("",),
}

# --- records, the harness, the ledger ----------------------------------------------------


@dataclass(slots=True)
class Rec:
    """A Kafka record as the core sees it, plus which input it stands for."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: list[tuple[str, bytes]]
    label: str
    origin: tuple[str, int, int] | None = None
    #: the decoded value when the generator knows it (valid JSON it serialized itself)
    known: Any = None


@dataclass(slots=True)
class Message:
    """A message before it is given an offset: its topic label, key, value, placement."""

    label: str
    key: bytes | None
    value: bytes | None
    partition: int
    timestamp: int = NOW
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    known: Any = None


@dataclass(slots=True)
class Expect:
    outcome: str  # count | profile | dlq | rekey | replay
    why: str = ""
    event: tuple[Any, ...] | None = None
    kind: str = ""
    account: str = ""
    profile: AccountProfile | None = None
    origin_key: str | None = None
    dlq_coords: tuple[str, int, int] | None = None


def fingerprint(state: AccountState) -> tuple[Any, ...]:
    return (bytes(state.counts.data), state.follows, state.profile, state.profile_seen,
            tuple((c, bytes(w.data)) for c, w in sorted(state.campaigns.items())),
            bytes(state.applied))


class Harness:
    """A BatchAggregator over in-memory state, fed batches; the reference judges each record."""

    def __init__(self) -> None:
        self.accounts: dict[str, AccountState] = {}
        self.runtimes = {p: new_runtime(p, RecentEventIds()) for p in range(PARTITIONS)}
        self.aggregator = BatchAggregator(TOPICS, Windows(), PARTITIONS, self.accounts,
                                          self.runtimes)
        self.offsets: Counter[tuple[str, int]] = Counter()
        # reference state
        self.ids: list[dict[str, int]] = [{} for _ in range(PARTITIONS)]
        self.origins: list[dict[str, int]] = [{} for _ in range(PARTITIONS)]
        self.sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        self.campaign_sums: dict[tuple[str, str], list[int]] = defaultdict(
            lambda: [0, 0, 0, 0])
        self.profiles: dict[str, AccountProfile | None] = {}
        self.touched: set[str] = set()
        # the ledger
        self.stats: dict[str, Counter[str]] = defaultdict(Counter)
        self.replay_counted = 0
        self.replayed = 0
        self.replay_sent = 0
        self.pending_rekeyed: list[Rec] = []

    # building batches

    def batch(self, messages: list[Message], rng: random.Random | None = None
              ) -> dict[tuple[str, int], list[Rec]]:
        batch: dict[tuple[str, int], list[Rec]] = {}
        for rec in self.pending_rekeyed:
            self._append(batch, rec)
        self.pending_rekeyed = []
        for m in messages:
            topic = TOPIC_OF[m.label]
            rec = Rec(topic, m.partition, 0, m.key, m.value, m.timestamp, m.headers, m.label,
                      known=m.known)
            if m.label == "rekeyed":
                rec.origin = parse_origin(m.headers)
            self._append(batch, rec)
        if rng is not None:
            items = list(batch.items())
            rng.shuffle(items)
            batch = dict(items)
        return batch

    def _append(self, batch: dict[tuple[str, int], list[Rec]], rec: Rec) -> None:
        tp = (rec.topic, rec.partition)
        rec.offset = self.offsets[tp]
        self.offsets[tp] += 1
        batch.setdefault(tp, []).append(rec)

    # running one batch and checking it

    def run(self, batch: dict[tuple[str, int], list[Rec]], replay: float = 1.0,
            rng: random.Random | None = None) -> None:
        """Process a batch, check every record's fate, then replay (a share of) it."""
        result = self.aggregator.process(batch, NOW)
        #: dead letters by the coordinates they name (two re-keyed copies of one source
        #: message may both be dead-lettered under its coordinates)
        letters: dict[tuple[str, int, int], list[tuple[Any, dict[str, Any]]]] = {}
        rekeys: dict[tuple[str, int, int], Any] = {}
        for out in result.outbound:
            if out.topic == DLQ:
                letter = orjson.loads(out.value)
                coords = (letter["topic"], letter["partition"], letter["offset"])
                letters.setdefault(coords, []).append((out, letter))
            else:
                assert out.topic == REKEYED, out
                origin = parse_origin(list(out.headers))
                assert origin is not None and origin not in rekeys, out
                rekeys[origin] = out
        counted = 0
        for records in batch.values():
            for rec in records:
                counted += self._settle(rec, letters, rekeys)
        assert not letters, f"dead letters for no message of the batch: {list(letters)[:3]}"
        assert not rekeys, f"re-keyed copies of no message of the batch: {list(rekeys)[:3]}"
        assert result.counted == counted, (result.counted, counted)
        assert result.dead_lettered == sum(
            1 for out in result.outbound if out.topic == DLQ)
        if replay < 1.0:
            # a crash of the worker that owns some of the partitions: those are re-delivered
            assert rng is not None
            batch = {tp: records for tp, records in batch.items() if rng.random() < replay}
        self.replay(batch, result.accounts)

    def replay(self, batch: dict[tuple[str, int], list[Rec]], touched: dict[str, Any]) -> None:
        """The same records again at the same offsets (a crash before the commit)."""
        before = {a: fingerprint(s) for a, s in self.accounts.items() if a in touched}
        headers = [(r.progress.events, r.progress.dlq) for r in self.runtimes.values()]
        again = self.aggregator.process(batch, NOW)
        self.replayed += sum(len(records) for records in batch.values())
        self.replay_counted += again.counted
        self.replay_sent += len(again.outbound)
        assert again.outbound == [] and again.counted == 0 and again.dead_lettered == 0
        assert {a: fingerprint(self.accounts[a]) for a in before} == before
        assert [(r.progress.events, r.progress.dlq) for r in self.runtimes.values()] == headers

    def _settle(self, rec: Rec, letters: dict[tuple[str, int, int], list[Any]],
                rekeys: dict[tuple[str, int, int], Any]) -> int:
        """Compare the core's verdict on one record with the reference's; returns 1 if counted."""
        own = (rec.topic, rec.partition, rec.offset)
        expected = self.expect(rec)
        found = _take(letters, own)
        if found is None and rec.origin is not None and expected.outcome in ("dlq", "unsure"):
            # letters of re-keyed records carry their origin, which several may share:
            # one expected to be accepted (counted, a profile, a replay) must not take
            # another's letter; one it got by mistake stays, and fails the batch below
            found = _take(letters, rec.origin)
        copy = rekeys.pop(own, None)
        assert not (found and copy), f"{rec} was both dead-lettered and re-keyed"
        stats = self.stats[rec.label]
        stats["messages"] += 1
        where = Where(rec)
        if expected.outcome == "unsure":
            expected = self._decide_unsure(rec, found)
        if found is not None:
            assert expected.outcome == "dlq", \
                f"{where}: dead-lettered ({found[1]['reason']}), expected {expected.outcome}"
            self._check_letter(rec, *found, expected)
            stats["dead_lettered"] += 1
            if expected.why == "duplicate":
                stats["duplicates"] += 1
            if expected.origin_key is not None:
                self.origins[rec.partition].setdefault(expected.origin_key, _ref(rec))
            return 0
        if copy is not None:
            assert expected.outcome == "rekey", f"{where}: re-keyed, expected {expected}"
            self._check_copy(rec, copy, expected)
            stats["rekeyed"] += 1
            return 0
        assert expected.outcome in ("count", "profile", "replay"), \
            f"{where}: accepted, expected {expected}"
        self.touched.add(expected.account)
        if expected.outcome == "replay":
            stats["replayed_copies"] += 1
            return 0
        stats["counted"] += 1
        if expected.outcome == "profile":
            self.profiles[expected.account] = expected.profile
            return 0
        assert expected.event is not None
        event_id, account_id, _ts, count, campaign = expected.event
        self.ids[rec.partition][event_id] = _ref(rec)
        if expected.origin_key is not None:
            self.origins[rec.partition][expected.origin_key] = _ref(rec)
        self._add(self.sums[account_id], expected.kind, count)
        if campaign is not None:
            self._add(self.campaign_sums[(account_id, campaign)], expected.kind, count)
        return 1

    def _decide_unsure(self, rec: Rec, found: Any) -> Expect:
        """Nesting beyond the decoders' limits: a dead letter or the schema's verdict."""
        if found is not None:
            return Expect("dlq", "unsure")
        self.stats[rec.label]["deep_accepted"] += 1
        return self.expect(rec, unsure_ok=True)

    @staticmethod
    def _add(sums: list[int], kind: str, count: int) -> None:
        if kind == "follow":
            if len(sums) == 5:
                sums[4] += count
        else:
            sums[KINDS.index(kind) if kind != "upload" else 2] += count
        sums[3] += 1

    # the reference's verdict

    def expect(self, rec: Rec, unsure_ok: bool = False) -> Expect:
        kind: str | None = KIND_OF_TOPIC.get(rec.topic)
        origin = None
        if rec.label in ("rekeyed", "rekeyed-copy"):
            header_kind = None
            for name, value in rec.headers:
                if name == KIND_HEADER:
                    header_kind = value.decode("utf-8", "replace")
            origin = rec.origin
            if origin is None:
                return Expect("dlq", "origin", dlq_coords=(rec.topic, rec.partition, rec.offset))
            if header_kind == "profile":
                return self._expect_profile(rec, origin, unsure_ok)
            if header_kind not in KINDS:
                return Expect("dlq", "header",
                              dlq_coords=(rec.topic, rec.partition, rec.offset))
            kind = header_kind
        elif rec.topic == ACCOUNTS:
            return self._expect_profile(rec, None, unsure_ok)
        assert kind is not None
        coords = origin or (rec.topic, rec.partition, rec.offset)
        if rec.value is None:
            return Expect("dlq", "null", dlq_coords=coords)
        status, obj = ("ok", rec.known) if rec.known is not None else reference_json(rec.value)
        if status == "bad":
            return Expect("dlq", obj if obj in ("size", "depth") else "json", dlq_coords=coords)
        if status == "unsure" and not unsure_ok:
            return Expect("unsure")
        status, event = reference_event(kind, obj, rec.key, rec.timestamp)
        if status == "bad":
            return Expect("dlq", event, dlq_coords=coords)
        event_id, account_id = event[0], event[1]
        if rec.key is None or home(account_id) != rec.partition:
            if origin is not None or rec.topic == REKEYED:
                return Expect("dlq", "misplaced", dlq_coords=coords)
            return Expect("rekey", event=event, kind=kind, account=account_id)
        ref = _ref(rec)
        origin_key = None if origin is None else ":".join(map(str, origin))
        if origin_key is not None:
            first = self.origins[rec.partition].get(origin_key)
            if first is not None and first != ref:
                return Expect("replay", account=account_id)
        seen = self.ids[rec.partition].get(event_id)
        if seen is not None and seen != ref:
            return Expect("dlq", "duplicate", dlq_coords=coords, origin_key=origin_key)
        return Expect("count", event=event, kind=kind, account=account_id,
                      origin_key=origin_key)

    def _expect_profile(self, rec: Rec, origin: tuple[str, int, int] | None,
                        unsure_ok: bool) -> Expect:
        coords = origin or (rec.topic, rec.partition, rec.offset)
        if rec.value is None:
            if rec.key is None:
                return Expect("dlq", "tombstone", dlq_coords=coords)
            try:
                account_id = rec.key.decode("utf-8")
            except UnicodeDecodeError:
                return Expect("dlq", "key", dlq_coords=coords)
            if not is_id(account_id):
                return Expect("dlq", "tombstone", dlq_coords=coords)
            profile = None
        else:
            status, obj = ("ok", rec.known) if rec.known is not None else \
                reference_json(rec.value)
            if status == "bad":
                return Expect("dlq", obj if obj in ("size", "depth") else "json",
                              dlq_coords=coords)
            if status == "unsure" and not unsure_ok:
                return Expect("unsure")
            status, parsed = reference_profile(obj, rec.key)
            if status == "bad":
                return Expect("dlq", parsed, dlq_coords=coords)
            account_id, profile = parsed
        if rec.key is None or home(account_id) != rec.partition:
            if origin is not None or rec.topic == REKEYED:
                return Expect("dlq", "misplaced", dlq_coords=coords)
            return Expect("rekey", kind="profile", account=account_id)
        return Expect("profile", account=account_id, profile=profile)

    # checking what the core sent

    def _check_letter(self, rec: Rec, out: Any, letter: dict[str, Any], expected: Expect) -> None:
        assert out.key == rec.key, "a dead letter keeps the key as received"
        # the contract's envelope (schemas.events.DeadLetter, strict types), checked inline
        assert letter.keys() == ENVELOPE_FIELDS, letter
        reason = letter["reason"]
        assert type(reason) is str and reason.strip(), letter
        assert type(letter["topic"]) is str and type(letter["value"]) is str, letter
        assert type(letter["partition"]) is int and type(letter["offset"]) is int, letter
        hints = REASON_HINTS[expected.why]
        assert any(h in reason for h in hints), \
            f"reason {reason!r} for {expected.why} should say one of {hints}"
        if expected.dlq_coords is not None:
            coords = (letter["topic"], letter["partition"], letter["offset"])
            assert coords == expected.dlq_coords, (coords, expected.dlq_coords)
        raw = rec.value or b""
        if letter["value_encoding"] == "base64":
            assert base64.b64decode(letter["value"], validate=True) == raw, \
                f"{Where(rec)}: the base64 value of its dead letter is not the value sent"
        else:
            assert letter["value_encoding"] == "utf-8", letter["value_encoding"]
            assert letter["value"].encode("utf-8") == raw, \
                f"{Where(rec)}: the utf-8 value of its dead letter is not the value sent"
        assert len(out.value) <= 6 * len(raw) + 6 * len(reason) + 1024

    def _check_copy(self, rec: Rec, out: Any, expected: Expect) -> None:
        assert out.key == expected.account.encode() and out.value == rec.value
        headers = dict(out.headers)
        assert headers[KIND_HEADER] == (expected.kind or "profile").encode()
        # the copy goes where Kafka's default partitioner puts its key, then is fed back
        copy = Rec(REKEYED, home(expected.account), 0, out.key, out.value,
                   rec.timestamp, list(out.headers), "rekeyed-copy",
                   parse_origin(list(out.headers)))
        self.pending_rekeyed.append(copy)

    # the end state

    def check_state(self) -> tuple[int, int]:
        """Accounts hold exactly the counted events; returns (lost, double counted)."""
        lost = double = 0
        keys = RedisKeys("rf:")
        for account_id, state in self.accounts.items():
            assert state.account_id == account_id
            assert is_id(account_id), f"account id {account_id!r} reached the state"
            assert account_id in self.touched or account_id in self.sums
            assert not state.profile or is_id(state.profile.category), state.profile
            for campaign in state.campaigns:
                assert is_id(campaign), f"campaign {campaign!r} reached the state"
            # the Redis keys the sink would write for it (contract §4): only safe parts
            written = [keys.account(account_id), keys.board("all", f"cat:{state.category}"),
                       *(keys.board("all", f"campaign:{c}") for c in state.campaigns),
                       *(keys.campaign(c) for c in state.campaigns)]
            for key in written:
                assert all(is_id(part) for part in key.split(":")), f"Redis key {key!r}"
            views, likes, uploads, events = state.counts.sums("all", NOW)
            expected = self.sums.get(account_id, [0, 0, 0, 0, 0])
            lost += max(0, expected[3] - events)
            double += max(0, events - expected[3])
            assert [views, likes, uploads, events, state.follows] == expected, account_id
            if account_id in self.profiles:
                assert state.profile_seen
                assert state.profile == self.profiles[account_id], account_id
            else:
                assert not state.profile_seen
        for account_id, expected in self.sums.items():
            if account_id not in self.accounts:
                lost += expected[3]
        for (account_id, campaign), expected in self.campaign_sums.items():
            assert self.accounts[account_id].campaigns[campaign].sums("all", NOW) == expected
        events = sum(r.progress.events for r in self.runtimes.values())
        dlq = sum(r.progress.dlq for r in self.runtimes.values())
        assert events == sum(s[3] for s in self.sums.values())
        assert dlq == sum(s["dead_lettered"] for s in self.stats.values())
        return lost, double + self.replay_counted

    def drain(self) -> None:
        """Feed the re-keyed copies still pending (and theirs) until none is left."""
        while self.pending_rekeyed:
            self.run(self.batch([]))


class Where:
    """Names a record in an assertion message (built only when one fails)."""

    def __init__(self, rec: Rec) -> None:
        self.rec = rec

    def __str__(self) -> str:
        rec = self.rec
        value = rec.value[:300] if rec.value is not None else None
        return (f"{rec.label} record at {rec.topic}:{rec.partition}:{rec.offset} "
                f"key={rec.key!r} headers={rec.headers!r} value={value!r}")


def _take(letters: dict[tuple[str, int, int], list[Any]],
          coords: tuple[str, int, int]) -> Any:
    found = letters.get(coords)
    if not found:
        return None
    letter = found.pop(0)
    if not found:
        del letters[coords]
    return letter


def _ref(rec: Rec) -> int:
    return rec.offset * 8 + (5 if rec.topic == REKEYED else
                             4 if rec.topic == ACCOUNTS else
                             KINDS.index(KIND_OF_TOPIC[rec.topic]))


def parse_origin(headers: list[tuple[str, bytes]]) -> tuple[str, int, int] | None:
    """The last rf-origin progress, when it is `topic:partition:offset` with a partition
    below 2**31 and an offset below 2**63 (plain ASCII digits); else None."""
    origin = None
    for name, value in headers:
        if name == ORIGIN_HEADER and isinstance(value, bytes):
            origin = None
            m = re.fullmatch(r"(.+):([0-9]+):([0-9]+)", value.decode("utf-8", "replace"),
                             re.DOTALL)
            if m and int(m[2]) < 2**31 and int(m[3]) < 2**63:
                origin = (m[1], int(m[2]), int(m[3]))
    return origin


def record_stats(section: str, harness: Harness, lost: int, double: int,
                 seconds: float, **extra: Any) -> dict[str, Any]:
    topics = {label: dict(harness.stats[label]) for label in (*LABELS, "rekeyed-copy")}
    total = Counter[str]()
    for counts in harness.stats.values():
        total.update(counts)
    summary = {
        "messages_per_topic": {label: counts.get("messages", 0)
                               for label, counts in topics.items()},
        "per_topic": topics,
        "messages": total["messages"],
        "counted": total["counted"],
        "dead_lettered": total["dead_lettered"],
        "rekeyed": total["rekeyed"],
        "duplicates_dead_lettered": total["duplicates"],
        "replayed_copies": total["replayed_copies"],
        "lost": lost,
        "double_counted": double,
        "replayed_messages": harness.replayed,
        "replay_resent": harness.replay_sent,
        "seconds": round(seconds, 2),
        "notes": ("counted: events counted, or on accounts (and re-keyed profiles) the "
                  "profiles and tombstones applied; dead_lettered includes the duplicates; "
                  "rekeyed-copy: the re-keyed copies fed back through the re-keyed topic; "
                  "deep_accepted: valid messages with an unknown field nested 201..1024 deep "
                  "that were counted (a dead letter would have been accepted too)"),
        **extra,
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    try:
        report = json.loads(ARTIFACT.read_text())
    except (OSError, ValueError):
        report = {}
    report[section] = summary
    ARTIFACT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return summary


def check_ledger(harness: Harness) -> None:
    for label, counts in harness.stats.items():
        assert counts["counted"] + counts["dead_lettered"] + counts["rekeyed"] + \
            counts["replayed_copies"] == counts["messages"], (label, counts)


# --- the volume mutator: a seeded random.Random ------------------------------------------

JUNK = (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" * 400, b"\xff", b"\xfe",
        b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x00", b'"', b"{",
        b"}", b"[", b"]", b",", b":", b"\\", b"\\u0000", b"\\ud800", b"\\udc00", b'\\"',
        b"null", b"true", b" ", b"\n", b"\xef\xbb\xbf", b"/*x*/", b"'", b"\x7f",
        "é".encode(), "你".encode(), "😀".encode(), b"0", b"-", b".5", b"e5")
SWAPS: tuple[Any, ...] = ("1", "", 1.0, 0.5, True, False, None, [], {}, [1], {"a": 1}, -1, 0,
                          2**63, 2**64, 10**30, -(2**63) - 1, "x" * 65, "view")
NUMBERS = (-1, 0, 1, MAX_COUNT, MAX_COUNT + 1, -MAX_COUNT, -MAX_COUNT - 1, MAX_TS,
           MAX_TS + 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30, -(10**30))
RAW_NUMBERS = (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" + b"0" * 400,
               b"-0", b"1.0", b"1e2", b"0.0", b"1E+0", b"00", b"+1", b"0x10", b".1", b"1.",
               b"18446744073709551616", b"9223372036854775808", b"1" + b"0" * 308)


class Mutator:
    """Valid messages of every kind, then mutations of their structure and bytes."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.serial = 0
        self.recent: list[str] = []
        self.origins = 0

    def event_id(self) -> str:
        rng = self.rng
        if self.recent and rng.random() < 0.03:
            return rng.choice(self.recent)
        self.serial += 1
        event_id = f"e{self.serial}"
        if len(self.recent) < 300:
            self.recent.append(event_id)
        else:
            self.recent[rng.randrange(300)] = event_id
        return event_id

    def event(self, kind: str) -> dict[str, Any]:
        rng = self.rng
        obj: dict[str, Any] = {"event_id": self.event_id(),
                               "account_id": rng.choice(VALID_ACCOUNTS),
                               "ts": NOW - rng.randrange(3 * DAY)}
        if rng.random() < 0.05:
            obj["ts"] = NOW - rng.randrange(800 * DAY)
        r = rng.random()
        if kind == "view" and r < 0.7:
            obj["count"] = rng.choice((1, 2, rng.randrange(1, 1000), MAX_COUNT))
        elif kind == "upload" and r < 0.3:
            obj["count"] = 1
        elif kind in ("like", "follow") and r < 0.7:
            obj["count"] = rng.choice((1, -1, 3, -MAX_COUNT, MAX_COUNT))
        if rng.random() < 0.3:
            obj["campaign"] = rng.choice((*CAMPAIGNS, None))
        if rng.random() < 0.2:
            obj["video_id"] = rng.choice((f"v{rng.randrange(10**6)}", None, "v" * 64))
        if rng.random() < 0.2:
            obj["kind"] = rng.choice((kind, None))
        if rng.random() < 0.1:
            obj[rng.choice(("extra", "x", "", "ünï", "event_id2"))] = rng.choice(SWAPS)
        return obj

    def profile(self) -> dict[str, Any]:
        rng = self.rng
        account = rng.choice(VALID_ACCOUNTS)
        return {"account_id": account,
                "name": rng.choice((account, "警务自媒体", "", "n" * 128, "a\nb")),
                "category": rng.choice(CATEGORIES),
                "fans": rng.choice((0, 1, rng.randrange(10**7), MAX_FANS))}

    def message(self, label: str) -> Message:
        rng = self.rng
        headers: list[tuple[str, bytes]] = []
        kind = label
        if label == "rekeyed":
            kind = rng.choice((*KINDS, *KINDS, "profile"))
            headers = self.rekey_headers(kind)
        obj = self.profile() if kind in ("accounts", "profile") else self.event(kind)
        account = obj["account_id"]
        timestamp = NOW
        value: bytes | None
        known = None
        r = rng.random()
        if r < 0.45:
            value, known = dumps(obj), obj
        elif r < 0.75:
            value = self.mutate_structure(obj, kind)
            account = obj.get("account_id", account)
        elif r < 0.95:
            value = self.mutate_bytes(dumps(obj))
        else:
            value = self.special(obj, kind)
        if kind in KINDS and rng.random() < 0.03 and type(obj.get("ts")) is int:
            # the future rule: produced more (or exactly) than 5 minutes before its ts
            timestamp = obj["ts"] - FUTURE_MS - rng.choice((0, 1, 5000))
        key = self.key(account)
        if key is not None and rng.random() < 0.93:
            try:
                partition = home(key.decode())
            except UnicodeDecodeError:
                partition = rng.randrange(PARTITIONS)
        else:
            partition = rng.randrange(PARTITIONS)
        return Message(label, key, value, partition, timestamp, headers, known)

    def key(self, account: Any) -> bytes | None:
        rng = self.rng
        r = rng.random()
        if r < 0.05:
            return None
        if r < 0.08:
            return rng.choice(VALID_ACCOUNTS).encode()
        if r < 0.09:
            return rng.choice((b"\xff", b"a\xff", b"\xc3\x28", b"\xed\xa0\x80"))
        if r < 0.10:
            return rng.choice(HOSTILE_IDS).encode()
        return account.encode() if type(account) is str else repr(account).encode()

    def rekey_headers(self, kind: str) -> list[tuple[str, bytes]]:
        rng = self.rng
        headers: list[tuple[str, bytes]] = []
        for _ in range(rng.choice((0, 0, 1, 2))):
            headers.append((rng.choice(("x", "", "rf-kinds", "RF-KIND", "rf", "ü")),
                            rng.randbytes(rng.randrange(8))))
        r = rng.random()
        if r < 0.85:
            headers.append((KIND_HEADER, kind.encode()))
        elif r < 0.95:
            headers.append((KIND_HEADER, rng.choice((b"", b"VIEW", b"\xff", b"profile\x00",
                                                     b"views", b"accounts", b" view"))))
        if rng.random() < 0.8:
            self.origins += 1
            topic = rng.choice(("forged", "a:b", "ü:ñ", "", "t" * 200, "x y"))
            partition = rng.choice((0, 7, -1, 2**31 - 1, rng.randrange(PARTITIONS)))
            origin = f"{topic}:{partition}:{self.origins}"
            headers.append((ORIGIN_HEADER, origin.encode()))
        if rng.random() < 0.1 and headers:
            headers.append(rng.choice(headers))
        rng.shuffle(headers)
        return headers

    def mutate_structure(self, obj: dict[str, Any], kind: str) -> bytes | None:
        rng = self.rng
        op = rng.randrange(14)
        name = rng.choice(list(obj))
        if op == 0:  # type swap
            obj[name] = rng.choice(SWAPS)
        elif op == 1:  # wrong kind
            obj["kind"] = rng.choice((*KINDS, "profile", "VIEW", "", 1, []))
        elif op == 2:  # huge / negative numbers
            obj[rng.choice(("ts", "count", "fans"))] = rng.choice(NUMBERS)
        elif op == 3:  # a field missing
            del obj[name]
        elif op == 4:  # ids that could break a Redis key
            field_name = rng.choice(("account_id", "account_id", "campaign", "category"))
            obj[field_name] = rng.choice(HOSTILE_IDS)
            if field_name == "account_id" and rng.random() < 0.7:
                return dumps(obj)  # keyed by the hostile id too (see key())
        elif op == 5:  # null value
            return None
        elif op == 6:  # duplicate keys
            body = dumps(obj)
            again = rng.choice(list(obj))
            extra = dumps({again: rng.choice((obj[again], "a", 5, None))})[1:-1]
            return body[:-1] + b"," + extra + b"}" if len(obj) else body
        elif op == 7:  # deep nesting
            depth = rng.choice((10, 100, 500, 900, 1000, 1023, 1024, 1025, 3000, 5000))
            return dumps(obj)[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"
        elif op == 8:  # NaN, Infinity, huge literals
            obj[name] = "\x01RAW\x01"
            return dumps(obj).replace(b'"\\u0001RAW\\u0001"', rng.choice(RAW_NUMBERS))
        elif op == 9:  # invalid UTF-8 inside a string
            obj[name] = "\x01RAW\x01"
            bad = rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x80"))
            return dumps(obj).replace(b"\\u0001RAW\\u0001", bad)
        elif op == 10:  # escapes that decode to a valid (or invalid) value
            text = json.dumps(obj, ensure_ascii=True)
            if type(obj.get("account_id")) is str:
                escaped = "".join(f"\\u{ord(c):04x}" for c in obj["account_id"])
                text = text.replace(json.dumps(obj["account_id"]), f'"{escaped}"', 1)
            return text.encode()
        elif op == 11:  # the event is sent to another kind's topic
            if kind in KINDS:
                obj["count"] = rng.choice((0, -1, 2))
        elif op == 12:  # unknown fields, nested, with any content
            obj[rng.choice(("meta", "ünï", "a:b", ""))] = {
                "k": [rng.choice(SWAPS) for _ in range(3)], "n": {"m": None}}
        else:  # weird event ids / names
            obj["event_id" if kind in KINDS else "name"] = rng.choice(
                ("", "x" * 65, "x" * 129, "é" * 64, "a\nb", 5, None, "😀" * 64))
        return dumps(obj)

    def mutate_bytes(self, value: bytes) -> bytes:
        rng = self.rng
        data = bytearray(value)
        for _ in range(rng.choice((1, 1, 2, 3))):
            op = rng.randrange(6)
            at = rng.randrange(len(data) + 1)
            if op == 0 and data:  # bit flips
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
            elif op == 1:  # truncation
                del data[at:]
            elif op == 2:  # inserted junk
                data[at:at] = rng.choice(JUNK) if rng.random() < 0.7 else rng.randbytes(
                    rng.randrange(1, 6))
            elif op == 3:  # a range deleted
                del data[at:at + rng.randrange(1, 8)]
            elif op == 4:  # a range repeated
                data[at:at] = data[at:at + rng.randrange(1, 12)]
            else:  # one byte replaced
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)

    def special(self, obj: dict[str, Any], kind: str) -> bytes | None:
        rng = self.rng
        r = rng.randrange(8)
        if r == 0:  # exactly at the size limit (valid) or one byte over it
            body = dumps({**obj, "pad": ""})
            size = MAX_BYTES + rng.choice((0, 0, 1, 1000))
            return body[:-2] + b"p" * (size - len(body)) + b'"}'
        if r == 1:
            return rng.choice((b"", b"null", b"[]", b"{}", b'"str"', b"123", b"true", b" ",
                               b"\xef\xbb\xbf" + dumps(obj), dumps(obj) + b"\n",
                               b" \t" + dumps(obj), dumps([obj]), dumps(obj) + dumps(obj)))
        if r == 2:
            return rng.randbytes(rng.randrange(64))
        if r == 3:  # a valid event with all the optional fields null
            return dumps({**obj, "campaign": None, "video_id": None, "kind": None})
        if r == 4:  # a different kind's valid message on this topic
            other = self.profile() if kind in KINDS else self.event(rng.choice(KINDS))
            return dumps(other)
        if r == 5:  # ids with trailing newlines, escaped
            obj["account_id"] = rng.choice(("a\n", "a\r\n", "\na", "a\u2028"))
            return json.dumps(obj).encode()
        if r == 6:
            return dumps(obj).replace(b'"', b"'")
        return dumps(obj).replace(b":", b": ", 3)


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # integers beyond 64 bits
        return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


# --- the tests ---------------------------------------------------------------------------


def test_100k_random_and_mutated_messages_per_topic_through_the_core():
    started = time.perf_counter()
    harness = Harness()
    mutator = Mutator(seed=20240606)
    per_round = ROUND
    rounds = -(-VOLUME_PER_TOPIC // per_round)
    # the state only grows, and has no cycles: full collections would rescan it every round
    gc.disable()
    try:
        for _ in range(rounds):
            messages = [mutator.message(label) for label in LABELS for _ in range(per_round)]
            harness.run(harness.batch(messages, mutator.rng), REPLAY_SHARE, mutator.rng)
        harness.drain()
    finally:
        gc.enable()
    lost, double = harness.check_state()
    check_ledger(harness)
    summary = record_stats("volume", harness, lost, double, time.perf_counter() - started,
                           seed=20240606)
    assert lost == 0 and double == 0
    for label in LABELS:
        assert summary["messages_per_topic"][label] >= VOLUME_PER_TOPIC
        counts = harness.stats[label]
        # every outcome really happened on every topic, so the run tested something
        assert counts["counted"] > 1000 and counts["dead_lettered"] > 1000, (label, counts)
        if label != "rekeyed":
            assert counts["rekeyed"] > 1000, (label, counts)
    assert harness.stats["view"]["duplicates"] > 100
    assert harness.replay_sent == 0


# hypothesis: the tricky shapes, built from the schema up ---------------------------------

ID_ALPHABET = ID_CHARS + ":*{} \n\r\t\x00é你/?[]\"'\\\u2028😀"
valid_ids = st.sampled_from(VALID_ACCOUNTS) | st.from_regex(r"[A-Za-z0-9_.-]{1,64}",
                                                            fullmatch=True)
any_ids = valid_ids | st.sampled_from(HOSTILE_IDS) | st.text(ID_ALPHABET, max_size=70)
json_scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=8)
                | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=8)
big_ints = st.sampled_from(NUMBERS) | st.integers()
ts_values = st.integers(NOW - 40 * DAY, NOW) | big_ints | json_values


def event_objects(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    counts = {"view": st.integers(1, 1000), "upload": st.just(1),
              "like": st.integers(-5, 5).filter(bool), "follow": st.integers(-5, 5).filter(bool)}
    good_ts = st.integers(NOW - 40 * DAY, NOW)
    return st.fixed_dictionaries(
        {"event_id": st.sampled_from(("e1", "e2", "e3")) | st.text(min_size=1, max_size=64),
         "account_id": st.one_of(valid_ids, valid_ids, valid_ids, any_ids),
         "ts": st.one_of(good_ts, good_ts, good_ts, ts_values)},
        optional={"count": st.one_of(counts[kind], counts[kind], counts[kind], big_ints,
                                     json_values),
                  "video_id": st.none() | st.text(max_size=66),
                  "campaign": st.one_of(st.none(), st.sampled_from(CAMPAIGNS),
                                        st.sampled_from(CAMPAIGNS), any_ids),
                  "kind": st.one_of(st.none(), st.just(kind), st.just(kind),
                                    st.sampled_from(KINDS), json_values),
                  "extra": json_values})


profile_objects = st.fixed_dictionaries(
    {"account_id": st.one_of(valid_ids, valid_ids, valid_ids, any_ids),
     "name": st.one_of(st.text(max_size=130), st.text(max_size=130), json_values),
     "category": st.one_of(st.sampled_from(CATEGORIES), st.sampled_from(CATEGORIES), any_ids),
     "fans": st.one_of(st.integers(0, 10**7), st.integers(0, 10**7), big_ints, json_values)},
    optional={"extra": json_values})

RAW_OPS = ("none", "none", "none", "none", "none", "literal", "duplicate", "deep", "utf8",
           "truncate", "flip", "junk", "null", "huge", "drop", "escape")


def valid_event_objects(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    counts = {"view": st.integers(1, MAX_COUNT), "upload": st.just(1),
              "like": st.integers(-MAX_COUNT, MAX_COUNT).filter(bool),
              "follow": st.integers(-MAX_COUNT, MAX_COUNT).filter(bool)}
    return st.fixed_dictionaries(
        {"event_id": st.sampled_from(("e1", "e2", "e3", "e4")) | st.text(min_size=1,
                                                                         max_size=64),
         "account_id": st.sampled_from(VALID_ACCOUNTS[:6]) | valid_ids,
         "ts": st.integers(NOW - 40 * DAY, NOW)},
        optional={"count": counts[kind], "video_id": st.none() | st.text(max_size=64),
                  "campaign": st.none() | st.sampled_from(CAMPAIGNS),
                  "kind": st.none() | st.just(kind), "extra": json_values})


valid_profile_objects = st.fixed_dictionaries(
    {"account_id": st.sampled_from(VALID_ACCOUNTS[:6]) | valid_ids,
     "name": st.text(max_size=128), "category": st.sampled_from(CATEGORIES),
     "fans": st.integers(0, MAX_FANS)})


@st.composite
def hostile_messages(draw: Any) -> Message:
    """One message for one topic: valid (a third of them), or hostile in its structure."""
    label = draw(st.sampled_from(LABELS))
    pristine = draw(st.integers(0, 2)) == 0
    kind = label
    headers: list[tuple[str, bytes]] = []
    if label == "rekeyed":
        kind = draw(st.sampled_from((*KINDS, "profile")))
        headers = draw(st.lists(st.tuples(st.text(max_size=6), st.binary(max_size=8)),
                                max_size=2))
        header_kind = kind.encode() if pristine else draw(
            st.sampled_from((kind.encode(),) * 6 + (b"", b"VIEW", b"\xff"))
            | st.binary(max_size=8) | st.none())
        if header_kind is not None:
            headers.append((KIND_HEADER, header_kind))
        origin = draw(st.none()
                      | st.sampled_from(("o:0:1", "o:0:2", "a:b:c:3:4"))  # collisions
                      | st.tuples(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1),
                                  st.integers(-(2**63), 2**63 - 1)).map(
                                      lambda t: f"{t[0]}:{t[1]}:{t[2]}"))
        if origin is not None:
            headers.append((ORIGIN_HEADER, origin.encode()))
        headers = draw(st.permutations(headers))
    if pristine:
        obj = draw(valid_profile_objects if kind in ("accounts", "profile") else
                   valid_event_objects(kind))
    else:
        obj = draw(profile_objects if kind in ("accounts", "profile") else
                   event_objects(kind))
    value: bytes | None = dumps(obj)
    op = "none" if pristine else draw(st.sampled_from(RAW_OPS))
    assert value is not None
    if op == "literal":
        name = draw(st.sampled_from(sorted(obj)))
        obj[name] = "\x01RAW\x01"
        value = dumps(obj).replace(b'"\\u0001RAW\\u0001"', draw(st.sampled_from(RAW_NUMBERS)))
    elif op == "duplicate":
        name = draw(st.sampled_from(sorted(obj)))
        again = draw(st.just(obj[name]) | json_scalars)
        value = value[:-1] + b"," + dumps({name: again})[1:-1] + b"}"
    elif op == "deep":
        depth = draw(st.sampled_from((50, 799, 1023, 1024, 1025, 5000)))
        wrap = draw(st.sampled_from((b"[]", b'{"a":}')))
        nested = wrap[:-1] * depth + b"1" + wrap[-1:] * depth
        value = value[:-1] + b',"deep":' + nested + b"}"
    elif op == "utf8":
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(st.sampled_from((b"\xff", b"\xc3\x28", b"\xed\xa0\x80",
                                                   b"\xf4\x90\x80\x80", b"\xc0\xaf"))) \
            + value[at:]
    elif op == "truncate":
        value = value[:draw(st.integers(0, len(value)))]
    elif op == "flip":
        at = draw(st.integers(0, len(value) - 1))
        value = value[:at] + bytes([value[at] ^ (1 << draw(st.integers(0, 7)))]) + \
            value[at + 1:]
    elif op == "junk":
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(st.sampled_from(JUNK) | st.binary(min_size=1, max_size=4)) \
            + value[at:]
    elif op == "null":
        value = None
    elif op == "huge":
        value = value[:-1] + b',"pad":"' + b"x" * draw(
            st.integers(MAX_BYTES - len(value) - 12, MAX_BYTES - len(value) - 6)) + b'"}'
    elif op == "drop":
        obj.pop(draw(st.sampled_from(sorted(obj))))
        value = dumps(obj)
    elif op == "escape":
        value = json.dumps(obj, ensure_ascii=True).encode()
    account = obj.get("account_id")
    own_key = account.encode() if type(account) is str else b"x"
    key = draw(st.sampled_from((own_key,) * 6 + (None,))) if pristine else draw(
        st.sampled_from((own_key,) * 6 + (None,))
        | st.sampled_from(VALID_ACCOUNTS).map(str.encode) | st.binary(max_size=6))
    partition = draw(st.integers(0, PARTITIONS - 1))
    if draw(st.integers(0, 3)) and key is not None:
        with contextlib.suppress(UnicodeDecodeError):
            partition = home(key.decode())
    timestamp = NOW if pristine else draw(st.one_of(st.just(NOW), st.just(NOW),
                                                    st.integers(NOW - 2 * DAY, NOW)))
    return Message(label, key, value, partition, timestamp, headers)


HYPOTHESIS_TOTALS: dict[str, Any] = {"harness": None}


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile_messages(), min_size=1, max_size=30), st.integers(1, 3),
       st.randoms(use_true_random=False))
def test_structured_hostile_shapes_through_the_core(messages, batches, rng):
    harness = Harness()
    size = -(-len(messages) // batches)
    for start in range(0, len(messages), size):
        harness.run(harness.batch(messages[start:start + size], rng))
    harness.drain()
    lost, double = harness.check_state()
    check_ledger(harness)
    assert lost == 0 and double == 0
    totals = HYPOTHESIS_TOTALS.setdefault("stats", defaultdict(Counter))
    for label, counts in harness.stats.items():
        totals[label].update(counts)


def test_zz_hypothesis_totals_are_recorded():
    """Writes the hypothesis run's totals next to the volume run's (runs after it)."""
    stats = HYPOTHESIS_TOTALS.get("stats")
    if not stats:
        pytest.skip("the hypothesis test did not run in this session")
    harness = Harness()
    harness.stats = stats
    summary = record_stats("hypothesis", harness, 0, 0, 0.0)
    assert summary["messages"] > 0


# found by fuzzing: the re-keyed topic's headers --------------------------------------------------


def test_a_rekeyed_profile_without_origin_does_not_hide_later_profiles():
    harness = Harness()
    p = home("a")

    def profile(fans: int) -> bytes:
        return dumps({"account_id": "a", "name": "A", "category": "police", "fans": fans})

    def feed(rec: Rec) -> Any:
        return harness.aggregator.process({(rec.topic, rec.partition): [rec]}, NOW)

    feed(Rec(ACCOUNTS, p, 0, b"a", profile(1), NOW, [], "accounts"))
    feed(Rec(REKEYED, p, 50, b"a", profile(2), NOW, [(KIND_HEADER, b"profile")],
             "rekeyed"))
    later = feed(Rec(ACCOUNTS, p, 1, b"a", profile(3), NOW, [], "accounts"))
    profile_now = harness.accounts["a"].profile
    assert later.dead_lettered == 1 or (profile_now is not None and profile_now.fans == 3), \
        f"the profile at accounts offset 1 was neither applied nor dead-lettered: {profile_now}"


# the re-keyed topic's headers: malformed origins ------------------------------------------

MALFORMED_ORIGINS = [
    pytest.param([(ORIGIN_HEADER, b"\xff\xfe")], id="origin-not-utf8"),
    pytest.param([(ORIGIN_HEADER, b"no-colons")], id="origin-no-colons"),
    pytest.param([(ORIGIN_HEADER, b"t:x:1")], id="origin-partition-not-int"),
    pytest.param([(ORIGIN_HEADER, b"t:0:")], id="origin-offset-empty"),
    pytest.param([(ORIGIN_HEADER, None)], id="origin-null-value"),
    pytest.param([(KIND_HEADER, None)], id="kind-null-value"),
    pytest.param([(ORIGIN_HEADER, b"t:0:99999999999999999999")], id="origin-offset-over-64-bits"),
]


@pytest.mark.parametrize("extra", MALFORMED_ORIGINS)
def test_a_malformed_rekey_header_is_dead_lettered_not_raised(extra):
    harness = Harness()
    value = dumps({"event_id": "e", "account_id": "a", "ts": NOW - 1000, "count": "bad"})
    rec = Rec(REKEYED, home("a"), 0, b"a", value, NOW,
              [(KIND_HEADER, b"view"), *extra], "rekeyed")
    result = harness.aggregator.process({(rec.topic, rec.partition): [rec]}, NOW)
    assert result.dead_lettered == 1
    letter = orjson.loads(result.outbound[0].value)
    assert letter["reason"] and letter["value"] == value.decode()


def test_a_deep_unknown_field_gets_one_verdict_from_the_fast_path_and_the_model():
    deep = b"[" * 300 + b"]" * 300
    event = b'{"event_id":"e","account_id":"a","ts":1,"deep":' + deep + b"}"
    profile = b'{"account_id":"a","name":"A","category":"c","fans":1,"deep":' + deep + b"}"
    fast = parse_event("view", b"a", event)
    assert type(fast) is type(model_event("view", event)), fast
    assert isinstance(fast, Rejected) == isinstance(parse_profile(b"a", profile), Rejected)


def test_a_profile_does_not_take_the_letter_of_another_copy_of_its_origin():
    """Two re-keyed copies of one origin: the one on its account's partition is applied,
    the misplaced one dead-lettered under the shared origin (a CI run's hypothesis
    example: the harness had matched that letter to the applied copy)."""
    value = dumps({"account_id": "acct", "name": "", "category": "police", "fans": 0})
    headers = [(KIND_HEADER, b"profile"), (ORIGIN_HEADER, b"0:0:0")]
    home_partition = home("acct")
    messages = [Message("rekeyed", b"acct", value, home_partition, headers=list(headers)),
                Message("rekeyed", b"acct", value, (home_partition + 1) % PARTITIONS,
                        headers=list(headers))]
    harness = Harness()
    harness.run(harness.batch(messages, random.Random(0)))
    harness.drain()
    assert harness.check_state() == (0, 0)
    assert harness.stats["rekeyed"]["dead_lettered"] == 1
    assert set(harness.profiles) == {"acct"}
