"""Realistic simulated traffic, per DOMAIN.md: profiles first, then heavy-tailed events.

`SimulatedPlatform` is deterministic for a seed and does no I/O, so tests can replay
the very messages a run produced. `produce` sends them to Kafka, at a rate or as fast
as the broker takes them, with a progress bar.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from schemas.events import EventKind
from streams.core.topics import Topics

CATEGORIES = ("central", "youth-league", "local-publicity", "police", "media")
CATEGORY_NAMES = {
    "central": "中央国家机关",
    "youth-league": "共青团",
    "local-publicity": "地方宣传",
    "police": "警务自媒体",
    "media": "媒体",
}
CAMPAIGNS = ("dagong-jiangren", "safe-driving", "youth-day")
#: views : likes : follows : uploads, about 1000 : 25 : 2 : 1 (DOMAIN.md)
MIX: tuple[tuple[EventKind, float], ...] = (
    ("view", 1000.0), ("like", 25.0), ("follow", 2.0), ("upload", 1.0))


@dataclass(frozen=True, slots=True)
class Message:
    """One message to produce: topic kind (or `accounts`), key, value."""

    kind: str
    key: bytes | None
    value: bytes | None


@dataclass
class SimulatedPlatform:
    """Accounts with heavy-tailed popularity and the events they draw."""

    seed: int = 7
    accounts: int = 1000
    start_ms: int = 0
    step_ms: float = 1.0
    bad_share: float = 0.0
    duplicate_share: float = 0.0
    unkeyed_share: float = 0.0
    campaign_share: float = 0.1
    #: Zipf popularity instead of the log-normal body: the account of rank r (a random
    #: order of the ids) draws events in proportion to 1 / r**zipf; None keeps the default
    zipf: float | None = None
    rng: random.Random = field(init=False)
    ids: list[str] = field(init=False)
    weights: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.ids = [f"{CATEGORIES[i % len(CATEGORIES)]}.{i:05d}" for i in range(self.accounts)]
        if self.zipf is not None:
            weights = [1.0 / rank ** self.zipf for rank in range(1, self.accounts + 1)]
            self.rng.shuffle(weights)
            self.weights = weights
        else:
            # log-normal body, Pareto tail (alpha ~ 1) for the top 1 %
            weights = [self.rng.lognormvariate(0.0, 1.2) for _ in self.ids]
            cutoff = sorted(weights)[int(len(weights) * 0.99)] if weights else 0.0
            self.weights = [w if w < cutoff else cutoff * self.rng.paretovariate(1.0)
                            for w in weights]
        self._cumulative = list(_accumulate(self.weights))
        self._kinds = [k for k, _ in MIX]
        self._kind_weights = list(_accumulate([w for _, w in MIX]))
        self._sent: list[Message] = []
        self._live_run = int(time.time() * 1000)

    def profiles(self) -> Iterator[Message]:
        for i, account_id in enumerate(self.ids):
            category = CATEGORIES[i % len(CATEGORIES)]
            fans = int(self.rng.lognormvariate(9.0, 2.0))
            profile = {"account_id": account_id, "category": category,
                       "name": f"{CATEGORY_NAMES[category]} {i:05d}", "fans": fans}
            yield Message("accounts", account_id.encode(), orjson.dumps(profile))

    def events(self, n: int, live: bool = False) -> Iterator[Message]:
        """`n` messages; `live` stamps each with the wall clock instead of a replay time."""
        rng = self.rng
        for i in range(n):
            roll = rng.random()
            if self._sent and roll < self.duplicate_share:
                yield rng.choice(self._sent)
                continue
            if roll < self.duplicate_share + self.bad_share:
                yield self._bad(i)
                continue
            kind = rng.choices(self._kinds, cum_weights=self._kind_weights)[0]
            account_id = rng.choices(self.ids, cum_weights=self._cumulative)[0]
            ts = int(time.time() * 1000) if live else self.start_ms + int(i * self.step_ms)
            # a replay's ids are fixed by the seed; live runs get their own, so a second
            # run is not taken for redelivered duplicates of the first
            run = f"{self.seed}-{self._live_run}" if live else str(self.seed)
            event: dict[str, object] = {"event_id": f"s{run}-{i}",
                                        "account_id": account_id, "ts": ts}
            count = self._count(kind)
            if count != 1:
                event["count"] = count
            if rng.random() < self.campaign_share:
                event["campaign"] = rng.choice(CAMPAIGNS)
            if kind in ("view", "upload"):
                event["video_id"] = f"v{rng.randrange(7_000)}"
            if rng.random() < 0.5:
                event["kind"] = kind
            key = None if rng.random() < self.unkeyed_share else account_id.encode()
            message = Message(kind, key, orjson.dumps(event))
            if self.duplicate_share and len(self._sent) < 10_000:
                self._sent.append(message)
            yield message

    def _count(self, kind: str) -> int:
        rng = self.rng
        if kind == "view":
            # most plays arrive one by one; an edge sometimes pre-aggregates a few
            return 1 if rng.random() < 0.9 else min(1_000_000, int(math.exp(rng.uniform(0, 6))))
        if kind == "like":
            return -1 if rng.random() < 0.05 else 1
        if kind == "follow":
            return -1 if rng.random() < 0.1 else 1
        return 1

    def _bad(self, i: int) -> Message:
        account_id = self.rng.choice(self.ids)
        base = {"event_id": f"s{self.seed}-bad-{i}", "account_id": account_id,
                "ts": self.start_ms}
        variants: list[tuple[str, bytes | None]] = [
            ("view", b"{not json"),
            ("view", orjson.dumps({**base, "count": 0})),
            ("like", orjson.dumps({**base, "count": 0})),
            ("view", orjson.dumps({**base, "account_id": "bad id!"})),
            ("upload", orjson.dumps({**base, "count": 2})),
            ("follow", orjson.dumps({**base, "kind": "view"})),
            ("view", orjson.dumps({**base, "ts": "yesterday"})),
            ("like", b"\xff\xfe\x00"),
        ]
        kind, value = variants[i % len(variants)]
        return Message(kind, account_id.encode(), value)


def _accumulate(values: list[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


async def produce(bootstrap: list[str], topics: Topics, messages: Iterator[Message],
                  total: int, rate: float | None = None, progress: bool = True, *,
                  kafka_options: Mapping[str, Any] | None = None) -> int:
    """Send messages (at `rate` per second when given); returns how many were sent.

    `kafka_options`: the client's security options (`connections.kafka_client_options`).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=512 * 1024, acks=1, **(kafka_options or {}))
    await producer.start()
    sent = 0
    chunk = max(1, min(1000, int(rate / 20))) if rate else 1000
    started = time.monotonic()
    bar = tqdm(total=total, unit="msg", disable=not progress, smoothing=0.1)
    try:
        pending = []
        for message in messages:
            topic = topics.accounts if message.kind == "accounts" else \
                topics.event(message.kind)  # type: ignore[arg-type]
            pending.append(await producer.send(topic, message.value, key=message.key))
            sent += 1
            if sent % chunk == 0:
                bar.update(chunk)
                await asyncio.gather(*pending)
                pending.clear()
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
        bar.update(sent % chunk)
    finally:
        bar.close()
        await producer.stop()
    return sent
