"""Valid input that makes state records large: the longest event ids (64 characters of
four bytes, or of control characters JSON escapes in six), and one account in 12,000
campaigns. Every changelog record stays under the broker's limit, every event counts,
and after a SIGKILL the state read back from the changelogs (the account from its part
records) counts on exactly (streams/core/state.py)."""

import asyncio
import random
import signal
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from streams.core.state import RECORD_LIMIT
from streams.dev.simulate import Message
from tests.reference import expected_state

CAMPAIGNS = [f"c{i:05d}".ljust(64, "x") for i in range(12_000)]
BIG = "big.account"


def events(start: int, n: int, seed: int) -> list[Message]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for i in range(start, start + n):
        alphabet = (0x1F600, 0x1F64F) if i % 2 else (0, 31)  # 4 bytes, or 6 escaped
        event_id = "".join(chr(rng.randint(*alphabet)) for _ in range(63)) + chr(65 + i % 26)
        account = BIG if i < len(CAMPAIGNS) else f"acct-{i % 40}"
        body = {"event_id": event_id, "account_id": account, "ts": now - rng.randrange(600_000),
                "count": 1 + i % 5, "campaign": CAMPAIGNS[i % len(CAMPAIGNS)]}
        out.append(Message("view", account.encode(), orjson.dumps(body)))
    return out


async def largest_records(bootstrap: list[str], topics: list[str]) -> tuple[dict[str, int], int]:
    """The largest record of each topic, and how many part records they hold."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    largest = dict.fromkeys(topics, 0)
    parts = 0
    try:
        while batch := await consumer.getmany(timeout_ms=3000):
            for tp, records in batch.items():
                for record in records:
                    largest[tp.topic] = max(largest[tp.topic], len(record.value or b""))
                    parts += b"#" in (record.key or b"")
    finally:
        await consumer.stop()
    return largest, parts


def assert_counted_exactly(d, messages):
    expected = expected_state([(m.kind, m.key, m.value) for m in messages])
    d.wait_counted(expected.counted, expected.dead, timeout=240)
    r, p = d.redis, d.prefix
    views = r.hget(f"{p}acct:{BIG}", "all.views")
    assert int(views) == expected.sums(BIG, "all", 0)[0]
    # written in chunks of 1,000 campaigns, the account's campaign set is whole
    assert r.scard(f"{p}acct-campaigns:{BIG}") == len(CAMPAIGNS)
    for campaign in CAMPAIGNS[::997]:
        got = dict(r.zrange(f"{p}lb:all:campaign:{campaign}", 0, -1, withscores=True))
        assert got == expected.board("all", f"campaign:{campaign}", 0), campaign
    return expected


@pytest.mark.timeout(600)
def test_the_largest_valid_state_stays_under_the_record_limit_and_counts_exactly(deploy):
    d = deploy()
    first = events(0, 15_000, seed=1)
    d.produce(first)
    worker = d.start_worker()
    assert_counted_exactly(d, first)
    largest, parts = asyncio.run(largest_records(d.settings.bootstrap_servers, [
        d.topics.changelog("account-state"), d.topics.changelog("partition-state")]))
    assert all(0 < size < RECORD_LIMIT for size in largest.values()), largest
    assert parts >= 2  # the account did not fit in one record

    d.stop(worker, signal.SIGKILL)  # the account comes back from its parts
    more = events(15_000, 3_000, seed=2) + events(0, 2_000, seed=3)
    d.produce(more)
    d.start_worker()
    assert_counted_exactly(d, first + more)
