"""What a batch, a decay tick or a rewrite changes on the boards, as values fixed at its end.

Pure: `BoardUpdates` scores accounts at a clock (contract §3, Influence index) and folds
them into their partitions' campaign totals; the sink (streams/sink/writer.py) writes the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from streams.core.aggregate import PartitionRuntime
from streams.core.scoring import AccountView, ScoringConfig, account_view
from streams.core.series import Cell
from streams.core.state import NO_STAMP, AccountState
from streams.core.windows import Windows

#: window -> [views, likes, uploads, accounts] of one campaign in one partition
CampaignSums = dict[str, list[int]]
#: partition -> (owner epoch, write sequence): who wrote an update (streams/worker/fence.py)
Fences = dict[int, tuple[int, int]]
#: the fences of an update for these partitions, stamped when it is built
Stamp = Callable[[Iterable[int]], Fences]
#: a partition's done mark in Redis: the owner stamp (epoch, seq) of the newest update
#: Redis holds whole, and the clock its decays are written through
DoneMark = tuple[int, int, int]


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
    #: partition -> its campaign-series cells to write (streams/core/series.py)
    series: dict[int, list[Cell]] = field(default_factory=dict)
    #: partition -> the clock its decays are popped through, for the partitions whose
    #: Redis is to mark this update done (not those being rewritten); `in_chunks` keeps
    #: it on the last chunk, whose write completes the update (streams/sink/rewrite.py)
    done: dict[int, int] = field(default_factory=dict)


class BoardUpdates:
    """Builds board updates of the owned partitions' accounts."""

    def __init__(self, windows: Windows, scoring: ScoringConfig,
                 runtimes: Mapping[int, PartitionRuntime], stamp: Stamp = unstamped) -> None:
        self.windows = windows
        self.scoring = scoring
        self.runtimes = runtimes
        self.stamp = stamp

    def of(self, states: Iterable[AccountState], profiles: set[str],
           partitions: Iterable[int], clock: int, now_ms: int,
           series: Mapping[int, list[Cell]] | None = None) -> BoardUpdate:
        """Score the accounts at `clock`, fold them into campaign totals (the campaigns
        that changed travel along), with the named partitions' counters and their
        series cells."""
        views = [account_view(state, self.windows, clock, self.scoring) for state in states]
        campaigns: dict[tuple[int, str], CampaignSums] = {}
        for view in views:
            totals = self.runtimes[view.partition].campaigns
            for campaign in totals.update(view):
                campaigns[view.partition, campaign] = {
                    window: list(sums) for window, sums in totals.totals[campaign].items()}
        counters = {p: (self.runtimes[p].progress.events, self.runtimes[p].progress.dlq)
                    for p in partitions}
        cells = {p: c for p, c in (series or {}).items() if c}
        written = ({v.partition for v in views} | counters.keys() | {p for p, _ in campaigns}
                   | cells.keys())
        runtimes = self.runtimes
        done = {p: runtimes[p].schedule.popped_through for p in written
                if not runtimes[p].rewriting}
        return BoardUpdate(views, profiles, campaigns, counters, clock, now_ms,
                           self.stamp(sorted(written)), cells, done)

    def totals(self, clock: int, now_ms: int) -> BoardUpdate:
        """Every owned partition's campaign totals, counters and series, whole."""
        campaigns = {(p, c): {w: list(sums) for w, sums in totals.items()}
                     for p, runtime in self.runtimes.items()
                     for c, totals in runtime.campaigns.totals.items()}
        # every owned partition is among the counters', so the stamp covers the totals
        series = {p: runtime.series.all_cells() for p, runtime in self.runtimes.items()}
        return replace(self.of([], set(), self.runtimes, clock, now_ms, series),
                       campaigns=campaigns)


#: campaign entries (an account's standing in one campaign) per chunk at most
CHUNK_CAMPAIGNS = 1_000
#: campaign-series cells per chunk at most (a restored partition rewrites all of its)
CHUNK_CELLS = 2_000


def in_chunks(update: BoardUpdate, accounts: int,
              campaigns: int = CHUNK_CAMPAIGNS, cells: int = CHUNK_CELLS) -> list[BoardUpdate]:
    """The update as updates of at most `accounts` accounts, `campaigns` campaign
    entries and `cells` series cells each, the campaign totals and counters in the last
    one (the writer writes `meta` last: it says "done"), and so are the `done` marks.
    Bounds the longest single Redis
    call, so a socket timeout never fires on a legitimate write. An account in more
    campaigns goes in several, each with a share of them: its own fields and boards,
    absolute values, are written with each (tests/test_worker.py)."""
    views = update.views
    if sum(map(len, update.series.values())) > cells:
        pieces = _cell_pieces(update.series, cells)
        first = in_chunks(replace(update, series=pieces[-1]), accounts, campaigns, cells)
        return [replace(update, views=[], campaigns={}, partitions={}, series=piece, done={})
                for piece in pieces[:-1]] + first
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
    parts = [replace(update, views=chunk, campaigns={}, partitions={}, series={}, done={})
             for chunk in chunks]
    parts[-1] = replace(parts[-1], campaigns=update.campaigns, partitions=update.partitions,
                        series=update.series, done=update.done)
    return parts


def _cell_pieces(series: Mapping[int, list[Cell]], cells: int) -> list[dict[int, list[Cell]]]:
    """Series cells, partition by partition, in pieces of at most `cells`."""
    pieces: list[dict[int, list[Cell]]] = [{}]
    size = 0
    for partition, found in series.items():
        for start in range(0, len(found), cells):
            part = found[start:start + cells]
            if size + len(part) > cells:
                pieces.append({})
                size = 0
            pieces[-1].setdefault(partition, []).extend(part)
            size += len(part)
    return pieces


def _shares(view: AccountView, campaigns: int) -> list[AccountView]:
    """The view, or copies of it with `campaigns` of its campaigns each."""
    if len(view.campaigns) <= campaigns:
        return [view]
    names = list(view.campaigns)
    return [replace(view, campaigns={c: view.campaigns[c] for c in names[i:i + campaigns]})
            for i in range(0, len(names), campaigns)]


def redis_may_lack(state: AccountState, mark: DoneMark | None, clock: int,
                   epoch: int) -> bool:
    """Might Redis lack this account's layout as its state scores at `clock`, by the done
    mark of its partition? Yes without a mark or a stamp; when the update that carried
    the state is newer than the mark; when the mark is of an epoch newer than `epoch`,
    this owner's (the group was created anew: its generations start again, so only the
    mark's own epoch compares), and the stamp of another; and when a bucket of the account
    left a window between the mark's decay clock and `clock` (tests/test_rewrite.py)."""
    stamp = state.board_stamp
    if mark is None or stamp == NO_STAMP:
        return True
    mark_epoch, mark_seq, decayed = mark
    if stamp > (mark_epoch, mark_seq) or (mark_epoch > epoch and stamp[0] != mark_epoch):
        return True
    return any(due <= clock for due in state.due_times(decayed))
