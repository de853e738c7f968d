"""The aggregation core: coalescing, exactness on replay, dedup, re-keying, profiles."""

import orjson

from streams.core.aggregate import KIND_HEADER, restore_runtime
from streams.core.campaigns import CampaignTotals
from streams.core.dedup import RecentEventIds
from streams.core.ingest import partition_for
from streams.core.scoring import account_view
from streams.core.state import AccountState, decode_segment, encode_segment
from tests.helpers import NOW, TOPICS, Core, Log


def test_a_batch_touches_each_account_once_and_sums_all_its_events():
    log, core = Log(), Core()
    for i in range(50):
        log.event("a", "view", event_id=f"v{i}", count=2)
    log.event("a", "like", event_id="l1")
    log.event("a", "like", event_id="l2", count=-1)
    log.event("a", "upload", event_id="u1")
    log.event("a", "follow", event_id="f1", count=3)
    log.event("b", "view", event_id="b1")
    result = core.feed(log)
    assert set(result.accounts) == {"a", "b"}
    assert core.metrics("a") == [100, 0, 1]
    assert core.accounts["a"].follows == 3
    assert core.metrics("b") == [1, 0, 0]
    assert result.counted == 55


def test_replaying_a_batch_counts_nothing_twice_but_marks_the_accounts():
    log, core = Log(), Core()
    for i in range(10):
        log.event("a", event_id=f"e{i}")
    core.feed(log)
    tp = (TOPICS.event("view"), partition_for("a", 4))
    again = core.replay(log, tp, 0)
    assert core.metrics("a") == [10, 0, 0]
    assert again.counted == 0 and again.outbound == []
    assert "a" in again.accounts, "a replayed account is rewritten in Redis"
    assert core.runtimes[tp[1]].progress.events == 10


def test_replay_after_partial_state_write_applies_only_the_missing_part():
    """Partition progress lost (counters behind) while the account record was written."""
    log, core = Log(), Core()
    for i in range(5):
        log.event("a", event_id=f"e{i}")
    core.feed(log)
    p = partition_for("a", 4)
    runtime = core.runtimes[p]
    runtime.progress.watermarks = [-1] * 6  # as if the segment record never reached Kafka
    runtime.progress.events = 0
    for i in range(5, 8):
        log.event("a", event_id=f"e{i}")
    core.aggregator.process({(TOPICS.event("view"), p):
                             log.records[(TOPICS.event("view"), p)]}, NOW)
    assert core.metrics("a") == [8, 0, 0]
    assert runtime.progress.events == 8


def test_a_redelivered_duplicate_is_dead_lettered_once():
    log, core = Log(), Core()
    log.event("a", event_id="same")
    log.event("a", event_id="same")
    result = core.feed(log)
    assert core.metrics("a") == [1, 0, 0]
    assert result.dead_lettered == 1
    letter = orjson.loads(result.outbound[0].value)
    assert "duplicate event_id 'same'" in letter["reason"]
    assert letter["offset"] == 1
    # a later duplicate, in another batch, still counts once
    log.event("a", event_id="same")
    assert core.feed(log).dead_lettered == 1
    assert core.metrics("a") == [1, 0, 0]


def test_bad_messages_go_to_the_dead_letter_topic_with_the_original_value():
    log, core = Log(), Core()
    log.append(TOPICS.event("view"), b"a", b"{oops")
    log.append(TOPICS.event("like"), b"a", b"\xff\x00")
    log.append(TOPICS.event("view"), b"other", orjson.dumps(
        {"event_id": "x", "account_id": "a", "ts": NOW}))
    log.append(TOPICS.event("upload"), b"a", None)
    result = core.feed(log)
    assert result.dead_lettered == 4 and result.counted == 0
    letters = [orjson.loads(o.value) for o in result.outbound]
    assert all(o.topic == TOPICS.dlq for o in result.outbound)
    by_value = {letter["value"]: letter for letter in letters}
    assert by_value["{oops"]["value_encoding"] == "utf-8"
    assert "invalid view event" in by_value["{oops"]["reason"]
    assert by_value["/wA="]["value_encoding"] == "base64"
    assert any("does not match account_id" in letter["reason"] for letter in letters)
    assert any("value is null" in letter["reason"] for letter in letters)


def test_events_far_ahead_of_their_record_timestamp_are_dead_lettered():
    # under either clock: one event of the year 2286 must not move the event clock for good
    log = Log()
    log.event("a", event_id="f", ts=NOW + 6 * 60_000)
    log.event("a", event_id="ok", ts=NOW + 4 * 60_000)
    result = Core().feed(log)
    assert result.dead_lettered == 1 and result.counted == 1


def test_unkeyed_and_misplaced_events_are_rekeyed_not_counted():
    log, core = Log(), Core()
    log.event("a", key=None, event_id="u1")
    wrong = (partition_for("a", 4) + 1) % 4
    log.append(TOPICS.event("like"), b"a", orjson.dumps(
        {"event_id": "u2", "account_id": "a", "ts": NOW}), partition=wrong)
    result = core.feed(log)
    assert result.counted == 0 and "a" not in core.accounts
    assert [o.topic for o in result.outbound] == [TOPICS.rekeyed, TOPICS.rekeyed]
    assert {dict(o.headers)[KIND_HEADER] for o in result.outbound} == {b"view", b"like"}
    # the re-keyed copies land on the account's partition and count there
    for out in result.outbound:
        log.append(out.topic, out.key, out.value, headers=list(out.headers))
    second = core.feed(log)
    assert second.counted == 2
    assert core.metrics("a") == [1, 1, 0]


def test_profiles_tombstones_and_unknown_accounts():
    log, core = Log(), Core()
    log.event("a", event_id="1")
    core.feed(log)
    assert core.accounts["a"].category == "unknown" and core.accounts["a"].listed
    log.profile("a", "police", fans=100)
    log.event("a", "follow", event_id="2", count=5)
    result = core.feed(log)
    assert result.profiles == {"a"}
    assert core.accounts["a"].category == "police" and core.accounts["a"].fans == 105
    log.append(TOPICS.accounts, b"a", None)
    core.feed(log)
    state = core.accounts["a"]
    assert not state.listed and state.fans == 5
    log.event("a", event_id="3")
    core.feed(log)
    assert core.metrics("a") == [2, 0, 0], "a tombstoned account's events still count"
    log.profile("a", "media", fans=1)
    core.feed(log)
    assert core.accounts["a"].listed and core.accounts["a"].category == "media"


def test_named_periods_count_only_their_interval():
    core = Core(periods="p1=2023-11-01/2023-11-15")
    log = Log()
    inside = 1_699_000_000_000  # 2023-11-03
    log.event("a", event_id="in", ts=inside)
    log.event("a", event_id="out", ts=1_600_000_000_000)
    end = 1_700_006_400_000  # 2023-11-15T00:00Z exactly: out
    log.event("a", event_id="end", ts=end, timestamp=end)
    core.feed(log)
    assert core.metrics("a", "all") == [3, 0, 0]
    assert core.metrics("a", "p1") == [1, 0, 0]


def test_campaign_totals_follow_account_views_by_difference():
    log, core = Log(partitions=1), Core(partitions=1)
    log.event("a", event_id="1", campaign="c1", count=3)
    log.event("a", "like", event_id="2", campaign="c1")
    log.event("b", "upload", event_id="3", campaign="c1")
    log.event("b", event_id="4")
    result = core.feed(log)
    totals = CampaignTotals()
    for state in result.accounts.values():
        totals.update(account_view(state, core.windows, NOW))
    assert totals.totals["c1"]["all"] == [3, 1, 1, 2]
    assert totals.totals["c1"]["1h"] == [3, 1, 1, 2]
    # an hour later the 1h window has emptied: the difference is applied, not a rescan
    later = NOW + 3_600_000
    assert totals.update(account_view(core.accounts["a"], core.windows, later)) == {"c1"}
    assert totals.totals["c1"]["1h"] == [0, 0, 1, 1]
    assert totals.totals["c1"]["all"] == [3, 1, 1, 2]
    assert totals.update(account_view(core.accounts["a"], core.windows, later)) == set()


def test_state_records_round_trip_and_restore_the_runtime():
    log, core = Log(partitions=1), Core(partitions=1)
    log.profile("a", "police", fans=10)
    log.event("a", event_id="1", campaign="c1")
    log.event("a", event_id="1")
    core.feed(log)
    state = core.accounts["a"]
    assert AccountState.decode(state.encode()) == state
    runtime = core.runtimes[0]
    sealed = runtime.recent.seal(0, NOW)
    records = [decode_segment(encode_segment(0, s, ids, runtime.progress))
               for s, ids in sealed]
    restored = restore_runtime(0, RecentEventIds(), [(s, h) for _, s, h in records], [state],
                               core.windows, NOW)
    assert restored.progress.events == 1 and restored.progress.dlq == 1
    assert restored.progress.watermarks == runtime.progress.watermarks
    assert restored.recent.first_seen("1") == runtime.recent.first_seen("1")
    assert restored.campaigns.totals["c1"]["all"] == [1, 0, 0, 1]
    assert len(restored.schedule) == 4, "one due time per rolling window of the new buckets"


def test_a_second_rekeyed_copy_of_one_source_message_is_a_replay_not_a_duplicate():
    """A crash between re-keying and saving state re-keys the same message again."""
    log, core = Log(), Core()
    log.event("a", key=None, event_id="u1")
    (out,) = core.feed(log).outbound
    for _ in range(2):
        log.append(out.topic, out.key, out.value, headers=list(out.headers))
    result = core.feed(log)
    assert result.counted == 1 and result.dead_lettered == 0
    assert core.metrics("a") == [1, 0, 0]
    # but a producer's duplicate of it, re-keyed from elsewhere, is dead-lettered
    log.event("a", key=None, event_id="u1")
    (again,) = core.feed(log).outbound
    log.append(again.topic, again.key, again.value, headers=list(again.headers))
    assert core.feed(log).dead_lettered == 1
    # and a second copy of that dead-lettered duplicate is a replay again
    log.append(again.topic, again.key, again.value, headers=list(again.headers))
    assert core.feed(log).dead_lettered == 0
    p = partition_for("a", 4)
    recent = core.runtimes[p].recent
    sealed = recent.seal(0, NOW)
    (_, segment, _), = [decode_segment(encode_segment(p, s, ids, None))
                            for s, ids in sealed]
    restored = RecentEventIds()
    restored.restore([segment])
    for out_ in (out, again):
        origin = dict(out_.headers)["rf-origin"].decode()
        assert restored.origin_ref(origin) == recent.origin_ref(origin) is not None
    assert restored.first_seen("u1") == recent.first_seen("u1")
