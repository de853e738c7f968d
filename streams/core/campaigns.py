"""Per-partition campaign totals, kept up to date from account views by differences.

`rf:campaign:{c}` shows, per window, the views, likes and uploads of campaign-tagged
events and the number of distinct accounts with at least one such event. Each partition
keeps its share; an account's last contribution is remembered so that a re-scored
account (new events, or a bucket leaving a rolling window) changes the totals by exactly
its difference, never by a scan of the campaign's accounts
(tests/test_aggregate.py::test_campaign_totals_follow_account_views_by_difference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.core.scoring import AccountView
from streams.core.windows import EVENTS, LIKES, UPLOADS, VIEWS

#: the fields of a campaign's sums in one window, in their order (`rf:campaign:{c}`)
CAMPAIGN_FIELDS = ("views", "likes", "uploads", "accounts")


@dataclass(slots=True)
class CampaignTotals:
    #: campaign -> window -> [views, likes, uploads, accounts]
    totals: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    _contributions: dict[tuple[str, str], dict[str, list[int]]] = field(default_factory=dict)

    def update(self, view: AccountView) -> set[str]:
        """Apply an account's current campaign sums; returns the campaigns that changed."""
        return self.update_sums(view.account_id, view.campaigns)

    def update_sums(self, account_id: str,
                    campaigns: Mapping[str, Mapping[str, list[int]]]) -> set[str]:
        """`update` from an account's campaign sums alone (a restore, which scores
        nothing: streams/core/aggregate.py's `restore_runtime`)."""
        changed = set()
        for campaign, windows in campaigns.items():
            key = (account_id, campaign)
            new = {w: [s[VIEWS], s[LIKES], s[UPLOADS], 1 if s[EVENTS] > 0 else 0]
                   for w, s in windows.items()}
            old = self._contributions.get(key, {})
            if new == old:
                continue
            totals = self.totals.setdefault(campaign, {})
            for window in new.keys() | old.keys():
                before = old.get(window, [0, 0, 0, 0])
                after = new.get(window, [0, 0, 0, 0])
                sums = totals.setdefault(window, [0, 0, 0, 0])
                for i in range(len(CAMPAIGN_FIELDS)):
                    sums[i] += after[i] - before[i]
            self._contributions[key] = new
            changed.add(campaign)
        return changed
