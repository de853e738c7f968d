"""What changed between two readings of a board's top N, as the live feed sends it.

Pure (no Redis, no I/O): `diff(old, new)` lists every entry of `new` that entered or
whose rank or score moved, and the accounts of `old` that left; `apply(copy, change)` is
what a client does with it (remove `left`, upsert `entries`), and brings a copy of `old`
to exactly `new` (tests/test_top_diff.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ranked:
    """One account of a top N: its competition rank (ties share one) and its score."""

    rank: int
    account_id: str
    score: float

    def as_json(self) -> dict[str, object]:
        return {"rank": self.rank, "account_id": self.account_id, "score": self.score}


@dataclass(frozen=True, slots=True)
class TopChange:
    """The entries that entered or moved (rank or score), and the accounts that left."""

    entries: tuple[Ranked, ...]
    left: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.entries or self.left)

    def as_json(self) -> dict[str, object]:
        return {"entries": [e.as_json() for e in self.entries], "left": list(self.left)}


def diff(old: Sequence[Ranked], new: Sequence[Ranked]) -> TopChange:
    """The change that turns a copy of `old` into `new` (empty when they are equal)."""
    before = {e.account_id: e for e in old}
    now = {e.account_id for e in new}
    return TopChange(entries=tuple(e for e in new if before.get(e.account_id) != e),
                     left=tuple(e.account_id for e in old if e.account_id not in now))


def apply(copy: Mapping[str, Ranked], change: TopChange) -> dict[str, Ranked]:
    """A client's copy (account_id -> entry) after the change: `left` removed, `entries`
    upserted."""
    left = set(change.left)
    out = {a: e for a, e in copy.items() if a not in left}
    out.update((e.account_id, e) for e in change.entries)
    return out

