"""Every kind of bad message ends in the dead-letter topic with a reason; nothing stops."""

import asyncio
import base64
import time

import orjson
from aiokafka import AIOKafkaConsumer

from streams.dev.simulate import Message

NOW = int(time.time() * 1000)


def body(**fields):
    return orjson.dumps({"event_id": "ok", "account_id": "acct", "ts": NOW, **fields})


#: (message, what the reason must say)
BAD = [
    (Message("view", b"acct", b"{not json"), "invalid view event"),
    (Message("like", b"acct", b"\xff\xfe\x00"), "invalid like event"),
    (Message("view", b"acct", body(event_id="e1", ts="soon")), "ts:"),
    (Message("view", b"acct", body(event_id="e2", account_id="a b")), "account_id:"),
    (Message("view", b"acct", body(event_id="e3", count=0)), "count:"),
    (Message("upload", b"acct", body(event_id="e4", count=2)), "count:"),
    (Message("like", b"acct", body(event_id="e5", count=0)), "count must not be 0"),
    (Message("follow", b"acct", body(event_id="e6", kind="like")), "kind:"),
    (Message("view", b"other", body(event_id="e7")), "does not match account_id"),
    (Message("view", b"acct", None), "value is null"),
    (Message("view", b"acct", body(event_id="e8", ts=NOW + 3_600_000)),
     "more than 5 minutes"),
    (Message("view", b"acct", body(event_id="", count=1)), "event_id:"),
    (Message("view", b"acct", body(event_id="e9", campaign="no spaces")), "campaign:"),
    (Message("accounts", b"acct", b'{"account_id": "acct"}'), "invalid profile"),
    (Message("accounts", b"bad key!", None), "is not a valid account_id"),
    (Message("view", b"acct", body(event_id="first")), None),  # counted
    (Message("view", b"acct", body(event_id="first")), "duplicate event_id 'first'"),
]


async def read_letters(bootstrap, topic, n, timeout=60):
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    letters = []
    deadline = time.monotonic() + timeout
    try:
        while len(letters) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                letters += [(r.key, orjson.loads(r.value)) for r in records]
    finally:
        await consumer.stop()
    return letters


def test_each_kind_of_bad_message_is_dead_lettered_with_its_reason(deploy):
    d = deploy()
    d.produce([m for m, _ in BAD])
    d.start_worker()
    expected_dead = sum(1 for _, reason in BAD if reason)
    d.wait_counted(events=1, dead=expected_dead)
    letters = asyncio.run(read_letters(d.settings.bootstrap_servers, d.topics.dlq,
                                       expected_dead))
    assert len(letters) == expected_dead
    for message, reason in BAD:
        if reason is None:
            continue
        topic = d.topics.accounts if message.kind == "accounts" else d.topics.event(
            message.kind)
        matching = [(key, letter) for key, letter in letters
                    if letter["topic"] == topic and reason in letter["reason"]]
        assert matching, f"no dead letter saying {reason!r} for {message}"
        key, letter = matching[0]
        assert key == message.key, "the dead letter keeps the key as received"
        assert set(letter) == {"reason", "topic", "partition", "offset", "value",
                               "value_encoding"}
        raw = message.value or b""
        if letter["value_encoding"] == "base64":
            assert base64.b64decode(letter["value"]) == raw
        else:
            assert letter["value"] == raw.decode()
        assert letter["offset"] >= 0 and 0 <= letter["partition"] < d.settings.partitions
    assert d.redis.hget(f"{d.prefix}acct:acct", "all.views") == "1"
