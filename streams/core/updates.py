"""What a batch, a decay tick or a rewrite changes on the boards, as values fixed at its end.

Pure: `BoardUpdates` scores accounts at a clock (contract §3, Influence index) and folds
them into their partitions' campaign totals; the sink (streams/sink/writer.py) writes the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from streams.core.aggregate import PartitionRuntime
from streams.core.scoring import AccountView, ScoringConfig, account_view
from streams.core.state import AccountState
from streams.core.windows import Windows

#: window -> [views, likes, uploads, accounts] of one campaign in one partition
CampaignSums = dict[str, list[int]]
#: partition -> (owner epoch, write sequence): who wrote an update (streams/worker/fence.py)
Fences = dict[int, tuple[int, int]]
#: the fences of an update for these partitions, stamped when it is built
Stamp = Callable[[Iterable[int]], Fences]


def unstamped(partitions: Iterable[int]) -> Fences:
    """No fences: the writes of `rankflow rebuild`, which owns no partition."""
    return {}


@dataclass(frozen=True, slots=True)
class BoardUpdate:
    """Everything one batch (or decay tick) changes in Redis, as values fixed at its end."""

    views: list[AccountView]
    #: accounts whose profile changed: their old category board is looked up and left
    profiles: set[str]
    #: (partition, campaign) -> its sums in that partition
    campaigns: dict[tuple[int, str], CampaignSums]
    #: partition -> (events counted, dead letters)
    partitions: dict[int, tuple[int, int]]
    clock_ms: int
    now_ms: int
    #: the owner stamp of every partition the update writes for
    fences: Fences = field(default_factory=dict)


class BoardUpdates:
    """Builds board updates of the owned partitions' accounts."""

    def __init__(self, windows: Windows, scoring: ScoringConfig,
                 runtimes: Mapping[int, PartitionRuntime], stamp: Stamp = unstamped) -> None:
        self.windows = windows
        self.scoring = scoring
        self.runtimes = runtimes
        self.stamp = stamp

    def of(self, states: Iterable[AccountState], profiles: set[str],
           partitions: Iterable[int], clock: int, now_ms: int) -> BoardUpdate:
        """Score the accounts at `clock`, fold them into campaign totals (the campaigns
        that changed travel along), with the named partitions' counters."""
        views = [account_view(state, self.windows, clock, self.scoring) for state in states]
        campaigns: dict[tuple[int, str], CampaignSums] = {}
        for view in views:
            totals = self.runtimes[view.partition].campaigns
            for campaign in totals.update(view):
                campaigns[view.partition, campaign] = {
                    window: list(sums) for window, sums in totals.totals[campaign].items()}
        counters = {p: (self.runtimes[p].progress.events, self.runtimes[p].progress.dlq)
                    for p in partitions}
        written = {v.partition for v in views} | counters.keys() | {p for p, _ in campaigns}
        return BoardUpdate(views, profiles, campaigns, counters, clock, now_ms,
                           self.stamp(sorted(written)))

    def totals(self, clock: int, now_ms: int) -> BoardUpdate:
        """Every owned partition's campaign totals and counters, whole."""
        campaigns = {(p, c): {w: list(sums) for w, sums in totals.items()}
                     for p, runtime in self.runtimes.items()
                     for c, totals in runtime.campaigns.totals.items()}
        # every owned partition is among the counters', so the stamp covers the totals
        return replace(self.of([], set(), self.runtimes, clock, now_ms), campaigns=campaigns)


#: campaign entries (an account's standing in one campaign) per chunk at most
CHUNK_CAMPAIGNS = 1_000


def in_chunks(update: BoardUpdate, accounts: int,
              campaigns: int = CHUNK_CAMPAIGNS) -> list[BoardUpdate]:
    """The update as updates of at most `accounts` accounts and `campaigns` campaign
    entries each, the campaign totals and counters in the last one (the writer writes
    `meta` last: it says "done"). Bounds the longest single Redis call, so a socket
    timeout never fires on a legitimate write. An account in more campaigns goes in
    several, each with a share of them: its own fields and boards, absolute values, are
    written with each (tests/test_worker.py)."""
    views = update.views
    if len(views) <= accounts and sum(len(v.campaigns) for v in views) <= campaigns:
        return [update]
    chunks: list[list[AccountView]] = [[]]
    entries = 0
    for piece in (piece for view in views for piece in _shares(view, campaigns)):
        if chunks[-1] and (len(chunks[-1]) >= accounts
                           or entries + len(piece.campaigns) > campaigns):
            chunks.append([])
            entries = 0
        chunks[-1].append(piece)
        entries += len(piece.campaigns)
    parts = [replace(update, views=chunk, campaigns={}, partitions={}) for chunk in chunks]
    parts[-1] = replace(parts[-1], campaigns=update.campaigns, partitions=update.partitions)
    return parts


def _shares(view: AccountView, campaigns: int) -> list[AccountView]:
    """The view, or copies of it with `campaigns` of its campaigns each."""
    if len(view.campaigns) <= campaigns:
        return [view]
    names = list(view.campaigns)
    return [replace(view, campaigns={c: view.campaigns[c] for c in names[i:i + campaigns]})
            for i in range(0, len(names), campaigns)]
