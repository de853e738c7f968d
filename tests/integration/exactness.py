"""Exactness checks shared by the crash-trial and broker-restart tests.

* `scenario()`: an event-clock replay with profiles, duplicates, bad and unkeyed messages.
* `layout()`: every key a worker wrote under a prefix, minus what legitimately varies from
  run to run (the change feed, worker metrics, `updated_at`, per-partition clock shares).
* `expected_layout()`: the contract keys (§4) built from the brute-force tests/reference.py.
* `compare()`: which keys differ, and how many events were lost or counted twice.
* `read_dead_letters()`: the dead-letter envelopes written to a topic after given offsets.
* `stack_dump()`: a running worker's task stacks in its log, named in a failure message.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.core.periods import parse_periods
from streams.dev.simulate import CAMPAIGNS, SimulatedPlatform
from tests.reference import Expected, expected_state

START = 1_525_000_000_000  # 2018-04-29
DAY = 86_400_000
PERIODS = "2018q2=2018-04-01/2018-07-01"


def stack_dump(proc: Any, log_path: Path) -> str:
    """For a failure message: have a still running worker dump every task's stack into
    its log (mode's workers do on SIGUSR1) and say where, and whether a task was in a
    Kafka write (`_produce`, where a stalled worker was once found)."""
    if proc.poll() is not None:
        return f"the worker had exited ({proc.returncode}); its log: {log_path}"
    if "]: Starting..." not in log_path.read_text(errors="replace"):
        # no handler yet (still waiting for Kafka or Redis): SIGUSR1 would end it
        return f"the worker had not started its services; its log: {log_path}"
    proc.send_signal(signal.SIGUSR1)
    time.sleep(2)
    text = log_path.read_text(errors="replace")
    where = " (a task is in a Kafka write, _produce)" if "in _produce\n" in text else ""
    return f"task stacks dumped to {log_path}{where}"


def scenario(events: int, seed: int = 23, accounts: int = 300) -> list:
    """Profiles, then `events` messages over 35 days (every rolling window decays)."""
    platform = SimulatedPlatform(seed=seed, accounts=accounts, start_ms=START,
                                 step_ms=35 * DAY / events, bad_share=0.01,
                                 duplicate_share=0.02, unkeyed_share=0.03, campaign_share=0.2)
    return [*platform.profiles(), *platform.events(events)]


def layout(r: Any, prefix: str) -> dict[str, Any]:
    """Every key under `prefix` (without it) and its content, normalised for comparing."""
    names = [key[len(prefix):] for key in r.scan_iter(f"{prefix}*", count=1000)]
    # not the change feed, the worker metrics, the data generation marker (random) or
    # the owner epochs and write sequences (they count rebalances and writes)
    names = [n for n in names
             if n not in ("changes", "metrics:workers", "generation", "owners:partitions")]
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.type(prefix + name)
    kinds = pipe.execute()
    for name, kind in zip(names, kinds, strict=True):
        if kind == "zset":
            pipe.zrange(prefix + name, 0, -1, withscores=True)
        elif kind == "hash":
            pipe.hgetall(prefix + name)
        elif kind == "set":
            pipe.smembers(prefix + name)
        else:
            pipe.dump(prefix + name)
    found: dict[str, Any] = {}
    clock = int(r.hget(f"{prefix}meta", "clock") or 0)
    for name, kind, value in zip(names, kinds, pipe.execute(), strict=True):
        if kind == "zset":
            value = dict(value)
        elif kind == "hash":
            # wall-clock stamps, and each partition's share of the clock (the worker's
            # clock when that partition last changed: depends on batch boundaries)
            value = {k: v for k, v in value.items()
                     if not k.endswith(("updated_at", "|max:clock"))}
            if name.startswith("series:"):
                value = in_span(value, name.rsplit(":", 1)[1], clock)
                if not value:  # only cells that linger: as no series
                    continue
        elif kind != "set":
            value = (kind, value)
        found[name] = value
    return found


SERIES_SPANS = {"1m": (60_000, 1440), "1h": (3_600_000, 720)}


def in_span(cells: Mapping[str, str], step: str, clock: int) -> dict[str, str]:
    """A series hash's cells in the span of the clock: older ones linger until their
    chunk leaves, at a moment that depends on batch boundaries (streams/core/series.py)."""
    unit, span = SERIES_SPANS[step]
    first = (clock // unit - span + 1) * unit
    return {k: v for k, v in cells.items() if int(k.partition(":")[0]) >= first}


def series_of(found: Mapping[str, Any]) -> dict[str, dict[int, list[int]]]:
    """The series keys of a `layout()`, the partitions' shares summed per bucket."""
    out: dict[str, dict[int, list[int]]] = {}
    for name, cells in found.items():
        if not name.startswith("series:"):
            continue
        sums = out.setdefault(name, {})
        for field_name, value in cells.items():
            cell = sums.setdefault(int(field_name.partition(":")[0]), [0, 0, 0, 0])
            for i, part in enumerate(value.split(",")):
                cell[i] += int(part)
    return {name: sums for name, sums in out.items() if sums}


def expected_series(expected: Expected, clock: int,
                    campaigns: tuple[str, ...] = CAMPAIGNS) -> dict[str, dict[int, list[int]]]:
    """`series_of`'s answer per the reference."""
    out = {}
    for campaign in campaigns:
        for step in SERIES_SPANS:
            cells = expected.series(campaign, step, clock)
            if cells:
                out[f"series:{campaign}:{step}"] = cells
    return out


def expected_replay(messages: list, periods: str = PERIODS) -> tuple[Expected, int]:
    """The reference state of an event-clock replay of these messages with these
    periods (`RANKFLOW_PERIODS`), and the clock it ends at (the newest event time)."""
    expected = expected_state([(m.kind, m.key, m.value) for m in messages],
                              parse_periods(periods))
    return expected, max(e.ts for a in expected.accounts.values() for _, e in a.events)


def expected_layout(expected: Expected, clock: int) -> dict[str, Any]:
    """The contract's keys (boards, account and campaign hashes, meta) per the reference."""
    out: dict[str, Any] = {}
    windows = expected.windows
    sums = {(a, w): expected.sums(a, w, clock) for a in expected.accounts for w in windows}
    campaign_sums = {(a, w, c): expected.sums(a, w, clock, c)
                     for a in expected.accounts for w in windows for c in CAMPAIGNS}
    for account_id, account in expected.accounts.items():
        h: dict[str, str] = {"fans": str(account.fans)}
        for window in windows:
            views, likes, uploads, _ = sums[account_id, window]
            h[f"{window}.views"], h[f"{window}.likes"] = str(views), str(likes)
            h[f"{window}.uploads"] = str(uploads)
            index = expected.index(account_id, window, clock)
            h[f"{window}.index"] = repr(index)
            if not account.listed:
                continue
            for board in ("all", f"cat:{account.category}"):
                out.setdefault(f"lb:{window}:{board}", {})[account_id] = index
            for campaign in CAMPAIGNS:
                views = campaign_sums[account_id, window, campaign][0]
                if views > 0:
                    out.setdefault(f"lb:{window}:campaign:{campaign}", {})[account_id] = \
                        float(views)
        if account.listed:
            h["category"] = account.category
        if account.profile is not None:
            h["name"] = account.profile.name
        out[f"acct:{account_id}"] = h
    for campaign in CAMPAIGNS:
        h = {}
        for window in windows:
            total = [0, 0, 0, 0]
            for account_id in expected.accounts:
                views, likes, uploads, n = campaign_sums[account_id, window, campaign]
                total = [total[0] + views, total[1] + likes, total[2] + uploads,
                         total[3] + (1 if n else 0)]
            for name, value in zip(("views", "likes", "uploads", "accounts"), total,
                                   strict=True):
                h[f"{window}.{name}"] = str(value)
        out[f"campaign:{campaign}"] = h
    out["meta"] = {"events": str(expected.counted), "dlq": str(expected.dead),
                   "clock": str(clock)}
    return out


def contract_keys(found: Mapping[str, Any]) -> dict[str, Any]:
    """Only the keys `expected_layout` builds (not the registries or partition shares)."""
    return {k: v for k, v in found.items()
            if k.startswith(("lb:", "acct:")) or k == "meta"
            or (k.startswith("campaign:") and not k.endswith(":partitions"))}


@dataclass
class Difference:
    keys: list[str] = field(default_factory=list)  # keys that differ, are missing or extra
    lost: int = 0            # events (and dead letters) counted less than once
    double_counted: int = 0  # events (and dead letters) counted more than once

    @property
    def exact(self) -> bool:
        return not self.keys and not self.lost and not self.double_counted


#: sets of names that have boards: they may keep a name whose board is gone (see
#: `unregistered`), so they are not compared key for key
REGISTRIES = ("categories", "campaigns")


def compare(got: Mapping[str, Any], want: Mapping[str, Any]) -> Difference:
    """Keys that differ (missing, extra or other content); events and dead letters counted
    fewer times (lost) or more times (double-counted) than in `want`, from `meta`."""
    diff = Difference(sorted(k for k in got.keys() | want.keys()
                             if got.get(k) != want.get(k) and k not in REGISTRIES))
    for name in ("events", "dlq"):
        delta = int(got.get("meta", {}).get(name, 0)) - int(want.get("meta", {}).get(name, 0))
        diff.lost += max(0, -delta)
        diff.double_counted += max(0, delta)
    return diff


def unregistered(found: Mapping[str, Any]) -> list[str]:
    """Categories and campaigns that have a board but are missing from their registry."""
    missing = []
    for registry, kind in (("categories", "cat"), ("campaigns", "campaign")):
        names = {k.split(":", 3)[3] for k in found if k.startswith("lb:")
                 and k.split(":")[2] == kind}
        missing += [f"{kind}:{n}" for n in sorted(names - found.get(registry, set()))]
    return missing


def describe(got: Mapping[str, Any], want: Mapping[str, Any], keys: list[str],
             limit: int = 10) -> dict[str, Any]:
    """For the first `limit` differing keys: what is extra, missing or other in `got`."""
    out: dict[str, Any] = {}
    for key in keys[:limit]:
        g, w = got.get(key), want.get(key)
        if isinstance(g, dict) and isinstance(w, dict):
            out[key] = {k: [g.get(k), w.get(k)] for k in sorted(g.keys() | w.keys())
                        if g.get(k) != w.get(k)}
            out[key] = dict(list(out[key].items())[:8])
        elif isinstance(g, set) and isinstance(w, set):
            out[key] = {"extra": sorted(g - w), "missing": sorted(w - g)}
        else:
            out[key] = {"got": repr(g)[:200], "want": repr(w)[:200]}
    return out


async def end_offsets(bootstrap: list[str], topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_records(bootstrap: list[str], topic: str,
                       since: Mapping[int, int] | None = None) -> list[Any]:
    """Every record on `topic` from offsets `since` (default: the start) to its end now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[Any] = []
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p)
               for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, (since or {}).get(tp.partition, 0))
        todo = {tp for tp in tps if ends[tp] > (since or {}).get(tp.partition, 0)}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, records in batch.items():
                found += [r for r in records if r.offset < ends[tp]]
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return found


async def read_dead_letters(bootstrap: list[str], topic: str,
                            since: Mapping[int, int] | None = None) -> list[dict[str, Any]]:
    """Every envelope on `topic` from offsets `since` (default: the start) to its end now."""
    return [orjson.loads(r.value) for r in await read_records(bootstrap, topic, since)]


def letter_counts(letters: list[dict[str, Any]], topic_prefix: str) -> Counter[tuple]:
    """Dead letters by the message they carry: source topic (without the prefix) and value.

    Not by source partition and offset: of two identical unkeyed copies of an event (a
    redelivered duplicate), which one is counted first depends on the order they come
    back from the re-keying topic, so either may be the one dead-lettered.
    """
    return Counter((letter["topic"].removeprefix(topic_prefix), letter["value"],
                    letter["value_encoding"]) for letter in letters)


def dead_letters_since(bootstrap: list[str], topic: str,
                       since: Mapping[int, int] | None = None) -> list[dict[str, Any]]:
    return asyncio.run(read_dead_letters(bootstrap, topic, since))
