"""Apply a batch of Kafka records to account and partition state: the functional core.

No broker, no Redis: `BatchAggregator.process` takes records by (topic, partition)
(anything with offset, timestamp, key, value, headers) and returns what the shell must
send and write. Each account is touched at most once per batch however many events
it had, which is what makes the worker fast
(tests/test_aggregate.py::test_a_batch_touches_each_account_once_and_sums_all_its_events).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.events import EventKind, Profile
from streams.core.campaigns import CampaignTotals
from streams.core.dedup import RecentEventIds, Segment, source_ref, unpack_ref
from streams.core.ingest import (
    FUTURE_TOLERANCE_MS,
    Rejected,
    Tombstone,
    ValidEvent,
    dead_letter,
    fast_event_fields,
    parse_event,
    parse_profile,
)
from streams.core.ingest import partition_for as default_partition_for
from streams.core.periods import DAY_MS
from streams.core.series import (
    ChunkRecord,
    SeriesBook,
    SeriesChanges,
    first_kept,
    mark_active,
    new_activity,
)
from streams.core.state import (
    KIND_SLOTS,
    METRIC_OF_KIND,
    SLOT_ACCOUNTS,
    SLOT_REKEYED,
    AccountProfile,
    AccountState,
    PartitionProgress,
)
from streams.core.topics import Topics
from streams.core.windows import HOUR_MS, MINUTE_MS, DecaySchedule, Windows, bucket_floors

KIND_HEADER = "rf-kind"
ORIGIN_HEADER = "rf-origin"
PROFILE_KIND = "profile"
#: how far past the newest dedup segment a restored partition's next segment is numbered:
#: more than the segments a worker can have in hand (a few batches' worth)
SEQ_GAP = 1_000_000
#: accounts whose key and partition are remembered (forgotten all at once when full)
PLACEMENTS_MAX = 1 << 20


class FetchedRecord(Protocol):
    """A record as the consumer fetched it (aiokafka's own record, or a ConsumerRecord)."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A fetched record with the topic and partition it was read from (what the paths
    other than the hot loop need: dead letters and re-keyed copies name it)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]

    @classmethod
    def of(cls, topic: str, partition: int, record: FetchedRecord) -> SourceRecord:
        return cls(topic, partition, record.offset, record.timestamp, record.key,
                   record.value, record.headers)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message the batch must send before its state is written."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class PartitionRuntime:
    """Live state of one owned partition, rebuilt from the changelog on assignment."""

    progress: PartitionProgress
    recent: RecentEventIds
    series: SeriesBook
    campaigns: CampaignTotals = field(default_factory=CampaignTotals)
    schedule: DecaySchedule = field(default_factory=DecaySchedule)
    #: the newest owner epoch among its restored records: its writes' epochs are at
    #: least this, also when the consumer group was created anew (its generations
    #: start again)
    epoch_floor: int = 0
    #: rewrites of its layout from state under way (streams/sink/rewrite.py): until they
    #: end its updates mark nothing done in Redis, which may lack what they rewrite
    rewriting: int = 0


@dataclass(slots=True)
class BatchResult:
    outbound: list[Outbound] = field(default_factory=list)
    #: accounts whose state changed or whose events were replayed (Redis must be rewritten)
    accounts: dict[str, AccountState] = field(default_factory=dict)
    #: accounts that received a profile or tombstone in this batch
    profiles: set[str] = field(default_factory=set)
    partitions: set[int] = field(default_factory=set)
    #: partition -> what the batch changed in its campaign series
    series: dict[int, SeriesChanges] = field(default_factory=dict)
    counted: int = 0
    dead_lettered: int = 0


def new_runtime(partition: int, recent: RecentEventIds) -> PartitionRuntime:
    return PartitionRuntime(PartitionProgress(partition), recent, SeriesBook(partition))


def restore_runtime(
    partition: int,
    recent: RecentEventIds,
    segments: Iterable[tuple[Segment, PartitionProgress | None]],
    accounts: Iterable[AccountState],
    windows: Windows,
    clock_ms: int,
    chunks: Iterable[ChunkRecord] = (),
) -> PartitionRuntime:
    """Rebuild a partition's runtime from its changelog records."""
    progress = PartitionProgress(partition)
    newest = -1
    kept = []
    for segment, seg_progress in segments:
        kept.append(segment)
        if seg_progress is not None and segment.seq > newest:
            progress, newest = seg_progress, segment.seq
    # a new chain starts SEQ_GAP past the newest segment: a stalled previous owner's
    # late segments (seqs just past it) never replace this owner's (test_fencing.py)
    progress.seq = max([0, *(s.seq + SEQ_GAP for s in kept)])
    recent.restore(kept)
    clock_ms = max(clock_ms, progress.clock)
    accounts, chunks = list(accounts), list(chunks)
    runtime = PartitionRuntime(progress, recent, SeriesBook.restore(
        partition, chunks, accounts, clock_ms))
    runtime.epoch_floor = max([0, *(a.epoch for a in accounts), *(c.epoch for c in chunks)])
    runtime.schedule.popped_through = clock_ms
    for state in accounts:
        runtime.schedule.add_all(state.due_times(clock_ms), state.account_id)
        if state.campaigns:
            runtime.campaigns.update_sums(state.account_id, {
                name: counts.window_sums(windows, clock_ms)
                for name, counts in state.campaigns.items()})
    return runtime


def _origin(text: str) -> tuple[str, int, int] | None:
    """`topic:partition:offset` as the worker writes it, or None."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        return None
    topic, partition, offset = parts
    if not (partition.isascii() and partition.isdigit() and offset.isascii()
            and offset.isdigit()):
        return None
    if int(partition) >= 2**31 or int(offset) >= 2**63:
        return None
    return topic, int(partition), int(offset)


class BatchAggregator:
    """Turns record batches into state changes; owns no I/O."""

    def __init__(
        self,
        topics: Topics,
        windows: Windows,
        partitions: int,
        accounts: MutableMapping[str, AccountState],
        runtimes: Mapping[int, PartitionRuntime],
    ) -> None:
        self.topics = topics
        self.windows = windows
        self.n_partitions = partitions
        self.accounts = accounts
        self.runtimes = runtimes
        self._slots = topics.slot_of()
        self._floors = bucket_floors(0)
        #: per resolution (minute, hour, day), the first time whose bucket is kept; then
        #: the first minute and hour the campaign series keep (streams/core/series.py)
        self._kept_from = (0, 0, 0, 0, 0)
        #: (account, kind, campaign, fixed windows, finest kept bucket) ->
        #: [count, events, a ts, partition] of this batch's events, applied at its end
        self._coalesced: dict[tuple[Any, ...], list[int]] = {}
        #: account -> (its key, its partition), for accounts seen (see `_place`)
        self._placements: dict[str, tuple[bytes, int]] = {}
        #: with no named period, every event's fixed windows: just `all`
        self._all_only = windows.fixed_containing(0) if not windows.periods else None

    def process(self, records: Mapping[Any, Sequence[FetchedRecord]],
                clock_ms: int) -> BatchResult:
        """Apply a batch, records by (topic, partition); `clock_ms` (the clock before it)
        decides which buckets to keep."""
        self._floors = floors = bucket_floors(clock_ms)
        series_minute, series_hour = first_kept(clock_ms)
        self._kept_from = ((floors[0] + 1) * MINUTE_MS, (floors[1] + 1) * HOUR_MS,
                           (floors[2] + 1) * DAY_MS, series_minute * MINUTE_MS,
                           series_hour * HOUR_MS)
        result = BatchResult()
        partitions = {partition for (_, partition), batch in records.items() if batch}
        for partition in partitions:
            self.runtimes[partition].series.begin(clock_ms)
        for (topic, partition), batch in records.items():
            if batch:
                self._process_partition(topic, partition, batch, result)
        self._apply_coalesced()
        for partition in partitions:
            result.series[partition] = self.runtimes[partition].series.finish()
        return result

    def _apply_coalesced(self) -> None:
        floors = self._floors
        accounts = self.accounts
        runtimes = self.runtimes
        for (account_id, kind, campaign, fixed, bucket, new_to_series), \
                (count, n, ts, partition) in self._coalesced.items():
            state = accounts[account_id]
            opened = state.add(kind, count, ts, fixed, campaign, floors, n)
            if opened:
                runtimes[partition].schedule.add_all(opened, account_id)
            if campaign is not None and bucket & 3 < 2:  # a minute or hour the series keep
                self._series(state, runtimes[partition].series, kind, campaign, count, ts,
                             bucket, new_to_series)
        self._coalesced.clear()

    @staticmethod
    def _series(state: AccountState, series: SeriesBook, kind: str, campaign: str,
                count: int, ts: int, bucket: int, new_to_series: bool) -> None:
        """A group's share of the campaign series: its account's activity (each bit
        flipped is one more distinct account), and its counts when no chunk has them."""
        minute = bucket >> 2 if bucket & 3 == 0 else None
        hour = ts // HOUR_MS
        activity = state.activity.get(campaign)
        if activity is None:
            activity = state.activity[campaign] = new_activity()
        if minute is not None and mark_active(activity, 0, minute):
            series.account_active(campaign, 0, minute)
        if mark_active(activity, 1, hour):
            series.account_active(campaign, 1, hour)
        metric = METRIC_OF_KIND.get(kind)
        if new_to_series and metric is not None:
            series.add(campaign, metric, count, minute, hour)

    def _process_partition(self, topic: str, partition: int, batch: Sequence[FetchedRecord],
                           result: BatchResult) -> None:
        slot, kind = self._slots[topic]
        runtime = self.runtimes[partition]
        progress = runtime.progress
        watermark = progress.watermarks[slot]
        result.partitions.add(partition)
        runtime.series.saw(slot, batch[-1].offset)
        if kind is not None:
            self._events(topic, batch, slot, kind, watermark, runtime, result)
        else:
            for fetched in batch:
                record = SourceRecord.of(topic, partition, fetched)
                fresh = record.offset > watermark
                if slot == SLOT_ACCOUNTS:
                    self._profile(record, fresh, runtime, result)
                else:
                    self._event(record, slot, None, fresh, runtime, result)
        progress.watermarks[slot] = max(watermark, batch[-1].offset)

    def _events(self, topic: str, batch: Sequence[FetchedRecord], slot: int, kind: EventKind,
                watermark: int, runtime: PartitionRuntime, result: BatchResult) -> None:
        """Records of an event topic: the hot loop, `_event` and `_count` made one.

        A message in the usual shape, keyed by its account and on that account's
        partition, is counted here with no object built for it. Anything else (rejected,
        misplaced, duplicate, or in an unusual shape) takes `_event`, which decides it
        alike: `fast_event_fields` accepts only what `parse_event` accepts
        (tests/test_validation_equivalence.py).
        """
        progress = runtime.progress
        partition = progress.partition
        first_ref = runtime.recent.first_ref
        touched = result.accounts
        coalesce = self._coalesce
        placements, place = self._placements, self._place
        counted, clock = 0, progress.clock
        tolerance = FUTURE_TOLERANCE_MS
        series_high = runtime.series.high
        for record in batch:
            offset = record.offset
            fresh = offset > watermark
            value = record.value
            fields = fast_event_fields(kind, value) if value is not None else None
            if fields is None:
                self._event(SourceRecord.of(topic, partition, record), slot, kind, fresh,
                            runtime, result)
                continue
            event_id, account_id, ts, count, campaign = fields
            placed = placements.get(account_id) or place(account_id)
            if (record.key != placed[0] or placed[1] != partition
                    or ts > record.timestamp + tolerance):
                self._event(SourceRecord.of(topic, partition, record), slot, kind, fresh,
                            runtime, result)
                continue
            ref = source_ref(slot, offset)
            seen = first_ref(event_id, ref)
            if seen != ref:
                self._duplicate(SourceRecord.of(topic, partition, record), event_id, seen,
                                fresh, progress, result, None)
                continue
            state = touched.get(account_id) or self._state(account_id, partition, result)
            if fresh:
                counted += 1
                if ts > clock:
                    clock = ts
            applied = state.applied
            if offset > applied[slot]:
                applied[slot] = offset
                if campaign is None or offset > series_high[slot]:
                    coalesce(account_id, kind, campaign, ts, count, partition)
                else:
                    self._replayed(account_id, kind, campaign, ts, count, runtime, slot, offset)
            elif campaign is not None:
                self._series_replayed(kind, campaign, ts, count, runtime, slot, offset)
        progress.events += counted
        result.counted += counted
        progress.clock = max(progress.clock, clock)

    def _place(self, account_id: str) -> tuple[bytes, int]:
        """The key an account's messages carry and the partition it belongs to."""
        if len(self._placements) >= PLACEMENTS_MAX:
            self._placements.clear()
        placed = self._placements[account_id] = (
            account_id.encode(), default_partition_for(account_id, self.n_partitions))
        return placed

    def _replayed(self, account_id: str, kind: EventKind, campaign: str, ts: int, count: int,
                  runtime: PartitionRuntime, slot: int, offset: int) -> None:
        """An event new to its account that a series chunk may hold already (a replay):
        the account takes it, each chunk decides by its own offsets."""
        self._coalesce(account_id, kind, campaign, ts, count, runtime.progress.partition,
                       False)
        self._series_replayed(kind, campaign, ts, count, runtime, slot, offset)

    @staticmethod
    def _series_replayed(kind: str, campaign: str, ts: int, count: int,
                         runtime: PartitionRuntime, slot: int, offset: int) -> None:
        metric = METRIC_OF_KIND.get(kind)
        if metric is not None:
            runtime.series.add_replayed(campaign, metric, count, ts, slot, offset)

    def _coalesce(self, account_id: str, kind: EventKind, campaign: str | None, ts: int,
                  count: int, partition: int, new_to_series: bool = True) -> None:
        """Add an event to its group: events that land in the same kept buckets and fixed
        windows change the state alike, so each group is applied once (`_apply_coalesced`).
        Campaign events keep the minute, or the hour, as long as the series keep it.
        """
        minute_from, hour_from, day_from, series_minute_from, series_hour_from = \
            self._kept_from
        # the finest kept bucket decides the coarser ones: one int names it
        if ts >= minute_from or (campaign is not None and ts >= series_minute_from):
            bucket = ts // MINUTE_MS * 4
        elif ts >= hour_from or (campaign is not None and ts >= series_hour_from):
            bucket = ts // HOUR_MS * 4 + 1
        elif ts >= day_from:
            bucket = ts // DAY_MS * 4 + 2
        else:
            bucket = 3
        fixed = self._all_only or self.windows.fixed_containing(ts)
        group = (account_id, kind, campaign, fixed, bucket, new_to_series)
        sums = self._coalesced.get(group)
        if sums is None:
            self._coalesced[group] = [count, 1, ts, partition]
        else:
            sums[0] += count
            sums[1] += 1

    def _reject(self, record: SourceRecord, reason: str, fresh: bool, progress: PartitionProgress,
                result: BatchResult, origin: tuple[str, int, int] | None = None) -> None:
        if not fresh:
            return
        topic, partition, offset = origin or (record.topic, record.partition, record.offset)
        result.outbound.append(Outbound(
            self.topics.dlq, record.key,
            dead_letter(reason, topic, partition, offset, record.value),
        ))
        progress.dlq += 1
        result.dead_lettered += 1

    def _state(self, account_id: str, partition: int, result: BatchResult) -> AccountState:
        """The account's state, marked as touched by this batch (created if new)."""
        state = result.accounts.get(account_id)
        if state is None:
            state = self.accounts.get(account_id)
            if state is None:
                state = self.accounts[account_id] = AccountState(account_id, partition)
            result.accounts[account_id] = state
        return state

    def _misplaced(self, account_id: str, partition: int) -> bool:
        return default_partition_for(account_id, self.n_partitions) != partition

    @staticmethod
    def _rekey_headers(record: SourceRecord) -> tuple[str | None, tuple[str, int, int] | None]:
        """The kind and origin a re-keyed message carries; None for a missing or
        malformed progress (the worker writes both; anything else is not its own)."""
        kind = origin = None
        for name, value in record.headers or ():
            if not isinstance(value, bytes):
                continue
            if name == KIND_HEADER:
                kind = value.decode(errors="replace")
            elif name == ORIGIN_HEADER:
                origin = _origin(value.decode(errors="replace"))
        return kind, origin

    def _event(self, record: SourceRecord, slot: int, kind: EventKind | None, fresh: bool,
               runtime: PartitionRuntime, result: BatchResult) -> None:
        progress = runtime.progress
        origin = None
        if slot == SLOT_REKEYED:
            rekeyed_kind, origin = self._rekey_headers(record)
            if origin is None:
                self._reject(record, f"re-keyed message without a valid {ORIGIN_HEADER} progress "
                             "(topic:partition:offset)", fresh, progress, result)
                return
            if rekeyed_kind == PROFILE_KIND:
                self._profile(record, fresh, runtime, result, origin)
                return
            if rekeyed_kind not in KIND_SLOTS:
                self._reject(record, f"re-keyed message without a valid {KIND_HEADER} header",
                             fresh, progress, result)
                return
            kind = rekeyed_kind  # type: ignore[assignment]
        assert kind is not None
        event = parse_event(kind, record.key, record.value, record.timestamp)
        if isinstance(event, Rejected):
            self._reject(record, event.reason, fresh, progress, result, origin)
        elif self._placed(record, event.account_id, kind, slot, fresh, runtime, result, origin):
            self._count(record, event, kind, slot, fresh, runtime, result, origin)

    def _placed(self, record: SourceRecord, account_id: str, kind: str, slot: int, fresh: bool,
                runtime: PartitionRuntime, result: BatchResult,
                origin: tuple[str, int, int] | None) -> bool:
        """True when the message sits where its account lives; else re-key or reject it."""
        partition = record.partition
        if record.key is not None and not self._misplaced(account_id, partition):
            return True
        if slot == SLOT_REKEYED:
            self._reject(record, "re-keyed message landed on the wrong partition "
                         "(do the topics' partition counts differ?)",
                         fresh, runtime.progress, result, origin)
        elif fresh:
            coordinates = f"{record.topic}:{partition}:{record.offset}"
            result.outbound.append(Outbound(
                self.topics.rekeyed, account_id.encode(), record.value,
                ((KIND_HEADER, kind.encode()), (ORIGIN_HEADER, coordinates.encode())),
            ))
        return False

    def _count(self, record: SourceRecord, event: ValidEvent, kind: EventKind, slot: int,
               fresh: bool, runtime: PartitionRuntime, result: BatchResult,
               origin: tuple[str, int, int] | None) -> None:
        progress = runtime.progress
        offset = record.offset
        ref = source_ref(slot, offset)
        recent = runtime.recent
        origin_key = first_ref = None
        if origin is not None:
            origin_key = ":".join(map(str, origin))
            first_ref = recent.origin_ref(origin_key)
            if first_ref is not None and first_ref != ref:
                # another re-keyed copy of one source message (a crash while re-keying)
                self._state(event.account_id, progress.partition, result)
                return
        seen = recent.first_seen(event.event_id)
        if seen is not None and seen != ref:
            if origin_key is not None and first_ref is None:
                recent.add_origin(origin_key, ref)
            self._duplicate(record, event.event_id, seen, fresh, progress, result, origin)
            return
        if seen is None:
            recent.add(event.event_id, ref, origin_key)
        state = self._state(event.account_id, progress.partition, result)
        if fresh:
            progress.events += 1
            result.counted += 1
            if event.ts > progress.clock:
                progress.clock = event.ts
        campaign = event.campaign
        if offset <= state.applied[slot]:
            if campaign is not None:
                self._series_replayed(kind, campaign, event.ts, event.count, runtime, slot,
                                      offset)
            return
        state.applied[slot] = offset
        if campaign is None or offset > runtime.series.high[slot]:
            self._coalesce(event.account_id, kind, campaign, event.ts, event.count,
                           progress.partition)
        else:
            self._replayed(event.account_id, kind, campaign, event.ts, event.count, runtime,
                           slot, offset)

    def _duplicate(self, record: SourceRecord, event_id: str, seen: int, fresh: bool,
                   progress: PartitionProgress, result: BatchResult,
                   origin: tuple[str, int, int] | None) -> None:
        first_slot, first_offset = unpack_ref(seen)
        reason = (f"duplicate event_id {event_id!r}: first counted from "
                  f"{self.topics.sources[first_slot]} partition {progress.partition} "
                  f"offset {first_offset}")
        self._reject(record, reason, fresh, progress, result, origin)

    def _profile(self, record: SourceRecord, fresh: bool, runtime: PartitionRuntime,
                 result: BatchResult, origin: tuple[str, int, int] | None = None) -> None:
        parsed = parse_profile(record.key, record.value)
        if isinstance(parsed, Rejected):
            self._reject(record, parsed.reason, fresh, runtime.progress, result, origin)
            return
        slot = SLOT_REKEYED if origin is not None else SLOT_ACCOUNTS
        if not self._placed(record, parsed.account_id, PROFILE_KIND, slot, fresh, runtime,
                            result, origin):
            return
        state = self._state(parsed.account_id, record.partition, result)
        result.profiles.add(parsed.account_id)
        if record.offset <= state.applied[slot]:
            return
        state.applied[slot] = record.offset
        state.profile_seen = True
        if isinstance(parsed, Tombstone):
            state.profile = None
        else:
            assert isinstance(parsed, Profile)
            state.profile = AccountProfile(parsed.name, parsed.category, parsed.fans)
