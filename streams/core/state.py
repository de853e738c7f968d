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
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass, field

import orjson

from streams.core.dedup import Entry, Segment
from streams.core.windows import LIKES, UPLOADS, VIEWS, WindowedCounts

UNKNOWN_CATEGORY = "unknown"
#: the format of account-state changelog records
STATE_VERSION = 2


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

    def encode(self) -> bytes:
        profile = self.profile
        return orjson.dumps([
            STATE_VERSION,
            self.account_id,
            self.partition,
            [profile.name, profile.category, profile.fans] if profile else None,
            self.profile_seen,
            self.follows,
            self.counts.to_list(),
            {name: counts.to_list() for name, counts in self.campaigns.items()},
            self.applied.tolist(),
        ])

    @classmethod
    def decode(cls, data: bytes) -> AccountState:
        record = orjson.loads(data)
        if record[0] != STATE_VERSION:
            raise StateFormatError(
                f"an account-state record of format {record[0]!r}, this worker reads "
                f"{STATE_VERSION}: its changelog was written by another rankflow version "
                f"(use a new RANKFLOW_APP_ID, or delete the state topics to rebuild)")
        (_v, account_id, partition, profile, seen, follows, counts, campaigns,
         applied) = record
        if profile:  # categories repeat across accounts: keep one copy of each
            profile = AccountProfile(profile[0], sys.intern(profile[1]), profile[2])
        return cls(account_id, partition, profile, seen, follows,
                   WindowedCounts.from_list(counts),
                   {sys.intern(name): WindowedCounts.from_list(c)
                    for name, c in campaigns.items()},
                   array("q", applied))


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
