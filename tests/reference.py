"""A brute-force reference of what the boards must show for a list of messages.

Deliberately naive and independent of streams/aggregate.py: one pass in production
order, a set of every event_id ever seen, one dict per account.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from schemas.events import EVENT_MODELS, Profile
from streams.scoring import influence_index
from streams.windows import FixedWindows


@dataclass
class Account:
    profile: Profile | None = None
    tombstoned: bool = False
    follows: int = 0
    sums: dict[str, list[int]] = field(default_factory=dict)
    campaigns: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def listed(self) -> bool:
        return self.profile is not None or not self.tombstoned

    @property
    def fans(self) -> int:
        return (self.profile.fans if self.profile else 0) + self.follows

    @property
    def category(self) -> str:
        return self.profile.category if self.profile else "unknown"


@dataclass
class Expected:
    accounts: dict[str, Account] = field(default_factory=dict)
    counted: int = 0
    dead: int = 0

    def index(self, account_id: str, window: str, windows: FixedWindows) -> float:
        account = self.accounts[account_id]
        views, likes, uploads = account.sums.get(window, [0, 0, 0])
        return influence_index(views, likes, uploads, account.fans, windows.days(window))

    def board(self, window: str, board: str, windows: FixedWindows) -> dict[str, float]:
        members = {}
        for account_id, account in self.accounts.items():
            if not account.listed:
                continue
            if board.startswith("campaign:"):
                views = account.campaigns.get(board[9:], {}).get(window, 0)
                if views > 0:
                    members[account_id] = float(views)
            elif board == "all" or board == f"cat:{account.category}":
                members[account_id] = self.index(account_id, window, windows)
        return members


def expected_state(messages, windows: FixedWindows) -> Expected:
    """`messages`: (kind, key, value) in production order; kind `accounts` for profiles."""
    out = Expected()
    seen: set[str] = set()
    for kind, key, value in messages:
        if kind == "accounts":
            if value is None:
                out.accounts.setdefault(key.decode(), Account()).tombstoned = True
                out.accounts[key.decode()].profile = None
                continue
            try:
                profile = Profile.model_validate_json(value)
            except ValidationError:
                out.dead += 1
                continue
            account = out.accounts.setdefault(profile.account_id, Account())
            account.profile, account.tombstoned = profile, False
            continue
        try:
            event = EVENT_MODELS[kind].model_validate_json(value or b"")
        except ValidationError:
            out.dead += 1
            continue
        if key is not None and key != event.account_id.encode():
            out.dead += 1
            continue
        if event.event_id in seen:
            out.dead += 1
            continue
        seen.add(event.event_id)
        out.counted += 1
        account = out.accounts.setdefault(event.account_id, Account())
        count = event.count  # type: ignore[attr-defined]
        if kind == "follow":
            account.follows += count
        for window in windows.containing(event.ts):
            sums = account.sums.setdefault(window, [0, 0, 0])
            slot = {"view": 0, "like": 1, "upload": 2}.get(kind)
            if slot is not None:
                sums[slot] += count
            if event.campaign and kind == "view":
                per = account.campaigns.setdefault(event.campaign, {})
                per[window] = per.get(window, 0) + count
    return out
