"""A restore rewrites what Redis may lack, by the done marks (streams/sink/rewrite.py,
`redis_may_lack` in streams/core/updates.py), and marks nothing done while it runs. The
real stack holds it in tests/integration/test_crash_trials.py, test_outages.py and
test_concurrent_start.py; the marks themselves in test_fence_scripts.py."""

from __future__ import annotations

import asyncio

from streams.core.ingest import partition_for
from streams.core.scoring import DEFAULT_SCORING
from streams.core.state import NO_STAMP, AccountState
from streams.core.updates import BoardUpdates, redis_may_lack
from streams.sink.rewrite import LayoutRewriter
from streams.worker.changelog import ChangelogWriter
from tests.helpers import NOW, Core, Log
from tests.test_worker import FakeProducer, Submitted, run

MINUTE = 60_000


def stamped(stamp: tuple[int, int], *, event_minutes_ago: int = 0) -> AccountState:
    log, core = Log(), Core()
    log.event("a", event_id="a1", ts=NOW - event_minutes_ago * MINUTE)
    core.feed(log)
    state = core.accounts["a"]
    state.board_stamp = stamp
    return state


def test_redis_holds_what_an_update_it_marked_done_carried_and_no_window_left_since():
    state = stamped((4, 10))
    assert not redis_may_lack(state, (4, 10, NOW), NOW, epoch=5)
    assert not redis_may_lack(state, (5, 2, NOW), NOW, epoch=5), "an older owner's update"
    assert redis_may_lack(state, (4, 9, NOW), NOW, epoch=5), "carried by an update after it"
    assert redis_may_lack(state, None, NOW, epoch=5), "no mark: Redis may hold nothing"
    state.board_stamp = NO_STAMP  # a record written before board stamps
    assert redis_may_lack(state, (4, 10, NOW), NOW, epoch=5)


def test_a_mark_of_a_newer_epoch_than_the_owners_compares_only_its_own_epoch():
    # the consumer group was created anew: its generations start again at 1
    assert not redis_may_lack(stamped((57, 10)), (57, 12, NOW), NOW, epoch=2)
    assert redis_may_lack(stamped((1, 3)), (57, 12, NOW), NOW, epoch=2)


def test_an_account_whose_bucket_left_a_window_after_the_marks_decays_is_rewritten():
    # an event 59 minutes ago: its minute leaves the 1h window a minute from now
    state = stamped((4, 10), event_minutes_ago=59)
    assert not redis_may_lack(state, (4, 10, NOW), NOW, epoch=4)
    later = NOW + 2 * MINUTE
    assert redis_may_lack(state, (4, 10, NOW), later, epoch=4)
    assert not redis_may_lack(state, (4, 10, later), later, epoch=4)


def test_the_batchs_accounts_take_the_stamp_of_the_update_that_carries_them():
    log, core = Log(), Core()
    log.event("a", event_id="a1")
    result = core.feed(log)
    pa = partition_for("a", 4)
    writer = ChangelogWriter(FakeProducer().send, "acc", "part", {}, core.runtimes)
    records = writer.records(result, NOW, NOW, {pa: (3, 7)})
    assert core.accounts["a"].board_stamp == (3, 7)
    account = next(r for r in records if r.topic == "acc")
    assert AccountState.decode(account.value).board_stamp == (3, 7)


class Marks:
    def __init__(self, marks):
        self.marks = marks
        self.asked: list[list[int]] = []

    async def __call__(self, partitions):
        self.asked.append(partitions)
        return {p: m for p, m in self.marks.items() if p in partitions}


def test_a_restore_rewrites_only_what_redis_may_lack_and_marks_nothing_done_meanwhile():
    log, core = Log(), Core()
    names = [f"acct{i}" for i in range(40)]
    for name in names:
        log.event(name, event_id=f"{name}-1")
    core.feed(log)
    p = partition_for(names[0], 4)
    mine = [n for n in names if partition_for(n, 4) == p]
    behind = mine[:2]
    for name in mine:
        core.accounts[name].board_stamp = (4, 11 if name in behind else 9)
    marks = Marks({p: (4, 10, NOW)})
    stamps = iter(range(100, 200))
    updates = BoardUpdates(core.windows, DEFAULT_SCORING, core.runtimes,
                           lambda parts: {q: (4, next(stamps)) for q in parts})
    submitted = Submitted()
    rewriter = LayoutRewriter(core.accounts, core.runtimes, updates, lambda: NOW, submitted,
                              asyncio.Lock(), 100, marks, lambda: 4)

    async def main():
        task = rewriter.restored({p})
        # held from the call on: an update built before the rewrite ends marks no done
        during = updates.of([], set(), core.runtimes, NOW, NOW)
        assert p not in during.done and set(during.done) == set(core.runtimes) - {p}
        assert core.runtimes[p].rewriting == 1
        written = await task
        return written

    assert run(main()) == len(behind)
    assert marks.asked == [[p]]
    chunk, totals = submitted.updates
    assert sorted(v.account_id for v in chunk.views) == sorted(behind)
    assert set(totals.partitions) == set(core.runtimes), "totals and counters whole"
    assert core.runtimes[p].rewriting == 0
    assert updates.of([], set(), core.runtimes, NOW, NOW).done[p] == \
        core.runtimes[p].schedule.popped_through


def test_a_restore_without_marks_and_a_full_rewrite_write_every_account():
    log, core = Log(), Core()
    for name in ("a", "b", "c"):
        log.event(name, event_id=f"{name}1")
    core.feed(log)
    submitted = Submitted()
    rewriter = LayoutRewriter(core.accounts, core.runtimes,
                              BoardUpdates(core.windows, DEFAULT_SCORING, core.runtimes),
                              lambda: NOW, submitted, asyncio.Lock(), 100, Marks({}))

    async def restore():
        return await rewriter.restored(set(core.runtimes))

    assert run(restore()) == 3
    assert run(rewriter.rewrite("Redis lost its data")) == 3
    assert all(r.rewriting == 0 for r in core.runtimes.values())


def test_the_schedule_says_how_far_its_decays_are_popped():
    log, core = Log(), Core()
    log.event("a", event_id="a1", ts=NOW - 30 * MINUTE)
    core.feed(log)
    runtime = core.runtimes[partition_for("a", 4)]
    assert runtime.schedule.popped_through == -1
    assert runtime.schedule.pop_due(NOW + 31 * MINUTE) == {"a"}
    assert runtime.schedule.popped_through == NOW + 31 * MINUTE
    runtime.schedule.pop_due(NOW)  # an older clock moves it back never
    assert runtime.schedule.popped_through == NOW + 31 * MINUTE
