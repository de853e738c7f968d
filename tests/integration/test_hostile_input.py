"""Hostile input on the real stack (issue #6, item 4): one deployment, every input topic.

Each of events.view/like/follow/upload and accounts gets a 1 MB value, 5000 nested arrays,
invalid UTF-8, numbers no double holds (10**400, 1e999), NaN and Infinity, a duplicate
key, and ids that would break a Redis key, next to a few valid messages. The worker must
count the valid ones, dead-letter each bad one exactly once with a reason that says what
was wrong and the value as received, and write Redis keys for the valid accounts only.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.core.ingest import MAX_MESSAGE_BYTES

NOW = int(time.time() * 1000)
KINDS = ("view", "like", "follow", "upload")
GOOD = ("good1", "good.2")
#: Kafka's default message.max.bytes is 1,048,588 per record batch: this value, its key
#: and the batch and record headers fit in it
ONE_MB = 1_048_000
SAFE_PART = re.compile(r"[A-Za-z0-9_.-]+")
HOSTILE_IDS = ("a:b", "a*", "a b", "{a}", "a\nb", "x" * 65, "y" * 10_000)


@dataclass
class Hostile:
    """One message to produce, and what its dead letter's reason must say (None: valid)."""

    topic: str  # a kind, or "accounts"
    key: bytes | None
    value: bytes | None
    reason: str | None
    what: str
    #: how the reason must begin ("invalid view event", "invalid profile"), if it must
    prefix: str = ""


def event(account: str, kind: str, event_id: str, **extra: object) -> dict[str, object]:
    return {"event_id": event_id, "account_id": account, "ts": NOW, **extra}


def profile(account: str, **extra: object) -> dict[str, object]:
    return {"account_id": account, "name": f"Account {account}", "category": "police",
            "fans": 1000, **extra}


def raw(obj: dict[str, object], name: str, literal: bytes) -> bytes:
    """`obj` as JSON with the value of `name` replaced by `literal` (not expressible in JSON)."""
    return orjson.dumps({**obj, name: "\x01"}).replace(b'"\\u0001"', literal)


def padded(obj: dict[str, object], size: int) -> bytes:
    body = orjson.dumps({**obj, "pad": ""})
    return body[:-2] + b"p" * (size - len(body)) + b'"}'


def hostile_set() -> list[Hostile]:
    messages: list[Hostile] = []
    for topic in (*KINDS, "accounts"):
        def base(n: str, account: str = "good1", topic: str = topic) -> dict[str, object]:
            if topic == "accounts":
                return profile(account)
            return event(account, topic, f"{topic}-{n}")

        number = "fans" if topic == "accounts" else "count"
        invalid = "invalid profile" if topic == "accounts" else f"invalid {topic} event"

        def bad(what: str, value: bytes | None, reason: str, key: bytes | None = b"good1",
                topic: str = topic, invalid: str = invalid) -> None:
            prefix = invalid if value is not None and "match" not in reason else ""
            messages.append(Hostile(topic, key, value, reason, what, prefix))

        bad("1 MB value", padded(base("big"), ONE_MB), f"at most {MAX_MESSAGE_BYTES}")
        bad("one byte over the limit", padded(base("over"), MAX_MESSAGE_BYTES + 1),
            f"at most {MAX_MESSAGE_BYTES}")
        bad("5000 nested arrays", orjson.dumps(base("deep"))[:-1] + b',"deep":'
            + b"[" * 5000 + b"]" * 5000 + b"}", "not strict JSON")
        bad("5000 nested arrays alone", b"[" * 5000 + b"]" * 5000, "not strict JSON")
        bad("invalid UTF-8", orjson.dumps(base("utf8")).replace(b'"good1"', b'"good\xff1"'),
            "not strict JSON")
        bad("a UTF-16 surrogate", orjson.dumps(base("surr")).replace(b'"good1"',
                                                                     b'"good\xed\xa0\x801"'),
            "not strict JSON")
        bad("10**400", raw(base("huge"), number, b"1" + b"0" * 400), "not strict JSON")
        bad("1e999", raw(base("inf"), number, b"1e999"), "not strict JSON")
        bad("-1e999 ts", raw(base("ninf"), "ts" if topic != "accounts" else "fans", b"-1e999"),
            "not strict JSON")
        bad("NaN", raw(base("nan"), number, b"NaN"), "not strict JSON")
        bad("Infinity", raw(base("infinity"), number, b"Infinity"), "not strict JSON")
        bad("-Infinity", raw(base("-infinity"), number, b"-Infinity"), "not strict JSON")
        bad("duplicate account_id", orjson.dumps(base("dup"))[:-1] + b',"account_id":"good1"}',
            "duplicate key 'account_id'")
        bad("duplicate key, nested", orjson.dumps({**base("dup2"), "x": {"a": 1}})[:-2]
            + b',"a":2}}', "duplicate key 'a'")
        for i, hostile in enumerate(HOSTILE_IDS):
            bad(f"account_id {hostile[:12]!r}", orjson.dumps(base(f"id{i}", hostile)),
                "account_id", key=hostile.encode())
            if topic == "accounts":
                bad(f"category {hostile[:12]!r}", orjson.dumps(profile("good1",
                                                                       category=hostile)),
                    "category")
                bad(f"tombstone keyed {hostile[:12]!r}", None, "account_id",
                    key=hostile.encode())
            else:
                bad(f"campaign {hostile[:12]!r}",
                    orjson.dumps(event("good1", topic, f"{topic}-camp{i}", campaign=hostile)),
                    "campaign")
        bad("key is not the account_id", orjson.dumps(base("key")), "does not match account_id",
            key=b"a:b")
    # the valid ones: a profile and events for each good account, one with a campaign
    for account in GOOD:
        messages.append(Hostile("accounts", account.encode(), orjson.dumps(profile(account)),
                                None, "profile"))
        for kind in KINDS:
            messages.append(Hostile(kind, account.encode(), orjson.dumps(event(
                account, kind, f"ok-{kind}-{account}", campaign="c-1")), None, kind))
        messages.append(Hostile("view", account.encode(), orjson.dumps(event(
            account, "view", f"ok-view2-{account}", count=41)), None, "view"))
    return messages


async def produce(bootstrap: list[str], topics, messages: list[Hostile]
                  ) -> list[tuple[str, int, int]]:
    """Send each message; returns where each one landed (topic, partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        futures = []
        for m in messages:
            topic = topics.accounts if m.topic == "accounts" else topics.event(m.topic)
            futures.append(await producer.send(topic, m.value, key=m.key))
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(r.topic, r.partition, r.offset) for r in sent]


async def read_letters(bootstrap: list[str], topic: str, n: int, timeout: float = 30):
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    letters = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                letters += [(r.key, r.value) for r in records]
            if len(letters) >= n and not batch:
                break  # everything expected, and one more poll found nothing newer
    finally:
        await consumer.stop()
    return letters


def test_hostile_messages_on_every_input_topic_are_dead_lettered_once_with_their_reason(
        deploy):
    started = time.monotonic()
    d = deploy()
    messages = hostile_set()
    landed = asyncio.run(produce(d.settings.bootstrap_servers, d.topics, messages))
    d.start_worker()
    bad = [(m, at) for m, at in zip(messages, landed, strict=True) if m.reason]
    good_events = sum(1 for m in messages if not m.reason and m.topic != "accounts")
    d.wait_counted(events=good_events, dead=len(bad), timeout=45)

    letters = asyncio.run(read_letters(d.settings.bootstrap_servers, d.topics.dlq, len(bad)))
    by_origin: dict[tuple[str, int, int], list[tuple[bytes | None, dict]]] = {}
    for key, value in letters:
        letter = orjson.loads(value)
        by_origin.setdefault((letter["topic"], letter["partition"], letter["offset"]),
                             []).append((key, letter))
    assert len(letters) == len(bad), f"{len(letters)} dead letters for {len(bad)} bad messages"
    for m, at in bad:
        found = by_origin.pop(at, [])
        assert len(found) == 1, f"{m.topic} {m.what}: {len(found)} dead letters at {at}"
        key, letter = found[0]
        assert key == m.key, f"{m.what}: the dead letter keeps the key as received"
        assert set(letter) == {"reason", "topic", "partition", "offset", "value",
                               "value_encoding"}
        assert m.reason is not None and m.reason in letter["reason"], \
            f"{m.topic} {m.what}: reason {letter['reason'][:200]!r} should say {m.reason!r}"
        assert letter["reason"].startswith(m.prefix), (m.what, letter["reason"][:200])
        original = m.value or b""
        if letter["value_encoding"] == "base64":
            assert base64.b64decode(letter["value"], validate=True) == original, m.what
        else:
            assert letter["value_encoding"] == "utf-8", letter["value_encoding"]
            assert letter["value"].encode() == original, m.what
        if len(original) > MAX_MESSAGE_BYTES or b"\xff" in original or b"\xed" in original:
            assert letter["value_encoding"] == "base64", m.what
    assert not by_origin, f"dead letters for valid messages: {list(by_origin)}"

    # Redis holds the valid accounts only, under keys of safe parts
    keys = list(d.redis.scan_iter(f"{d.prefix}*", count=1000))
    accounts = {k[len(f"{d.prefix}acct:"):] for k in keys if k.startswith(f"{d.prefix}acct:")}
    assert accounts == set(GOOD), accounts
    for k in keys:
        parts = k[len(d.prefix):].split(":")
        assert all(SAFE_PART.fullmatch(p) for p in parts), f"unsafe Redis key {k!r}"
        if parts[0] == "lb":
            members = set(d.redis.zrange(k, 0, -1))
            assert members <= set(GOOD), f"{k}: {members - set(GOOD)}"
    assert set(d.redis.zrange(f"{d.prefix}lb:all:all", 0, -1)) == set(GOOD)
    for account in GOOD:
        hash_ = d.redis.hgetall(f"{d.prefix}acct:{account}")
        assert hash_["all.views"] == "42" and hash_["all.likes"] == "1", hash_
        assert hash_["all.uploads"] == "1" and hash_["fans"] == "1001", hash_
        assert hash_["category"] == "police"
    meta = d.meta()
    assert int(meta["events"]) + int(meta["dlq"]) == good_events + len(bad)
    print(f"{len(messages)} messages ({len(bad)} bad) checked in "
          f"{time.monotonic() - started:.1f}s")
