"""Milestone rules: their compact setting, and which subjects stand past each one now.

Pure (no Redis, no I/O). `RANKFLOW_MILESTONES` is a comma-separated list of
`name=rule`, where a rule is one of

- `views:{window}:{N}`: a campaign whose views in the window reach N (every campaign);
- `top:{K}:{window}:{board}`: an account entering the top K (1-100) of a board.

`parse_rules` refuses anything else with a message saying what is wrong; `standing`
lists the subjects past a rule at one reading, with the alert each would carry. Whether
that is a crossing (fire once, re-arm when the subject falls back) is decided in Redis,
atomically (streams/api/milestones.py); `crossings` is the same decision in Python
(tests/test_milestone_rules.py).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from schemas.events import ID_PATTERN

_ID = ID_PATTERN.pattern.strip("^$")
NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
VIEWS = re.compile(rf"^views:({_ID}):([0-9]{{1,15}})$")
TOP = re.compile(rf"^top:([0-9]{{1,3}}):({_ID}):(all|cat:{_ID}|campaign:{_ID})$")
#: the deepest top a rule may watch: the recorder reads each board's top 100
TOP_MAX = 100


@dataclass(frozen=True, slots=True)
class CampaignViews:
    """A campaign reaching `threshold` views in `window`."""

    name: str
    window: str
    threshold: int


@dataclass(frozen=True, slots=True)
class EntersTop:
    """An account entering the top `k` of `board` in `window`."""

    name: str
    k: int
    window: str
    board: str


Rule = CampaignViews | EntersTop


def parse_rules(text: str, windows: Collection[str]) -> tuple[Rule, ...]:
    """The rules of a RANKFLOW_MILESTONES value; ValueError naming the bad rule."""
    rules: list[Rule] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, body = item.partition("=")
        if not sep or not NAME.match(name):
            raise ValueError(f"{item!r} is not name=rule (a name of letters, digits and _)")
        if any(r.name == name for r in rules):
            raise ValueError(f"rule name {name!r} is given twice")
        rule: Rule
        if views := VIEWS.match(body):
            rule = CampaignViews(name, views[1], int(views[2]))
        elif top := TOP.match(body):
            rule = EntersTop(name, int(top[1]), top[2], top[3])
            if not 1 <= rule.k <= TOP_MAX:
                raise ValueError(f"{item!r}: the top must be 1-{TOP_MAX}")
        else:
            raise ValueError(f"{item!r}: a rule is views:{{window}}:{{N}} or "
                             f"top:{{K}}:{{window}}:{{board}}")
        if rule.window not in windows:
            raise ValueError(f"{item!r}: no window {rule.window!r} "
                             f"(windows: {', '.join(windows)})")
        rules.append(rule)
    return tuple(rules)


def standing(rule: Rule, tick_ms: int,
             tops: Mapping[tuple[str, str], Sequence[tuple[str, float]]],
             campaign_views: Mapping[str, int]) -> dict[str, dict[str, object]]:
    """Subject -> the alert it carries, for every subject past the rule at this reading:
    `tops` as the recorder read them, `campaign_views` the views of each campaign in the
    rule's window."""
    if isinstance(rule, CampaignViews):
        return {c: {"rule": rule.name, "kind": "views", "campaign": c, "window": rule.window,
                    "threshold": rule.threshold, "views": v, "at": tick_ms}
                for c, v in sorted(campaign_views.items()) if v >= rule.threshold}
    members = tops.get((rule.window, rule.board), ())
    out: dict[str, dict[str, object]] = {}
    rank, previous = 0, None
    for place, (account_id, score) in enumerate(members, 1):
        if score != previous:  # competition ranks: ties at the K-th place are in the top K
            rank, previous = place, score
        if rank > rule.k:
            break
        out[account_id] = {"rule": rule.name, "kind": "top", "account_id": account_id,
                           "window": rule.window, "board": rule.board, "top": rule.k,
                           "rank": rank, "score": score, "at": tick_ms}
    return out


def crossings(crossed: Collection[str], past: Collection[str]) -> tuple[set[str], set[str]]:
    """(fire, re-arm): the subjects past the rule now that were not already, and those
    that had crossed and are back below (lua in streams/api/milestones.py does the same)."""
    return set(past) - set(crossed), set(crossed) - set(past)
