"""The Redis key names of contract §4 (Redis layout) under a prefix, shared by the
writers and the read API, and the keys rankflow adds for itself."""

from __future__ import annotations

from dataclasses import dataclass


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
