"""Per-account and per-partition state, and how each is kept in a changelog record.

Exactness rests on two invariants, both held by records that are written whole:

* an `AccountState` names, per source topic, the last offset already applied to it
  (`applied`); a replayed message at or below it changes nothing;
* a `PartitionProgress` (carried by the newest dedup segment of the partition) names, per
  source topic, the last offset already counted, dead-lettered or re-keyed
  (`watermarks`); a replayed message at or below it sends nothing again.

So a crash at any point between two changelog writes loses nothing and counts nothing
twice, whatever the order in which the records reached the broker (tests/test_aggregate.py,
replays after partial state writes; tests/integration/test_crash_trials.py).

Each record also names the owner epoch it was built in (`epoch`: the consumer group's
generation). A worker woken from a stall sends the records it had in hand after the new
owner's: readers keep, per key, the record of the newest epoch, and of an epoch the
newest offset (`supersedes`, and the tables: tests/integration/test_fencing.py).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from streams.core.dedup import Entry, Segment
from streams.core.windows import LIKES, RECORD, UPLOADS, VIEWS, WindowedCounts

UNKNOWN_CATEGORY = "unknown"
#: the format of account-state changelog records (2: never in parts; 3: no campaign
#: activity, streams/core/series.py; 4 may end with the board stamp, which readers of
#: records without it take as NO_STAMP)
STATE_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
#: the first element of a part record (an account record begins with its version)
PART_MARK = "part"
#: every changelog record rankflow writes stays under this many bytes: Kafka's default
#: record limit (`message.max.bytes`, and `max.message.bytes` of a topic) is 1,048,588
RECORD_LIMIT = 1_000_000
#: the campaigns of one part record take at most this many bytes (the rest: its header)
PART_BUDGET = RECORD_LIMIT - 1_000
#: counts holding more ints than this are pruned before they are written: only a batch
#: far ahead of the clock opens so many buckets (an event-clock cold start)
PRUNE_BEYOND = 200 * RECORD


#: the board stamp of a state no stamped board update carried (yet): Redis may lack it
NO_STAMP: tuple[int, int] = (-1, -1)


class StateFormatError(ValueError):
    """A state record this version of rankflow cannot read."""

#: Source topic slots, also used in dedup source refs.
SLOT_VIEW, SLOT_LIKE, SLOT_FOLLOW, SLOT_UPLOAD, SLOT_ACCOUNTS, SLOT_REKEYED = range(6)
N_SLOTS = 6
KIND_SLOTS = {"view": SLOT_VIEW, "like": SLOT_LIKE, "follow": SLOT_FOLLOW, "upload": SLOT_UPLOAD}

#: Which metric each kind adds to; follows add to `follows` (fans), not to a window metric.
METRIC_OF_KIND = {"view": VIEWS, "like": LIKES, "upload": UPLOADS}


@dataclass(frozen=True, slots=True)
class AccountProfile:
    name: str
    category: str
    fans: int


@dataclass(slots=True)
class AccountState:
    """Everything rankflow knows of one account; one changelog record."""

    account_id: str
    partition: int
    profile: AccountProfile | None = None
    #: True once a profile or a tombstone arrived; a tombstone leaves profile None.
    profile_seen: bool = False
    follows: int = 0
    counts: WindowedCounts = field(default_factory=WindowedCounts)
    #: campaign -> the account's campaign-tagged counts
    campaigns: dict[str, WindowedCounts] = field(default_factory=dict)
    applied: array[int] = field(default_factory=lambda: array("q", [-1] * N_SLOTS))
    #: account records written with their campaigns in parts: the parity of the part
    #: keys the newest one names (see `records`)
    split_writes: int = 0
    #: the owner epoch of the newest record written of it (or read: see `supersedes`)
    epoch: int = 0
    #: campaign -> its active minutes and hours, `[newest minute, bits, newest hour,
    #: bits]` (streams/core/series.py: the series' distinct accounts)
    activity: dict[str, list[int]] = field(default_factory=dict)
    #: the owner stamp (epoch, write sequence) of the board update that carries this
    #: state to Redis: a restore need not rewrite it where Redis marks that update done
    #: (streams/sink/rewrite.py)
    board_stamp: tuple[int, int] = NO_STAMP

    @property
    def listed(self) -> bool:
        """Stands on boards: has a profile, or never had one (a tombstone takes it off)."""
        return self.profile is not None or not self.profile_seen

    @property
    def category(self) -> str:
        return self.profile.category if self.profile else UNKNOWN_CATEGORY

    @property
    def fans(self) -> int:
        return (self.profile.fans if self.profile else 0) + self.follows

    def add(self, kind: str, count: int, ts: int, fixed: tuple[int, ...], campaign: str | None,
            floors: tuple[int, int, int], events: int = 1) -> list[int] | None:
        """Count `events` events (adding up to `count`) that fall in the buckets of `ts`.

        Returns the due times of the buckets they opened, if any.
        """
        if kind == "follow":
            self.follows += count
        slot = METRIC_OF_KIND.get(kind)
        opened = self.counts.add(slot, count, ts, fixed, floors, events)
        if campaign is not None:
            counts = self.campaigns.get(campaign)
            if counts is None:
                counts = self.campaigns[campaign] = WindowedCounts()
            more = counts.add(slot, count, ts, fixed, floors, events)
            if more:
                opened = more if opened is None else opened + more
        return opened

    def prune(self, clock_ms: int) -> None:
        self.counts.prune(clock_ms)
        for counts in self.campaigns.values():
            counts.prune(clock_ms)

    def due_times(self, clock_ms: int) -> set[int]:
        due = set(self.counts.due_times(clock_ms))
        for counts in self.campaigns.values():
            due.update(counts.due_times(clock_ms))
        return due

    def records(self, clock_ms: int) -> list[tuple[str, bytes]]:
        """The account's changelog records, (key, value), each under RECORD_LIMIT.

        1. prune counts a batch far ahead of the clock grew past PRUNE_BEYOND (their
           buckets no window reads again: the same prune as decay's);
        2. the whole account as one record, if it fits (all but accounts in thousands of
           campaigns);
        3. else its campaigns in part records, first, on the keys of the other parity
           than the parts the newest account record names, then that record naming the
           new ones: a crash between the sends leaves the older record with its parts
           whole (tests/test_state_records.py).
        """
        self._prune_grown(clock_ms)
        campaigns = self._campaign_entries()
        whole = self._encode(campaigns, 0)
        if len(whole) <= RECORD_LIMIT:
            return [(self.account_id, whole)]
        parts = _packed(campaigns)
        self.split_writes += 1
        records = [(part_key(self.account_id, self.split_writes, i),
                    orjson.dumps([PART_MARK, STATE_VERSION, self.account_id,
                                  self.split_writes, part, self.epoch]))
                   for i, part in enumerate(parts)]
        return [*records, (self.account_id, self._encode({}, len(parts)))]

    def encode(self) -> bytes:
        """The account as one record (tests and tools; the worker writes `records`)."""
        return self._encode(self._campaign_entries(), 0)

    def _campaign_entries(self) -> dict[str, list[object]]:
        """Campaign -> [its counts, its activity with the bits in hex] (orjson writes no
        int past 64 bits)."""
        activity = self.activity
        return {name: [counts.to_list(), _activity_text(activity.get(name))]
                for name, counts in self.campaigns.items()}

    def _prune_grown(self, clock_ms: int) -> None:
        if len(self.counts.data) > PRUNE_BEYOND:
            self.counts.prune(clock_ms)
        for counts in self.campaigns.values():
            if len(counts.data) > PRUNE_BEYOND:
                counts.prune(clock_ms)

    def _encode(self, campaigns: Mapping[str, list[object]], parts: int) -> bytes:
        profile = self.profile
        return orjson.dumps([
            STATE_VERSION,
            self.account_id,
            self.partition,
            [profile.name, profile.category, profile.fans] if profile else None,
            self.profile_seen,
            self.follows,
            self.counts.to_list(),
            campaigns,
            self.applied.tolist(),
            self.split_writes,
            parts,
            self.epoch,
            self.board_stamp,
        ])

    @classmethod
    def decode(cls, data: bytes) -> AccountState:
        """A whole account record (one with parts: `decode_record` and `assemble`)."""
        record = decode_record(data)
        if isinstance(record, StatePart):
            raise StateFormatError(f"a part record of account {record.account_id!r}, "
                                   "not an account record")
        if record.parts:
            raise StateFormatError(f"account {record.state.account_id!r}: its record has "
                                   f"{record.parts} parts, to be assembled")
        return record.state


@dataclass(frozen=True, slots=True)
class StatePart:
    """Campaigns of an account whose record did not fit in one (`AccountState.records`)."""

    account_id: str
    split_writes: int
    campaigns: dict[str, list[object]]
    version: int = STATE_VERSION
    #: the owner epoch of the account record it belongs to
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """A decoded account record: the state, and how many part records hold the rest."""

    state: AccountState
    parts: int


def part_key(account_id: str, split_writes: int, index: int) -> str:
    """`{account}#{parity}#{index}`: '#' is not in the account id charset."""
    return f"{account_id}#{split_writes % 2}#{index}"


def is_part_key(key: str) -> bool:
    return "#" in key


def decode_record(data: bytes) -> AccountRecord | StatePart:
    record = orjson.loads(data)
    if record[0] == PART_MARK:
        _mark, version, account_id, split_writes, campaigns, *epoch = record
        return StatePart(account_id, split_writes, campaigns, version,
                         epoch[0] if epoch else 0)
    if record[0] not in READABLE_VERSIONS:
        raise StateFormatError(
            f"an account-state record of format {record[0]!r}, this worker reads "
            f"{READABLE_VERSIONS}: its changelog was written by another rankflow version "
            f"(use a new RANKFLOW_APP_ID, or delete the state topics to rebuild)")
    if record[0] == 2:
        record += [0, 0]
    (_v, account_id, partition, profile, seen, follows, counts, campaigns,
     applied, split_writes, parts, *optional) = record
    if profile:  # categories repeat across accounts: keep one copy of each
        profile = AccountProfile(profile[0], sys.intern(profile[1]), profile[2])
    state = AccountState(account_id, partition, profile, seen, follows,
                         WindowedCounts.from_list(counts), {}, array("q", applied),
                         split_writes, epoch=optional[0] if optional else 0,
                         board_stamp=_stamp(*optional[1]) if len(optional) > 1 else NO_STAMP)
    _add_campaigns(state, campaigns, record[0])
    return AccountRecord(state, parts)


@lru_cache(maxsize=4096)
def _stamp(epoch: int, seq: int) -> tuple[int, int]:
    """One tuple per stamp: a batch's accounts share it, in memory as when written."""
    return epoch, seq


def epoch_of(record: AccountRecord | StatePart) -> int:
    return record.state.epoch if isinstance(record, AccountRecord) else record.epoch


def supersedes(current: bytes, incoming: bytes) -> bool:
    """Does the newer-offset record `incoming` replace `current`, of the same key? Yes,
    unless an older owner built it: a stalled worker's late send (`rankflow rebuild`)."""
    return epoch_of(decode_record(incoming)) >= epoch_of(decode_record(current))


class Overtaken:
    """The keys whose newest record read was built by an older owner than the state it
    would replace: a stalled worker's late send. Such a record is not applied, and its
    key is marked until a newer record is read or the owner writes the state again
    (compaction would keep the late record alone: tests/integration/test_fencing.py)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def admits(self, key: str, current_epoch: int | None, epoch: int) -> bool:
        """Apply a record of `key` built in `epoch` over a state of `current_epoch`?"""
        if current_epoch is not None and epoch < current_epoch:
            self.keys.add(key)
            return False
        self.keys.discard(key)
        return True


def assemble(record: AccountRecord, parts: Mapping[str, StatePart]) -> AccountState:
    """An account from its record and the part records it names (from `parts`, by key)."""
    state = record.state
    for index in range(record.parts):
        key = part_key(state.account_id, state.split_writes, index)
        part = parts.get(key)
        if part is None or part.split_writes != state.split_writes:
            found = "missing" if part is None else f"of write {part.split_writes}"
            raise StateFormatError(f"account {state.account_id!r}: part {key!r} of write "
                                   f"{state.split_writes} is {found}")
        _add_campaigns(state, part.campaigns, part.version)
    return state


class PartsAhead:
    """Part records read ahead of the account record that names them: a changelog is
    read in order, and an account's parts are written before it. Parts of the other
    parity wait for that account's next record in parts (only accounts in thousands of
    campaigns have any)."""

    def __init__(self) -> None:
        self.parts: dict[str, StatePart] = {}

    def hold(self, key: str, part: StatePart | None) -> None:
        if part is None:
            self.parts.pop(key, None)
        else:
            self.parts[key] = part

    def account(self, record: AccountRecord) -> AccountState:
        """The account whole, its parts no longer held."""
        state = assemble(record, self.parts)
        for index in range(record.parts):
            self.parts.pop(part_key(state.account_id, state.split_writes, index), None)
        return state


def accounts_of(latest: Mapping[str, bytes]) -> dict[str, AccountState]:
    """Every account of a changelog's newest record per key (`rankflow rebuild`)."""
    records = {key: decode_record(value) for key, value in latest.items()}
    parts = {key: r for key, r in records.items() if isinstance(r, StatePart)}
    return {r.state.account_id: assemble(r, parts) for r in records.values()
            if isinstance(r, AccountRecord)}


def _add_campaigns(state: AccountState, campaigns: Mapping[str, Any], version: int) -> None:
    """A record's campaign entries into the state: counts (before version 4, all there
    is), or [counts, activity]."""
    for name, entry in campaigns.items():
        name = sys.intern(name)
        if version < 4:
            state.campaigns[name] = WindowedCounts.from_list(entry)
            continue
        counts, activity = entry
        state.campaigns[name] = WindowedCounts.from_list(counts)
        if activity:
            minute, minute_bits, hour, hour_bits = activity
            state.activity[name] = [minute, int(minute_bits, 16), hour, int(hour_bits, 16)]


def _activity_text(activity: list[int] | None) -> list[object]:
    if activity is None:
        return []
    minute, minute_bits, hour, hour_bits = activity
    return [minute, format(minute_bits, "x"), hour, format(hour_bits, "x")]


def _packed(campaigns: Mapping[str, list[object]]) -> list[dict[str, list[object]]]:
    """Campaigns in parts of at most PART_BUDGET bytes each, in their order."""
    parts: list[dict[str, list[object]]] = [{}]
    size = 0
    for name, counts in campaigns.items():
        entry = len(name) + len(orjson.dumps(counts)) + 4  # "name":[...],
        if parts[-1] and size + entry > PART_BUDGET:
            parts.append({})
            size = 0
        parts[-1][name] = counts
        size += entry
    return parts


@dataclass(slots=True)
class PartitionProgress:
    """Counters and watermarks of one partition (all co-partitioned topics together)."""

    partition: int
    watermarks: list[int] = field(default_factory=lambda: [-1] * N_SLOTS)
    events: int = 0
    dlq: int = 0
    clock: int = 0
    seq: int = 0

    def to_list(self) -> list[object]:
        return [self.watermarks, self.events, self.dlq, self.clock, self.seq]


def segment_key(partition: int, seq: int) -> bytes:
    return b"%d:%012d" % (partition, seq)


def encode_segment(partition: int, segment: Segment, ids: list[Entry],
                   progress: PartitionProgress | None) -> bytes:
    """`{partition}|[...]`: the partition leads, so the record decodes on its own.

    `ids` are the segment's entries with their strings (`Sealed.ids`): in memory a
    segment keeps only their hashes, and the record format stays as it was."""
    return b"%d|" % partition + orjson.dumps([
        1, segment.seq, segment.wall_ms, segment.end_total, ids,
        progress.to_list() if progress else None,
    ])


def decode_segment(data: bytes) -> tuple[int, Segment, PartitionProgress | None]:
    partition_text, _, body = data.partition(b"|")
    partition = int(partition_text)
    _v, seq, wall_ms, end_total, ids, progress = orjson.loads(body)
    segment = Segment.of(seq, wall_ms, ids, end_total)
    if progress is None:
        return partition, segment, None
    watermarks, events, dlq, clock, hseq = progress
    return partition, segment, PartitionProgress(partition, watermarks, events, dlq, clock, hseq)
