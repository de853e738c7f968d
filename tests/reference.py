"""A brute-force reference of what the boards must show for a list of messages.

Deliberately naive and independent of streams/: one pass in production order, a set of
every event_id ever seen, every valid event kept, and window sums by scanning them with
the membership rules of contract §2 written out again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from schemas.events import EVENT_MODELS, EventBase, Profile
from streams.core.periods import Period
from streams.core.scoring import influence_index

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
DAYS = {"1h": 1 / 24, "24h": 1.0, "7d": 7.0, "30d": 30.0, "all": 365.0}


def in_window(ts: int, window: str, clock: int, periods: dict[str, Period]) -> bool:
    if window == "all":
        return True
    if window == "1h":
        return ts // MINUTE > clock // MINUTE - 60
    if window == "24h":
        return ts // HOUR > clock // HOUR - 24
    if window == "7d":
        return ts // DAY > clock // DAY - 7
    if window == "30d":
        return ts // DAY > clock // DAY - 30
    period = periods[window]
    return period.start_ms <= ts < period.end_ms


@dataclass
class Account:
    profile: Profile | None = None
    tombstoned: bool = False
    events: list[tuple[str, EventBase]] = field(default_factory=list)

    @property
    def listed(self) -> bool:
        return self.profile is not None or not self.tombstoned

    @property
    def fans(self) -> int:
        follows = sum(e.count for kind, e in self.events if kind == "follow")  # type: ignore
        return (self.profile.fans if self.profile else 0) + follows

    @property
    def category(self) -> str:
        return self.profile.category if self.profile else "unknown"


@dataclass
class Expected:
    periods: tuple[Period, ...] = ()
    accounts: dict[str, Account] = field(default_factory=dict)
    counted: int = 0
    dead: int = 0

    @property
    def windows(self) -> list[str]:
        return ["1h", "24h", "7d", "30d", "all", *(p.name for p in self.periods)]

    def days(self, window: str) -> float:
        return DAYS.get(window) or next(p.days for p in self.periods if p.name == window)

    def sums(self, account_id: str, window: str, clock: int,
             campaign: str | None = None) -> list[int]:
        periods = {p.name: p for p in self.periods}
        sums = [0, 0, 0, 0]
        for kind, event in self.accounts[account_id].events:
            if campaign is not None and event.campaign != campaign:
                continue
            if in_window(event.ts, window, clock, periods):
                slot = {"view": 0, "like": 1, "upload": 2}.get(kind)
                if slot is not None:
                    sums[slot] += event.count  # type: ignore[attr-defined]
                sums[3] += 1
        return sums

    def index(self, account_id: str, window: str, clock: int) -> float:
        views, likes, uploads, _ = self.sums(account_id, window, clock)
        return influence_index(views, likes, uploads, self.accounts[account_id].fans,
                               self.days(window))

    def board(self, window: str, board: str, clock: int) -> dict[str, float]:
        members = {}
        for account_id, account in self.accounts.items():
            if not account.listed:
                continue
            if board.startswith("campaign:"):
                views = self.sums(account_id, window, clock, board[9:])[0]
                if views > 0:
                    members[account_id] = float(views)
            elif board == "all" or board == f"cat:{account.category}":
                members[account_id] = self.index(account_id, window, clock)
        return members

    def series(self, campaign: str, step: str, clock: int) -> dict[int, list[int]]:
        """Bucket start ms -> [views, likes, uploads, distinct accounts] of the campaign's
        tagged events, per minute over the last 24 h (`1m`) or per hour over 30 days
        (`1h`) of the clock; buckets with no event absent."""
        unit, span = {"1m": (MINUTE, 1440), "1h": (HOUR, 720)}[step]
        cells: dict[int, list] = {}
        for account_id, account in self.accounts.items():
            for kind, event in account.events:
                if event.campaign != campaign or event.ts // unit <= clock // unit - span:
                    continue
                cell = cells.setdefault(event.ts // unit * unit, [0, 0, 0, set()])
                slot = {"view": 0, "like": 1, "upload": 2}.get(kind)
                if slot is not None:
                    cell[slot] += event.count  # type: ignore[attr-defined]
                cell[3].add(account_id)
        return {t: [v, lk, u, len(a)] for t, (v, lk, u, a) in cells.items()}

    def campaign(self, campaign: str, window: str, clock: int) -> list[int]:
        """[views, likes, uploads, accounts with a tagged event in the window]."""
        total = [0, 0, 0, 0]
        for account_id in self.accounts:
            views, likes, uploads, n = self.sums(account_id, window, clock, campaign)
            total = [total[0] + views, total[1] + likes, total[2] + uploads,
                     total[3] + (1 if n else 0)]
        return total


def expected_state(messages, periods: tuple[Period, ...] = (),
                   produced_ms: int | None = None) -> Expected:
    """`messages`: (kind, key, value) in production order; kind `accounts` for profiles.

    `produced_ms` applies the wall clock's rule: events over 5 minutes after it are bad.
    """
    out = Expected(periods)
    seen: set[str] = set()
    for kind, key, value in messages:
        if kind == "accounts":
            if value is None:
                account = out.accounts.setdefault(key.decode(), Account())
                account.profile, account.tombstoned = None, True
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
        if produced_ms is not None and event.ts > produced_ms + 300_000:
            out.dead += 1
            continue
        if event.event_id in seen:
            out.dead += 1
            continue
        seen.add(event.event_id)
        out.counted += 1
        out.accounts.setdefault(event.account_id, Account()).events.append((kind, event))
    return out
