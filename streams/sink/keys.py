"""The Redis key names of contract §4 (Redis layout) under a prefix, shared by the
writers and the read API, and the keys rankflow adds for itself; on a Redis Cluster
(`SlotKeys`) those take a hash tag, so that a script touches the keys of one slot only."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """The key names of contract §4 (Redis layout) under a prefix."""

    prefix: str = "rf:"

    @property
    def boards_prefix(self) -> str:
        return f"{self.prefix}lb:"

    def board(self, window: str, board: str) -> str:
        return f"{self.boards_prefix}{window}:{board}"

    def account(self, account_id: str) -> str:
        return f"{self.prefix}acct:{account_id}"

    def account_campaigns(self, account_id: str) -> str:
        """Set of the campaigns on whose board the account stands in some window (so an
        account's detail reads its own campaign boards, not every campaign's)."""
        return f"{self.prefix}acct-campaigns:{account_id}"

    def campaign(self, campaign: str) -> str:
        return f"{self.prefix}campaign:{campaign}"

    def series(self, campaign: str, step: str) -> str:
        """Hash of a campaign's time series at one step (`1m`, `1h`): field
        `{bucket start ms}:{partition}` -> that partition's `views,likes,uploads,accounts`
        (streams/core/series.py). One key per campaign and step, written by one script
        call per slot like any other key: it needs no hash tag."""
        return f"{self.prefix}series:{campaign}:{step}"

    def campaign_parts(self, campaign: str) -> str:
        return f"{self.prefix}campaign:{campaign}:partitions"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"

    @property
    def meta_parts(self) -> str:
        return f"{self.prefix}meta:partitions"

    @property
    def changes(self) -> str:
        """Stream of board-change notices (XADD per write), read by the API's live feed."""
        return f"{self.prefix}changes"

    @property
    def worker_metrics(self) -> str:
        """Hash of worker id -> the worker's latest metrics snapshot (JSON)."""
        return f"{self.prefix}metrics:workers"

    @property
    def generation(self) -> str:
        """A token set once per life of the Redis data: gone or changed means data lost."""
        return f"{self.prefix}generation"

    @property
    def owners(self) -> str:
        """Hash of `{partition}.epoch` and `{partition}.seq`: each partition's owner epoch
        and its last write sequence (streams/worker/fence.py)."""
        return f"{self.prefix}owners:partitions"

    def rank_history(self, step: str, window: str, board: str, account_id: str) -> str:
        """String: the ring of an account's rank samples on one board at one step (`10s`,
        `10m`), fixed-width records (streams/api/rank_samples.py)."""
        return f"{self.prefix}rank-history:{step}:{window}:{board}:{account_id}"

    @property
    def recorder_lease(self) -> str:
        """The rank recorder's lease: the token of the API process that records."""
        return f"{self.prefix}recorder:lease"

    def milestone(self, rule: str) -> str:
        """Hash of the subjects that crossed a milestone rule (subject -> tick), so each
        crossing fires once (streams/api/milestones.py)."""
        return f"{self.prefix}milestones:{rule}"

    @property
    def milestones_fired(self) -> str:
        """Hash of rule -> how many times it fired (the API's /metrics)."""
        return f"{self.prefix}milestones-fired"

    @property
    def alerts(self) -> str:
        """Stream of milestone alerts (JSON in `alert`), relayed by every API process."""
        return f"{self.prefix}alerts"

    @property
    def categories(self) -> str:
        """Set of every category that has a board (for readers listing boards)."""
        return f"{self.prefix}categories"

    @property
    def campaigns(self) -> str:
        """Set of every campaign with a member on one of its boards (lua/apply_changes.lua
        removes one whose boards are all empty)."""
        return f"{self.prefix}campaigns"


@cache
def slot_tags() -> tuple[str, ...]:
    """For each hash slot, a short string that hashes to it: `{tag}` in a key puts the
    key in that slot (tests/test_cluster_writer.py)."""
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing, n = REDIS_CLUSTER_HASH_SLOTS, 0
    while missing:
        tag = format(n, "x")
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


@dataclass(frozen=True, slots=True)
class SlotKeys:
    """The keys rankflow adds for itself on a Redis Cluster, one of each per hash slot it
    writes to, each with the slot's tag (the prefix has no braces: settings.py)."""

    prefix: str = "rf:"

    def owners(self, slot: int) -> str:
        """Hash of `{partition}.epoch` and `.seq` of the writes into this slot: the owner
        check of every script there (lua/fence.lua)."""
        return f"{self.prefix}owners:{{{slot_tags()[slot]}}}"

    def stamps(self, slot: int) -> str:
        """Hash of `{partition}.epoch` and `.seq` of the last write acknowledged on the
        shard whose first slot this is: found older, the shard lost writes."""
        return f"{self.prefix}stamps:{{{slot_tags()[slot]}}}"

    def parts(self, total_key: str) -> str:
        """The per-partition shares of a total hash (`rf:meta`, `rf:campaign:{c}`), in the
        total's slot so that lua/sum_parts.lua reads and sums them there."""
        slot = key_slot(total_key.encode())
        return f"{self.prefix}parts:{{{slot_tags()[slot]}}}:{total_key.removeprefix(self.prefix)}"
