"""The worker's pieces, each driven through small fakes (no broker, no Redis).

The same pieces run composed on the real stack in tests/integration/.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import NamedTuple

import aiokafka.errors as kafka_errors
import pytest
import redis.asyncio as aioredis

from streams.core.aggregate import new_runtime
from streams.core.dedup import RecentEventIds
from streams.core.ingest import partition_for
from streams.core.scoring import DEFAULT_SCORING
from streams.core.state import decode_segment
from streams.core.updates import BoardUpdate, BoardUpdates
from streams.sink.rewrite import LayoutRewriter
from streams.worker import changelog as changelog_module
from streams.worker.batch_step import BatchStep
from streams.worker.changelog import ChangelogWriter, OutboundRecord
from streams.worker.clock import WorkerClock
from streams.worker.decay import DecayTimer
from streams.worker.fence import PartitionFence
from streams.worker.metrics import MetricsReporter, WorkerMetrics
from streams.worker.order import WriteOrder
from streams.worker.ownership import PartitionOwnership
from streams.worker.redis_watch import RedisWatch, RedisWrites
from streams.worker.retry import retrying
from tests.helpers import NOW, TOPICS, Core, Log

MINUTE = 60_000


class TP(NamedTuple):
    topic: str
    partition: int


def run(coro):
    return asyncio.run(coro)


def batch_of(log: Log, core: Core) -> dict[TP, list]:
    """The records `core` has not read yet, keyed by TP."""
    read = core.read
    batch = {}
    for (topic, partition), records in log.records.items():
        start = read.get((topic, partition), 0)
        if records[start:]:
            batch[TP(topic, partition)] = records[start:]
            read[(topic, partition)] = len(records)
    return batch


# -- WriteOrder ----------------------------------------------------------------------


def test_writes_finish_in_the_order_they_were_queued_even_when_the_first_is_slowest():
    done = []

    async def write(name, delay, fail=False):
        await asyncio.sleep(delay)
        done.append(name)
        if fail:
            raise OSError(name)

    async def main():
        order = WriteOrder()
        first = order.then(write("first", 0.05, fail=True))
        second = order.then(write("second", 0))
        third = order.then(write("third", 0.01))
        await asyncio.wait([first, second, third])
        assert isinstance(first.exception(), OSError)  # a failure does not hold the rest
        assert second.exception() is None

    run(main())
    assert done == ["first", "second", "third"]


# -- retry policy -------------------------------------------------------------------


def test_transient_failures_are_retried_with_backoff_and_others_stop_the_worker(caplog):
    delays = []
    failures = [OSError("refused"), aioredis.ConnectionError("gone"), TimeoutError()] + \
        [OSError("still")] * 5

    async def sleep(delay):
        delays.append(delay)

    async def step():
        if failures:
            raise failures.pop(0)
        return "done"

    with caplog.at_level(logging.WARNING):
        assert run(retrying("writing Redis", step, sleep)) == "done"
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert "writing Redis failed (refused); retrying in 0.2s" in caplog.text

    async def broken():
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        run(retrying("writing Redis", broken, sleep))


def test_a_send_refused_for_good_stops_the_worker(caplog):
    """A broker that is away is waited for; a record it refuses for good is not sent
    again (it would be refused forever while later events wait)."""
    delays = []
    failures = [kafka_errors.KafkaConnectionError("no broker"), kafka_errors.KafkaTimeoutError(),
                kafka_errors.NotEnoughReplicasError()]

    async def sleep(delay):
        delays.append(delay)

    async def step():
        if failures:
            raise failures.pop(0)
        raise kafka_errors.MessageSizeTooLargeError("the message is 5000000 bytes")

    with caplog.at_level(logging.WARNING), \
            pytest.raises(kafka_errors.MessageSizeTooLargeError):
        run(retrying("writing the changelog", step, sleep))
    assert delays == [0.2, 0.4, 0.8]
    assert "writing the changelog: the broker refuses a record for good" in caplog.text


def test_a_send_that_faust_wraps_is_judged_by_the_client_error_inside(caplog):
    """faust's producer.send raises ProducerSendError from aiokafka's error: a broker
    away (KafkaTimeoutError while the record waits for metadata) is waited for, a record
    refused for good still stops the worker."""
    from faust.exceptions import ProducerSendError

    def wrapped(error):
        try:
            raise ProducerSendError(f"Error while sending: {error!r}") from error
        except ProducerSendError as exc:
            return exc

    failures = [wrapped(kafka_errors.KafkaTimeoutError())]

    async def sleep(delay):
        pass

    async def step():
        if failures:
            raise failures.pop(0)
        raise wrapped(kafka_errors.MessageSizeTooLargeError("5000000 bytes"))

    with caplog.at_level(logging.WARNING), pytest.raises(ProducerSendError):
        run(retrying("writing the changelog", step, sleep))
    assert not failures, "the wrapped timeout was retried"
    assert "the broker refuses a record for good (" in caplog.text


# -- ChangelogWriter ----------------------------------------------------------------


class FakeProducer:
    def __init__(self, hang=False):
        self.sent: list[tuple] = []
        self.hang = hang

    async def send(self, topic, key, value, partition, timestamp, headers):
        self.sent.append((topic, key, value, partition, headers))
        future = asyncio.get_running_loop().create_future()
        if not self.hang:  # the broker's ack: offsets count up per topic partition
            offset = sum(1 for s in self.sent if s[0] == topic and s[3] == partition) - 1
            future.set_result(SimpleNamespace(topic=topic, partition=partition,
                                              offset=offset))
        return future


def test_state_records_name_their_partition_and_the_newest_segment_carries_progress():
    log, core = Log(), Core()
    for i in range(7):
        log.event("a", event_id=f"a{i}")
    log.event("b", event_id="b0")
    result = core.feed(log)
    segments: dict = {}
    writer = ChangelogWriter(FakeProducer().send, "acc-log", "part-log", segments,
                             core.runtimes)
    records = writer.records(result, NOW, NOW, {})
    accounts = [r for r in records if r.topic == "acc-log"]
    assert sorted(r.key for r in accounts) == [b"a", b"b"]
    assert all(r.partition == partition_for(r.key.decode(), 4) for r in accounts)
    parts = [r for r in records if r.topic == "part-log"]
    assert {r.partition for r in parts} == result.partitions
    for record in parts:
        partition, segment, progress = decode_segment(record.value)
        assert partition == record.partition
        assert segments[record.key.decode()] == (partition, segment, progress)
        assert progress is not None and progress.events == core.runtimes[partition].progress.events
    assert sum(decode_segment(r.value)[2].events for r in parts) == 8


def test_expired_dedup_segments_become_tombstones_and_leave_the_table():
    log, core = Log(partitions=1), Core(partitions=1)
    core.runtimes[0] = new_runtime(0, RecentEventIds(min_events=1, min_age_ms=0))
    segments: dict = {}
    writer = ChangelogWriter(FakeProducer().send, "acc", "part", segments, core.runtimes)
    log.event("a", event_id="e1")
    writer.records(core.feed(log), NOW, NOW, {})
    log.event("a", event_id="e2")
    records = writer.records(core.feed(log), NOW + MINUTE, NOW + MINUTE, {})
    tombstones = [r for r in records if r.topic == "part" and r.value is None]
    assert [r.key for r in tombstones] == [b"0:000000000000"]
    assert list(segments) == ["0:000000000001"]


def test_persist_sends_dead_letters_before_the_changelog_and_waits_for_acks():
    producer = FakeProducer()
    writer = ChangelogWriter(producer.send, "acc", "part", {}, {})
    outbound = [OutboundRecord("events.dlq", b"k", b"bad", None, None)]
    changelog = [OutboundRecord("acc", b"a", b"state", 3, None)]
    run(writer.persist(outbound, changelog))
    assert [s[0] for s in producer.sent] == ["events.dlq", "acc"]
    assert producer.sent[1][3] == 3


def test_persist_tells_the_changelogs_acked_offsets_with_the_owners_at_build_time():
    producer, told = FakeProducer(), []
    runtimes = {3: object(), 5: object()}
    writer = ChangelogWriter(producer.send, "acc", "part", {}, runtimes,
                             acked=lambda sent, tenure: told.append((list(sent), tenure)))
    tenure = writer.tenure({3})
    assert tenure == {3: runtimes[3]}
    outbound = [OutboundRecord("events.dlq", b"k", b"bad", None, None)]
    changelog = [OutboundRecord("acc", b"a", b"s", 3, None),
                 OutboundRecord("part", b"3:seg", b"s", 3, None),
                 OutboundRecord("acc", b"b", b"s", 3, None)]
    run(writer.persist(outbound, changelog, tenure))
    assert told == [([("acc", 3, 0), ("part", 3, 0), ("acc", 3, 1)], tenure)]
    run(writer.persist([], changelog))  # no owners noted (a rewrite's records): not told
    assert len(told) == 1


def test_a_send_whose_ack_never_comes_times_out(monkeypatch):
    monkeypatch.setattr(changelog_module, "PRODUCE_TIMEOUT", 0.05)
    writer = ChangelogWriter(FakeProducer(hang=True).send, "acc", "part", {}, {})
    with pytest.raises(TimeoutError):
        run(writer.send_all([OutboundRecord("acc", b"a", b"s", 0, None)]))


def test_a_producer_the_broker_no_longer_follows_is_renewed_and_the_batch_sent_again(
        caplog):
    """After a send timed out with the broker away, an idempotent producer's every retry
    got OutOfOrderSequenceNumber (test_outages.py): a new producer sends the batch."""
    producer, renewed = FakeProducer(), []
    lost = [kafka_errors.OutOfOrderSequenceNumber()]

    async def send(*args):
        if lost:
            raise lost.pop()
        return await producer.send(*args)

    async def renew():
        renewed.append(True)

    async def no_sleep(_delay):
        pass

    writer = ChangelogWriter(send, "acc", "part", {}, {}, renew=renew)
    records = [OutboundRecord("acc", b"a", b"s", 0, None)]
    with caplog.at_level(logging.WARNING):
        run(retrying("writing the changelog", lambda: writer.send_all(records), no_sleep))
    assert renewed == [True] and [s[1] for s in producer.sent] == [b"a"]
    assert "a new producer sends from now on" in caplog.text


# -- WorkerClock --------------------------------------------------------------------


def test_the_event_clock_is_the_largest_event_time_seen_and_never_moves_back():
    runtimes = {0: new_runtime(0, RecentEventIds()), 1: new_runtime(1, RecentEventIds())}
    clock = WorkerClock(True, runtimes)
    runtimes[0].progress.clock = 5_000
    runtimes[1].progress.clock = 9_000
    assert clock() == 9_000
    del runtimes[1]  # the partition moved away
    assert clock() == 9_000
    before = int(time.time() * 1000)
    assert before <= WorkerClock(False, runtimes)() <= int(time.time() * 1000)


# -- PartitionOwnership -------------------------------------------------------------


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []

    async def __call__(self, why, partitions=None):
        self.calls.append((why, partitions))


class RestoreRecorder:
    def __init__(self):
        self.calls: list[set[int]] = []

    def __call__(self, partitions):
        self.calls.append(partitions)


def ownership_of(core: Core, recovered: set[int], assigned: set[int], rewrite=None,
                 claims=None, heals=None, changes=None):
    runtimes: dict = {}
    owner = PartitionOwnership(
        runtimes, core.accounts, {}, core.windows, RecentEventIds, lambda: NOW,
        lambda p: p in recovered, lambda: assigned, rewrite or RestoreRecorder(),
        (claims if claims is not None else []).append,
        (heals if heals is not None else []).append, asyncio.Lock(),
        (changes if changes is not None else {}).get)
    return owner, runtimes


def test_a_partition_given_back_with_its_tables_unchanged_keeps_its_runtime():
    log, core = Log(), Core()
    for name in ("a", "b", "c", "d", "e", "f"):
        log.event(name, event_id=f"{name}1")
    core.feed(log)
    changes = {p: 0 for p in range(4)}
    rewrite, claims = RestoreRecorder(), []
    owner, runtimes = ownership_of(core, recovered={0, 1, 2, 3}, assigned={0, 1, 2, 3},
                                   rewrite=rewrite, claims=claims, changes=changes)
    run(owner.on_recovery())
    before = dict(runtimes)
    # a rebalance revokes everything; partition 1's changelog was read meanwhile
    run(owner.forget(None, [TP("events.view", p) for p in range(4)]
                      + [TP("acct-changelog", 0)]))
    assert runtimes == {} and set(owner.parked) == {0, 1, 2, 3}
    changes[1] += 1
    owner.assigned = lambda: {0, 1, 2}  # partition 3 went to another worker
    run(owner.on_recovery())
    assert runtimes[0] is before[0] and runtimes[2] is before[2], "kept, not rebuilt"
    assert runtimes[1] is not before[1], "its tables changed: rebuilt from them"
    assert 3 not in runtimes and owner.parked == {}, "a partition gone is not kept"
    assert claims[-1] == {0, 1, 2} and rewrite.calls[-1] == {0, 1, 2}


def test_records_are_applied_only_for_partitions_whose_tables_are_read():
    core = Core()
    owner, runtimes = ownership_of(core, recovered={1}, assigned={1, 2})
    assert owner.ready(TP("events.view", 1))
    assert not owner.ready(TP("events.view", 2))
    batch = {TP("events.view", 1): ["r1"], TP("events.view", 2): ["r2"]}

    async def admit():
        return owner.admit(batch)

    assert run(admit()) == {TP("events.view", 1): ["r1"]}
    assert set(runtimes) == {1}
    assert owner.ready(TP("events.view", 1))


def test_a_restored_partition_is_claimed_and_rewritten_if_it_has_state():
    log, core = Log(), Core()
    log.event("a", event_id="e1")
    core.feed(log)
    pa = partition_for("a", 4)
    other = next(p for p in range(4) if p != pa)
    rewrite, claims, heals = RestoreRecorder(), [], []
    owner, runtimes = ownership_of(core, recovered={pa, other}, assigned={pa, other},
                                   rewrite=rewrite, claims=claims, heals=heals)

    async def recover():
        await owner.on_recovery()
        await asyncio.sleep(0)

    run(recover())
    assert set(runtimes) == {pa, other}
    assert claims == [{pa, other}], "claimed before the rewrite was queued"
    assert heals == [{pa, other}], "their overtaken accounts written again"
    assert rewrite.calls == [{pa, other}]
    rewrite.calls.clear()
    owner.restore({other + 4})  # nothing recovered for it: claimed, but no rewrite
    assert rewrite.calls == [] and claims[-1] == {other + 4}
    run(owner.forget(None, [TP("events.view", pa)]))
    assert set(runtimes) == {other, other + 4}


def test_recovery_of_a_replaced_assignment_restores_only_what_is_read_and_assigned():
    core = Core()
    owner, runtimes = ownership_of(core, recovered={0, 5}, assigned={0, 1})
    run(owner.on_recovery())
    assert set(runtimes) == {0}


# -- DecayTimer and LayoutRewriter --------------------------------------------------


class Submitted:
    def __init__(self):
        self.updates: list[BoardUpdate] = []

    async def __call__(self, update):
        self.updates.append(update)


def test_decay_rescores_exactly_the_accounts_whose_bucket_left_a_window():
    log, core = Log(), Core()
    log.event("a", event_id="a1", ts=NOW - 30 * MINUTE)
    log.event("b", event_id="b1", ts=NOW - 5 * MINUTE)
    core.feed(log)
    submitted, metrics = Submitted(), WorkerMetrics()
    updates = BoardUpdates(core.windows, DEFAULT_SCORING, core.runtimes)
    now = [NOW]
    decay = DecayTimer(core.runtimes, core.accounts, updates, lambda: now[0], submitted,
                       asyncio.Lock(), metrics)
    now[0] = NOW + 31 * MINUTE  # a's minute left the 1h window; b's did not
    run(decay.tick())
    (update,) = submitted.updates
    assert [v.account_id for v in update.views] == ["a"]
    assert update.views[0].windows["1h"].views == 0
    assert update.views[0].windows["24h"].views == 1
    assert set(update.partitions) == set(core.runtimes)
    assert metrics.decayed == 1
    run(decay.tick())
    assert submitted.updates[1].views == []


def test_a_rewrite_goes_in_chunks_of_owned_accounts_each_looking_up_its_listed_category():
    log, core = Log(), Core()
    for name in ("a", "b", "c", "d", "e"):
        log.profile(name, category="media")
        log.event(name, event_id=f"{name}1", campaign="spring")
    core.feed(log)
    gone = partition_for("e", 4)
    owned = {p: r for p, r in core.runtimes.items() if p != gone}
    submitted = Submitted()
    rewriter = LayoutRewriter(core.accounts, owned,
                              BoardUpdates(core.windows, DEFAULT_SCORING, owned),
                              lambda: NOW, submitted, asyncio.Lock(), chunk=2)
    expected = sorted(a for a in "abcde" if partition_for(a, 4) != gone)
    assert run(rewriter.rewrite("test")) == len(expected)
    *chunks, totals = submitted.updates
    assert [len(u.views) for u in chunks] == [2] * (len(expected) // 2) + \
        [1] * (len(expected) % 2)
    assert sorted(v.account_id for u in chunks for v in u.views) == expected
    assert all(u.profiles == {v.account_id for v in u.views} for u in chunks)
    assert totals.views == [] and set(totals.partitions) == set(owned)
    assert {c for _, c in totals.campaigns} == {"spring"}
    assert {p for p, _ in totals.campaigns} == {partition_for(a, 4) for a in expected}


def test_a_rewrite_of_named_partitions_writes_only_their_accounts():
    log, core = Log(), Core()
    for name in ("a", "b", "c", "d"):
        log.event(name, event_id=f"{name}1")
    core.feed(log)
    submitted = Submitted()
    rewriter = LayoutRewriter(core.accounts, core.runtimes,
                              BoardUpdates(core.windows, DEFAULT_SCORING, core.runtimes),
                              lambda: NOW, submitted, asyncio.Lock(), chunk=100)
    pa = partition_for("a", 4)
    run(rewriter.rewrite("test", {pa}))
    assert {v.account_id for v in submitted.updates[0].views} == {
        a for a in "abcd" if partition_for(a, 4) == pa}


# -- RedisWrites and RedisWatch -----------------------------------------------------


class FakeStore:
    def __init__(self, token="g1"):
        self.token = token
        self.updates: list[BoardUpdate] = []
        self.claimed: list = []
        self.stamps: dict = {}
        self.fail_reads = False
        self.afters: list = []
        self.generations: list = []  # the generation each write marks its done marks in
        self.lost: set = set()  # partitions whose stamp Redis lost: the next write says so

    async def generation(self):
        if self.fail_reads:
            raise aioredis.ConnectionError("down")
        return self.token

    async def claim_generation(self):
        if self.token is None:
            self.token = "claimed"
        return self.token

    async def write(self, update, after, generation=None):
        self.updates.append(update)
        self.afters.append(after)
        self.generations.append(generation)
        behind, self.lost = [p for p in update.fences if p in self.lost], set()
        return behind

    async def claim(self, fences):
        self.claimed.append(fences)

    async def written(self, partitions):
        return {p: self.stamps[p] for p in partitions if p in self.stamps}

    async def done(self, partitions):
        return {}


class Unfenced:
    def current(self, fences):
        return True


EMPTY = BoardUpdate([], set(), {}, {}, 0, 0)


def test_the_first_write_adopts_the_generation_in_force_or_claims_one():
    store = FakeStore(token=None)
    writes = RedisWrites(store, Unfenced())
    run(writes.write(EMPTY))
    assert writes.generation == "claimed" and store.updates == [EMPTY]
    kept = FakeStore(token="older")
    writes = RedisWrites(kept, Unfenced())
    run(writes.write(EMPTY))
    assert writes.generation == "older"
    assert store.generations == ["claimed"] and kept.generations == ["older"], \
        "each write's done marks are for the generation it went to"


def test_a_lost_generation_marker_is_claimed_again_and_the_layout_rewritten(caplog):
    store = FakeStore()
    writes = RedisWrites(store, Unfenced())
    rewrite = Recorder()
    watch = RedisWatch(writes, rewrite, lambda: [])
    run(watch.check())  # nothing written yet: adopt only
    assert writes.generation == "g1" and rewrite.calls == []
    run(watch.check())
    assert rewrite.calls == []
    store.token = None  # FLUSHALL
    with caplog.at_level(logging.WARNING):
        run(watch.check())
    assert rewrite.calls == [("Redis lost its data", None)]
    assert writes.generation == "claimed"
    assert "Redis has lost its data" in caplog.text
    store.fail_reads = True
    run(watch.check())  # Redis away: a warning, no rewrite
    assert len(rewrite.calls) == 1


def test_a_large_update_is_written_in_chunks_with_the_totals_and_counters_last(monkeypatch):
    from streams.core.scoring import AccountView
    from streams.core.updates import in_chunks
    from streams.worker import redis_watch

    views = [AccountView(f"a{i}", 0, True, "media", None, i, {}, {}) for i in range(7)]
    big = BoardUpdate(views, {"a3"}, {(0, "c"): {"all": [1, 0, 0, 1]}}, {0: (7, 0)}, 5, 6,
                      {0: (3, 9)}, done={0: 4})
    parts = in_chunks(big, 3)
    assert [[v.account_id for v in p.views] for p in parts] == [
        ["a0", "a1", "a2"], ["a3", "a4", "a5"], ["a6"]]
    assert [(p.campaigns, p.partitions, p.done) for p in parts[:-1]] == [({}, {}, {})] * 2
    assert (parts[-1].campaigns, parts[-1].partitions) == (big.campaigns, big.partitions)
    assert parts[-1].done == {0: 4}, "only the write that completes the update marks it done"
    assert all(p.fences == {0: (3, 9)} for p in parts)
    assert all((p.profiles, p.clock_ms, p.now_ms) == ({"a3"}, 5, 6) for p in parts)
    assert in_chunks(big, 7) == [big]

    # an account in many campaigns: no chunk holds more than the campaign entries allowed
    sums = {"all": [1, 0, 0, 1]}
    many = AccountView("many", 0, True, "media", None, 1, {}, {f"c{i}": sums for i in range(5)})
    few = AccountView("few", 0, True, "media", None, 1, {}, {"c0": sums})
    parts = in_chunks(replace(big, views=[few, many]), 3, campaigns=2)
    assert [[(v.account_id, sorted(v.campaigns)) for v in p.views] for p in parts] == [
        [("few", ["c0"])], [("many", ["c0", "c1"])], [("many", ["c2", "c3"])],
        [("many", ["c4"])]]
    assert parts[-1].campaigns == big.campaigns

    # through RedisWrites: a failing chunk is retried alone, the others written once
    monkeypatch.setattr(redis_watch, "WRITE_CHUNK", 3)
    store = FakeStore()
    fail_once = [aioredis.TimeoutError("Timeout reading")]

    async def write(update, after, generation):
        if update.views[0].account_id == "a3" and fail_once:
            raise fail_once.pop()
        store.updates.append(update)
        return []

    store.write = write
    run(RedisWrites(store, Unfenced()).write(big))
    assert [len(p.views) for p in store.updates] == [3, 3, 1]
    assert store.updates[-1].partitions == {0: (7, 0)}


# -- MetricsReporter ----------------------------------------------------------------


def test_each_batch_is_counted_with_the_lag_after_it_and_publishing_survives_redis_away():
    published = []

    async def publish(worker, snapshot):
        if published:
            raise aioredis.ConnectionError("down")
        published.append((worker, snapshot))

    metrics = WorkerMetrics(worker="w1")
    reporter = MetricsReporter(metrics, lambda batch: {tp: 7 for tp in batch}, publish, {})
    batch = {TP("events.view", 0): [1, 2, 3], TP("events.like", 1): [4]}
    reporter.count(batch, counted=3, dead_lettered=1)
    assert (metrics.batches, metrics.records, metrics.events, metrics.dead_letters) == \
        (1, 4, 3, 1)
    assert metrics.lag == {"events.view:0": 7, "events.like:1": 7}
    run(reporter.publish())
    run(reporter.publish())
    assert published[0][0] == "w1" and b'"events":3' in published[0][1]


# -- BatchStep ----------------------------------------------------------------------


class FakeChangelog:
    def __init__(self, writer: ChangelogWriter, calls: list):
        self.writer = writer
        self.calls = calls

    def records(self, result, clock_ms, now_ms, fences):
        return self.writer.records(result, clock_ms, now_ms, fences)

    def tenure(self, partitions):
        return self.writer.tenure(partitions)

    async def persist(self, outbound, changelog, tenure=None):
        await asyncio.sleep(0.01)
        self.calls.append(("kafka", [r.topic for r in outbound], len(changelog)))


def test_a_batch_is_applied_once_and_its_writes_go_out_in_batch_order():
    log, core = Log(), Core()
    calls: list = []

    async def write_redis(update):
        calls.append(("redis", sorted(v.account_id for v in update.views)))

    class AdmitAll:
        def admit(self, batch):
            return batch

    metrics = WorkerMetrics()
    reporter = MetricsReporter(metrics, lambda batch: {}, Submitted(), core.accounts)
    updates = BoardUpdates(core.windows, DEFAULT_SCORING, core.runtimes)
    clock = WorkerClock(False, core.runtimes)
    lock = asyncio.Lock()
    decay = DecayTimer(core.runtimes, core.accounts, updates, clock, Submitted(), lock,
                       metrics)
    changelog = FakeChangelog(ChangelogWriter(FakeProducer().send, "acc", "part", {},
                                              core.runtimes), calls)
    step = BatchStep(AdmitAll(), core.aggregator, decay, changelog, updates, write_redis,
                     WriteOrder(), reporter, clock, lock, Unfenced())

    async def main():
        log.event("a", event_id="a1")
        log.event("b", event_id="b1")
        log.append(TOPICS.event("view"), b"a", b"not json")
        first = await step(batch_of(log, core))
        log.event("c", event_id="c1")
        second = await step(batch_of(log, core))
        await asyncio.gather(first, second)

    run(main())
    pa, pb = partition_for("a", 4), partition_for("b", 4)
    assert calls[0] == ("redis", ["a", "b"])
    assert calls[1] == ("kafka", ["events.dlq"], 2 + len({pa, pb}))  # accounts, segments
    assert calls[2] == ("redis", ["c"])
    assert calls[3][0] == "kafka"
    assert (metrics.batches, metrics.events, metrics.dead_letters) == (2, 3, 1)
    assert sum(r.progress.events for r in core.runtimes.values()) == 3


# -- PartitionFence -----------------------------------------------------------------


class FakeMonotonic:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_writes_are_stamped_with_the_generation_and_a_sequence_per_partition():
    generation = [3]
    fence = PartitionFence(lambda: generation[0], 6.0, FakeMonotonic())
    assert fence.stamp([0, 2]) == {0: (3, 1), 2: (3, 1)}
    generation[0] = 4
    assert fence.stamp([2]) == {2: (4, 2)}


def test_a_stall_past_the_session_timeout_makes_every_write_in_hand_stale(caplog):
    generation, clock = [3], FakeMonotonic()
    fence = PartitionFence(lambda: generation[0], 6.0, clock)
    in_hand = fence.stamp([1])
    clock.now += 5.9  # a pause shorter than the session timeout: still ours
    assert fence.current(in_hand)
    clock.now += 6.0  # SIGSTOP past it: noticed by the first to look, the write itself
    with caplog.at_level(logging.WARNING):
        assert not fence.current(in_hand)
    assert "stalled for 6.0 s" in caplog.text
    built_after = fence.stamp([1])  # still the old generation: the group has not re-admitted
    assert not fence.current(built_after)
    generation[0] = 5  # re-admitted, in a newer generation
    assert fence.current(fence.stamp([1])) and not fence.current(in_hand)


def test_a_stale_batch_sends_nothing_to_redis_or_kafka():
    log, core = Log(), Core()
    calls: list = []

    async def write_redis(update):
        calls.append("redis")

    class AdmitAll:
        def admit(self, batch):
            return batch

    class Stale:
        def current(self, fences):
            return False

    metrics = WorkerMetrics()
    reporter = MetricsReporter(metrics, lambda batch: {}, Submitted(), core.accounts)
    updates = BoardUpdates(core.windows, DEFAULT_SCORING, core.runtimes)
    clock = WorkerClock(False, core.runtimes)
    lock = asyncio.Lock()
    decay = DecayTimer(core.runtimes, core.accounts, updates, clock, Submitted(), lock,
                       metrics)
    changelog = FakeChangelog(ChangelogWriter(FakeProducer().send, "acc", "part", {},
                                              core.runtimes), calls)
    step = BatchStep(AdmitAll(), core.aggregator, decay, changelog, updates, write_redis,
                     WriteOrder(), reporter, clock, lock, Stale())

    async def main():
        log.event("a", event_id="a1")
        await (await step(batch_of(log, core)))

    run(main())
    assert calls == []
    store = FakeStore()
    run(RedisWrites(store, Stale()).write(EMPTY))
    assert store.updates == []


def test_partitions_redis_is_behind_on_are_rewritten(caplog):
    store = FakeStore()
    writes = RedisWrites(store, Unfenced())
    rewrite = Recorder()
    watch = RedisWatch(writes, rewrite, lambda: [0, 1, 2])
    run(writes.claim({0: (3, 1), 1: (3, 1), 2: (3, 1)}))
    run(writes.write(BoardUpdate([], set(), {}, {}, 0, 0, {0: (3, 5), 1: (3, 2)})))
    # Redis as it was acknowledged for 0; an older copy for 1; a newer owner's for 2
    store.stamps = {0: (3, 5), 1: (3, 1), 2: (4, 1)}
    with caplog.at_level(logging.WARNING):
        run(watch.check())
    assert rewrite.calls == [("Redis was behind the state", {1})]
    assert "Redis is behind the state for partitions [1]" in caplog.text
    store.stamps = {0: (3, 5), 1: (3, 2), 2: (4, 1)}  # rewritten
    run(watch.check())
    assert len(rewrite.calls) == 1
    store.stamps = {}  # an older copy from before any write
    run(watch.check())
    assert rewrite.calls[-1] == ("Redis was behind the state", {0, 1, 2})


def test_a_write_that_finds_redis_behind_has_the_partition_rewritten_though_its_stamp_is_new():
    store = FakeStore()
    writes = RedisWrites(store, Unfenced())
    rewrite = Recorder()
    watch = RedisWatch(writes, rewrite, lambda: [0, 1])
    run(writes.claim({0: (3, 1), 1: (3, 1)}))
    run(writes.write(BoardUpdate([], set(), {}, {}, 0, 0, {0: (3, 2), 1: (3, 2)})))
    assert store.afters[-1] == {0: (3, 1), 1: (3, 1)}  # each write says what it follows
    store.lost = {1}  # a failover lost partition 1's last write; this one finds it out
    run(writes.write(BoardUpdate([], set(), {}, {}, 0, 0, {0: (3, 3), 1: (3, 3)})))
    store.stamps = {0: (3, 3), 1: (3, 3)}  # the write's own stamp would hide the loss
    run(watch.check())
    assert rewrite.calls == [("Redis was behind the state", {1})]
    run(watch.check())
    assert len(rewrite.calls) == 1
