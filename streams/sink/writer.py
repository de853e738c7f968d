"""Writes the layout of contract §4 (Redis layout) from state, as absolute values, pipelined.

Every write sets a value computed from state (never INCR), so a replay after a crash
or a rebalance rewrites the same values: Redis converges. Totals that span partitions
(`rf:meta`, `rf:campaign:{c}`) are summed by a Lua script from per-partition fields,
so two workers owning different partitions never overwrite each other's share.

A batch's board and account changes travel as one JSON argument to one script
(`lua/apply_changes.lua`): redis-py packs every command argument in Python, which cost the
worker more than the rest of a batch's Redis work under live load, while Redis runs
the script on its own core. Values are sent as the strings redis-py would have sent.

Every script begins with the owner check (`lua/fence.lua`): the changes of a partition
whose owner is newer than the write's are refused inside Redis, and logged.

`LayoutWriter` holds what every backend shares (the generation marker, a batch's changes
from its accounts); `RedisBoardWriter` is the one-Redis backend, and
streams/sink/cluster.py's `ClusterBoardWriter` the Redis Cluster one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from streams.core.campaigns import CAMPAIGN_FIELDS
from streams.core.scoring import AccountView
from streams.core.series import Cell
from streams.core.updates import BoardUpdate, DoneMark, Fences
from streams.core.windows import VIEWS, Windows
from streams.sink.keys import RedisKeys

log = logging.getLogger(__name__)

#: the Lua scripts beside this module, by name
LUA = Path(__file__).with_name("lua")
#: notices kept in the change stream (about 10 minutes at several batches a second)
CHANGES_KEPT = 10_000
#: series fields per HSET or HDEL at most (lua/apply_changes.lua unpacks each whole)
SERIES_FIELDS = 500


def script(name: str) -> str:
    """The source of `lua/{name}.lua`."""
    return (LUA / f"{name}.lua").read_text()


def fenced_script(name: str) -> str:
    """`lua/{name}.lua` after the owner check it calls (`lua/fence.lua`)."""
    return script("fence") + script(name)


def _text(value: str | int | float) -> str:
    """A value as redis-py would send it (floats by repr, so they read back equal)."""
    return repr(value) if type(value) is float else str(value)


@dataclass(slots=True)
class BoardChanges:
    """A batch's changes: sorted-set members grouped by board, then account hashes."""

    adds: dict[str, dict[str, float]] = field(default_factory=dict)
    removes: dict[str, list[str]] = field(default_factory=dict)
    hash_deletes: list[list[str]] = field(default_factory=list)
    hash_sets: list[list[str]] = field(default_factory=list)
    #: [set key, [member to add, ...], [member to remove, ...]]
    set_changes: list[list[object]] = field(default_factory=list)

    def add(self, key: str, member: str, score: float) -> None:
        members = self.adds.get(key)
        if members is None:
            members = self.adds[key] = {}
        members[member] = score

    def remove(self, key: str, member: str) -> None:
        self.removes.setdefault(key, []).append(member)

    def boards(self) -> set[str]:
        """The keys of the boards touched."""
        return self.adds.keys() | self.removes.keys()

    def touched(self) -> set[str]:
        """Every key touched: boards and account hashes."""
        return (self.boards() | {fields[0] for fields in self.hash_deletes}
                | {fields[0] for fields in self.hash_sets}
                | {str(change[0]) for change in self.set_changes})

    def payload(self) -> dict[str, object]:
        """One partition's part of the argument of lua/apply_changes.lua."""
        add = {key: [item for member, score in members.items()
                     for item in (_text(score), member)]
               for key, members in self.adds.items()}
        return {"rem": self.removes, "add": add, "del": self.hash_deletes,
                "set": self.hash_sets, "sets": self.set_changes}


def apply_changes_payload(parts: Mapping[int, BoardChanges],
                          fences: Mapping[int, tuple[int, int]],
                          after: Mapping[int, tuple[int, int]] | None = None,
                          campaigns: Mapping[str, list[str]] | None = None,
                          done: Mapping[str, list[int]] | None = None,
                          generation: str | None = None) -> bytes:
    """The argument of lua/apply_changes.lua: each partition's changes, its owner stamp,
    the stamp its writer last had acknowledged, the boards of each campaign touched
    (registered or unregistered after the changes, by whether any has a member), and the
    update's done marks (`done_marks`) with the data generation they are for."""
    return orjson.dumps({"fence": {str(p): list(f) for p, f in fences.items()},
                         "after": {str(p): list(f) for p, f in (after or {}).items()},
                         "parts": {str(p): c.payload() for p, c in parts.items()},
                         "campaigns": campaigns or {}, "done": done or {},
                         "generation": generation})


def done_marks(update: BoardUpdate) -> dict[str, list[int]]:
    """lua/fence.lua's `mark_done` argument: [epoch, seq, decayed] of each partition the
    update marks done (its last chunk's; stamped partitions only)."""
    fences = update.fences
    return {str(p): [*fences[p], decayed] for p, decayed in update.done.items()
            if p in fences}


#: the fields of a partition's owner stamp, and of its done mark, in an owners (or a
#: shard's stamps) hash
STAMP_FIELDS = ("epoch", "seq")
DONE_FIELDS = ("done_epoch", "done_seq", "decayed")


def fields_of(partitions: Iterable[int], names: Sequence[str]) -> list[str]:
    """The HMGET fields `{p}.{name}` of each partition, in order."""
    return [f"{p}.{name}" for p in partitions for name in names]


def _ints_by_partition(values: Sequence[Any], partitions: Iterable[int], width: int
                       ) -> Iterator[tuple[int, list[int]]]:
    """Each partition's `width` fields of HMGET's answer for `fields_of`, as integers,
    where Redis holds all of them."""
    for i, p in enumerate(partitions):
        found = values[width * i:width * i + width]
        if all(v is not None for v in found):
            yield p, [int(v) for v in found]


def stamps_of(values: Sequence[Any], partitions: Iterable[int]) -> Fences:
    """The (epoch, seq) owner stamps of HMGET's answer for STAMP_FIELDS (absent where
    Redis has none)."""
    return {p: (epoch, seq) for p, (epoch, seq)
            in _ints_by_partition(values, partitions, len(STAMP_FIELDS))}


def marks_of(values: Sequence[Any], partitions: Iterable[int]) -> dict[int, DoneMark]:
    """The (epoch, seq, decayed) done marks of HMGET's answer for DONE_FIELDS (absent
    where Redis has none)."""
    return {p: (epoch, seq, decayed) for p, (epoch, seq, decayed)
            in _ints_by_partition(values, partitions, len(DONE_FIELDS))}


class LayoutWriter:
    """What every backend shares: the data generation marker, and a batch's changes to
    boards and account hashes, per partition."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys, windows: Windows) -> None:
        self.client = client
        self.keys = keys
        self.windows = windows

    async def generation(self) -> str | None:
        """The current data generation marker, or None when Redis has none (lost data)."""
        token = await self.client.get(self.keys.generation)
        return token.decode() if isinstance(token, bytes) else token

    async def claim_generation(self) -> str:
        """Set a new marker unless another worker just did; the marker now in force."""
        await self.client.set(self.keys.generation, uuid.uuid4().hex, nx=True)
        token = await self.generation()
        if token is None:  # flushed again in between: the next check will see it
            return ""
        return token

    async def changes(self, views: list[AccountView], profiles: set[str]
                      ) -> dict[int, BoardChanges]:
        """Each partition's board and account-hash changes for these accounts (those whose
        profile changed leave the category board Redis lists them on)."""
        listed_as = await self._listed_categories(
            [v for v in views if v.account_id in profiles])
        parts: dict[int, BoardChanges] = {}
        for view in views:
            boards = parts.get(view.partition)
            if boards is None:
                boards = parts[view.partition] = BoardChanges()
            self._account(boards, view, listed_as.get(view.account_id))
        return parts

    def add_series(self, parts: dict[int, BoardChanges], series: Mapping[int, list[Cell]]
                   ) -> None:
        """Each partition's series cells as its hash sets and deletes (so they pass its
        owner check: tests/integration/test_fencing.py)."""
        for partition, cells in series.items():
            sets: dict[str, list[str]] = {}
            deletes: dict[str, list[str]] = {}
            for campaign, step, bucket_ms, value in cells:
                key = self.keys.series(campaign, step)
                name = f"{bucket_ms}:{partition}"
                if value is None:
                    deletes.setdefault(key, []).append(name)
                else:
                    sets.setdefault(key, []).extend((name, value))
            if not (sets or deletes):
                continue
            boards = parts.get(partition)
            if boards is None:
                boards = parts[partition] = BoardChanges()
            for key, names in deletes.items():
                boards.hash_deletes += [[key, *names[i:i + SERIES_FIELDS]]
                                        for i in range(0, len(names), SERIES_FIELDS)]
            for key, pairs in sets.items():
                boards.hash_sets += [[key, *pairs[i:i + 2 * SERIES_FIELDS]]
                                     for i in range(0, len(pairs), 2 * SERIES_FIELDS)]

    def notice(self, update: BoardUpdate, parts: Mapping[int, BoardChanges]) -> bytes | None:
        """The change stream's notice of this write (None when no board changed)."""
        prefix = len(self.keys.boards_prefix)
        changed = sorted(key[prefix:] for c in parts.values() for key in c.boards())
        if not changed:
            return None
        return orjson.dumps({"clock": update.clock_ms, "accounts": len(update.views),
                             "boards": changed})

    def index_sets(self, pipe: aioredis.client.Pipeline, update: BoardUpdate,
                   notice: bytes | None, register_campaigns: bool) -> None:
        """The category set (and, when asked, the campaign set), and the change notice,
        onto `pipe`."""
        views = update.views
        categories = {v.category for v in views if v.listed}
        if categories:
            pipe.sadd(self.keys.categories, *categories)
        campaigns = {c for v in views for c in v.campaigns}
        if campaigns and register_campaigns:
            pipe.sadd(self.keys.campaigns, *campaigns)
        if notice is not None:
            pipe.xadd(self.keys.changes, {"notice": notice}, maxlen=CHANGES_KEPT,
                      approximate=True)

    def campaign_args(self, partition: int, totals: Mapping[str, list[int]],
                      fences: Mapping[int, tuple[int, int]]) -> list[str | int]:
        """lua/sum_parts.lua's arguments for one partition's campaign totals."""
        args: list[str | int] = [partition, _epoch(fences, partition)]
        for window in self.windows.ids:
            sums = totals.get(window, (0, 0, 0, 0))
            for name, value in zip(CAMPAIGN_FIELDS, sums, strict=True):
                args += [f"{window}.{name}", value]
        return args

    @staticmethod
    def meta_args(update: BoardUpdate, partition: int, events: int, dlq: int
                  ) -> list[str | int]:
        """lua/sum_parts.lua's arguments for one partition's counters in `meta`."""
        return [partition, _epoch(update.fences, partition), "events", events, "dlq", dlq,
                "max:clock", update.clock_ms, "max:updated_at", update.now_ms]

    async def _listed_categories(self, views: list[AccountView]) -> dict[str, str | None]:
        """The category each account is listed under in Redis now (before a move)."""
        if not views:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for view in views:
            pipe.hget(self.keys.account(view.account_id), "category")
        found = await pipe.execute()
        return {v.account_id: (c.decode() if c else None)
                for v, c in zip(views, found, strict=True)}

    def _account(self, boards: BoardChanges, view: AccountView, listed_as: str | None) -> None:
        account_id = view.account_id
        keys = self.keys
        category = view.category
        account_key = keys.account(account_id)
        fields = [account_key, "fans", str(view.fans)]
        if listed_as is not None and (listed_as != category or not view.listed):
            for window in self.windows.ids:
                boards.remove(keys.board(window, f"cat:{listed_as}"), account_id)
        for window, score in view.windows.items():
            fields += (f"{window}.views", str(score.views), f"{window}.likes",
                       str(score.likes), f"{window}.uploads", str(score.uploads),
                       f"{window}.index", _text(score.index))
            if view.listed:
                boards.add(keys.board(window, "all"), account_id, score.index)
                boards.add(keys.board(window, f"cat:{category}"), account_id, score.index)
            else:
                boards.remove(keys.board(window, "all"), account_id)
        standing: list[str] = []
        left: list[str] = []
        for campaign, sums in view.campaigns.items():
            on_board = False
            for window, metrics in sums.items():
                board = keys.board(window, f"campaign:{campaign}")
                if view.listed and metrics[VIEWS] > 0:
                    boards.add(board, account_id, metrics[VIEWS])
                    on_board = True
                else:
                    boards.remove(board, account_id)
            (standing if on_board else left).append(campaign)
        if view.campaigns:  # an account never tagged has no set
            boards.set_changes.append([keys.account_campaigns(account_id), standing, left])
        if view.listed:
            fields += ("category", category)
        if view.name is not None:
            fields += ("name", view.name)
        else:
            boards.hash_deletes.append(
                [account_key, "name", *(() if view.listed else ("category",))])
        boards.hash_sets.append(fields)


class RedisBoardWriter(LayoutWriter):
    """Rewrites the boards and hashes of changed accounts, campaigns and partitions, on
    one Redis (or a Sentinel's primary): a batch's changes in one script."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys, windows: Windows) -> None:
        super().__init__(client, keys, windows)
        self._sum_parts = client.register_script(script("sum_parts"))
        self._apply_changes = client.register_script(fenced_script("apply_changes"))

    async def write(self, update: BoardUpdate,
                    after: Mapping[int, tuple[int, int]] | None = None,
                    generation: str | None = None) -> list[int]:
        """One update: accounts, then campaign totals, then `meta` (last: it says "done").
        `after` is the stamp per partition this writer last had acknowledged; returns the
        partitions whose stamp in Redis was older (Redis lost writes since). The update's
        done marks are taken only while the marker holds `generation`, the writer's."""
        parts = await self.changes(update.views, update.profiles)
        self.add_series(parts, update.series)
        pipe = self.client.pipeline(transaction=False)
        fences = update.fences
        # the script registers each campaign touched, or unregisters it once its boards
        # are all empty (tests/integration/test_hygiene.py)
        campaigns = {c: [self.keys.board(w, f"campaign:{c}") for w in self.windows.ids]
                     for c in sorted({c for v in update.views for c in v.campaigns})}
        if parts or fences:
            await self._apply_changes(
                keys=[self.keys.owners, self.keys.campaigns, self.keys.generation],
                args=[apply_changes_payload(parts, fences, after, campaigns,
                                            done_marks(update), generation)], client=pipe)
        self.index_sets(pipe, update, self.notice(update, parts), register_campaigns=False)
        for (partition, campaign), totals in update.campaigns.items():
            keys = [self.keys.campaign_parts(campaign), self.keys.campaign(campaign),
                    self.keys.owners]
            await self._sum_parts(keys=keys, args=self.campaign_args(partition, totals, fences),
                                  client=pipe)
        for partition, (events, dlq) in update.partitions.items():
            await self._sum_parts(keys=[self.keys.meta_parts, self.keys.meta,
                                        self.keys.owners],
                                  args=self.meta_args(update, partition, events, dlq),
                                  client=pipe)
        results = await pipe.execute()
        if not (parts or fences):
            return []
        refused, behind = results[0]
        if refused:
            log.warning("partitions %s have a newer owner: this worker's writes for them "
                        "were refused", sorted(refused))
        return [int(p) for p in behind]

    async def claim(self, fences: Mapping[int, tuple[int, int]]) -> None:
        """Take partitions over whatever epoch Redis holds for them: the consumer group
        assigned them to this worker now (a group created anew starts its generations
        again)."""
        if fences:
            await self.client.hset(self.keys.owners, mapping={
                f"{p}.{name}": value for p, (epoch, seq) in fences.items()
                for name, value in (("epoch", epoch), ("seq", seq))})

    async def written(self, partitions: list[int]) -> Fences:
        """The owner stamp Redis holds for each partition (absent: none)."""
        fields = fields_of(partitions, STAMP_FIELDS)
        return stamps_of(await self.client.hmget(self.keys.owners, fields), partitions)

    async def done(self, partitions: list[int]) -> dict[int, DoneMark]:
        """The done mark Redis holds for each partition (absent: none): the stamp of the
        newest update it holds whole, and the clock its decays are written through."""
        fields = fields_of(partitions, DONE_FIELDS)
        return marks_of(await self.client.hmget(self.keys.owners, fields), partitions)


def _epoch(fences: Mapping[int, tuple[int, int]], partition: int) -> str | int:
    """A partition's owner epoch as lua/sum_parts.lua takes it ('' when unstamped)."""
    fence = fences.get(partition)
    return "" if fence is None else fence[0]
