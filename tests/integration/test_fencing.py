"""A stalled worker is fenced: SIGSTOPped past its session timeout under live load, then
woken after the other worker took over, it writes nothing more for the partitions it
lost (streams/worker/fence.py, the owner check in streams/sink/lua/fence.lua).

Two workers share a live event-clock replay; one is stopped for longer than the session
timeout and woken with the writes of its last batches in hand. The layout must end exact
with both running, and again when both restart at once over an emptied Redis and rebuild
it from their changelogs alone, so neither Redis nor the changelog kept a stale write.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time

import orjson
import pytest

from streams.core.ingest import partition_for
from streams.core.topics import ACCOUNT_TABLE, PARTITION_TABLE
from streams.dev.simulate import Message
from tests.integration.conftest import ARTIFACTS
from tests.integration.exactness import (
    PERIODS,
    compare,
    contract_keys,
    describe,
    expected_layout,
    expected_replay,
    expected_series,
    layout,
    read_records,
    scenario,
    series_of,
)

EVENTS = 24_000
RATE = 800.0  # events/s: a live replay of about 30 s
SESSION_TIMEOUT = 6
STOPPED_S = 16  # past the session timeout, and long enough for the other to take over
PARTITIONS = 8
ENV = {"RANKFLOW_CLOCK": "event", "RANKFLOW_PERIODS": PERIODS,
       "RANKFLOW_PARTITIONS": str(PARTITIONS),
       "RANKFLOW_SESSION_TIMEOUT": str(SESSION_TIMEOUT), "RANKFLOW_BATCH_MAX_RECORDS": "500",
       "PYTHONUNBUFFERED": "1"}


def with_closing_events(messages: list[Message]) -> list[Message]:
    """The replay, then one view per partition at its last event time: each worker's
    event clock is the largest event time of its own partitions, so this brings both to
    the same clock and their boards decay alike."""
    _, last = expected_replay(messages)
    by_partition: dict[int, str] = {}
    for m in messages:
        if m.kind == "accounts" and m.key:
            by_partition.setdefault(partition_for(m.key.decode(), PARTITIONS), m.key.decode())
    return [*messages, *(
        Message("view", account_id.encode(), orjson.dumps(
            {"event_id": f"closing-{p}", "account_id": account_id, "ts": last}))
        for p, account_id in sorted(by_partition.items()))]


def _assert_exact(d, want, want_series, what: str) -> None:
    got = layout(d.redis, d.prefix)
    diff = compare(contract_keys(got), want)
    missing = [k.removeprefix("acct:") for k in diff.keys
               if k.startswith("acct:") and k not in got]
    if missing:
        _dump_account_records(d, missing)
    assert (diff.lost, diff.double_counted, len(diff.keys)) == (0, 0, 0), (
        f"{what}: {len(diff.keys)} keys differ (got, want): "
        f"{describe(got, want, diff.keys, limit=5)}")
    series = series_of(got)
    differ = {name: {t: (series.get(name, {}).get(t), cells.get(t))
                     for t in series.get(name, {}).keys() | cells.keys()
                     if series.get(name, {}).get(t) != cells.get(t)}
              for name, cells in want_series.items()}
    if any(differ.values()):
        _dump_series_records(d, got, differ)
    assert series.keys() == want_series.keys() and not any(differ.values()), (
        f"{what}: campaign series differ (bucket: got, want): "
        f"{ {n: dict(list(c.items())[:3]) for n, c in differ.items() if c} }; "
        f"the cells and chunk records of the first: {ARTIFACTS / 'fencing-series.json'}")


def _dump_account_records(d, accounts: list[str]) -> None:
    """Every changelog record of these accounts, for a restore that lost them."""
    wanted = {a.encode() for a in accounts}
    records = [{"partition": r.partition, "offset": r.offset, "key": r.key.decode(),
                "value": r.value and r.value.decode()[:300]}
               for r in _changelog(d, ACCOUNT_TABLE) if r.key.split(b"#")[0] in wanted]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fencing-accounts.json").write_bytes(orjson.dumps(
        {"accounts": accounts, "records": records}, option=orjson.OPT_INDENT_2))


def _changelog(d, table: str) -> list:
    """Every record of a table's changelog now (tests/integration/exactness.py)."""
    return asyncio.run(read_records(d.settings.bootstrap_servers, d.topics.changelog(table)))


def _misplaced_accounts(d) -> dict[str, list[tuple[int, int]]]:
    """Accounts with records in a changelog partition not their own: (partition, offset)
    of each such record (a restore drops an account whose last record read is one)."""
    found: dict[str, list[tuple[int, int]]] = {}
    for r in _changelog(d, ACCOUNT_TABLE):
        account = r.key.decode().split("#")[0]
        if partition_for(account, PARTITIONS) != r.partition:
            found.setdefault(account, []).append((r.partition, r.offset))
    return found


def _dump_series_records(d, got, differ) -> None:
    """The raw cells of the first differing bucket, and every changelog record of the
    chunks that hold them (to tell a lost record from a late one)."""
    name, buckets = next((n, b) for n, b in differ.items() if b)
    bucket = min(buckets)
    _, campaign, step = name.split(":")
    cells = {k: v for k, v in got[name].items() if k.startswith(f"{bucket}:")}
    unit, per_chunk = {"1m": (60_000, 60), "1h": (3_600_000, 24)}[step]
    start = bucket // unit - bucket // unit % per_chunk
    keys = {f"{p}:series:{campaign}:{step}:{start}".encode() for p in range(PARTITIONS)}
    records = [{"partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
                "key": r.key.decode(), "value": r.value and r.value.decode()}
               for r in _changelog(d, PARTITION_TABLE) if r.key in keys]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fencing-series.json").write_bytes(orjson.dumps(
        {"series": name, "bucket": bucket, "cells": cells, "differ": {
            str(t): v for t, v in buckets.items()}, "records": records},
        option=orjson.OPT_INDENT_2))


def _assignments(d, worker: int) -> int:
    log = (d.workers[worker].log).read_text(errors="replace")
    return len(re.findall("Setting newly assigned partitions", log))


@pytest.mark.timeout(420)
def test_a_worker_stopped_past_its_session_timeout_writes_nothing_for_lost_partitions(deploy):
    stall_and_check(deploy(**ENV))


@pytest.mark.timeout(420)
def test_fencing_on_the_redis_cluster(cluster_deploy):
    """The same on the dev stack's Redis Cluster: the owner check in every slot a stale
    write reaches (streams/sink/cluster.py)."""
    stall_and_check(cluster_deploy(**ENV))


def stall_and_check(d) -> None:
    messages = with_closing_events(scenario(EVENTS))
    expected, clock = expected_replay(messages)
    want = expected_layout(expected, clock)
    want_series = expected_series(expected, clock)
    producer = threading.Thread(target=d.produce, args=(messages, RATE), daemon=True)
    stalled, other = d.start_worker(), d.start_worker()
    d.wait_for(lambda: _assignments(d, 0) >= 1 and _assignments(d, 1) >= 1, 90,
               "both workers assigned")
    producer.start()
    d.wait_for(lambda: int(d.meta().get("events", 0)) >= EVENTS // 4, 90,
               "a quarter of the replay counted")
    taken_over = _assignments(d, 1)
    stalled.send_signal(signal.SIGSTOP)
    try:
        d.wait_for(lambda: _assignments(d, 1) > taken_over, 60,
                   "the other worker taking over")
        time.sleep(max(0.0, STOPPED_S - SESSION_TIMEOUT))
    finally:
        stalled.send_signal(signal.SIGCONT)
    producer.join(timeout=120)
    d.wait_counted(expected.counted, expected.dead, timeout=120)
    d.wait_for(lambda: d.meta().get("clock") == str(clock), 30, "the event clock")
    time.sleep(3)  # a stale write landing late would land by now
    _assert_exact(d, want, want_series, "both running after the stall")
    assert "stalled for" in stalled.log.read_text(errors="replace"), \
        "the woken worker did not say it had stalled"

    d.stop(stalled)
    d.stop(other)
    misplaced = _misplaced_accounts(d)
    assert not misplaced, f"account records in another partition: {misplaced}"

    # Redis rebuilt from the changelogs alone: a stale changelog record would show here.
    # Both workers start at once: the first one's reading is cut by the second's join,
    # and records it had fetched of partitions it gave up must not be counted as read
    # (streams/kafka/app.py: ReadChangelogQueue)
    keys = list(d.redis.scan_iter(f"{d.prefix}*", count=1000))
    d.redis.delete(*keys)
    first, second = d.start_worker(), d.start_worker()
    d.wait_counted(expected.counted, expected.dead, timeout=120)
    d.wait_for(lambda: d.meta().get("clock") == str(clock), 30, "the event clock")
    d.wait_for(lambda: all("Redis rewritten from state" in w.log.read_text(errors="replace")
                           for w in (first, second)), 90, "both workers' partitions rewritten")
    time.sleep(2)  # a write of a partition one of them gave up is refused by now
    _assert_exact(d, want, want_series, "both restarted at once over an emptied Redis")
