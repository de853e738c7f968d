"""Milestone rules: parsing, who stands past a rule, and the crossing decision (no Redis)."""

import pytest

from streams.api.milestone_rules import (
    CampaignViews,
    EntersTop,
    crossings,
    parse_rules,
    standing,
)
from streams.ops.settings import SettingsError, load_settings

WINDOWS = ("1h", "24h", "7d", "30d", "all", "2018q1q3")


def test_rules_parse_from_the_compact_setting():
    assert parse_rules(" big=views:24h:1000000, lead=top:10:all:cat:police ,q=top:1:2018q1q3:"
                       "campaign:spring.x", WINDOWS) == (
        CampaignViews("big", "24h", 1_000_000), EntersTop("lead", 10, "all", "cat:police"),
        EntersTop("q", 1, "2018q1q3", "campaign:spring.x"))
    assert parse_rules("", WINDOWS) == ()


@pytest.mark.parametrize("text,says", [
    ("views:24h:10", "not name=rule"), ("bad name=views:24h:10", "not name=rule"),
    ("a=views:2h:10", "no window"), ("a=views:24h:-1", "a rule is"),
    ("a=top:0:24h:all", "1-100"), ("a=top:101:24h:all", "1-100"),
    ("a=top:5:24h:cats:x", "a rule is"), ("a=views:24h:1,a=top:1:24h:all", "twice"),
    ("a=likes:24h:5", "a rule is"),
])
def test_a_bad_rule_is_refused_saying_why(text, says):
    with pytest.raises(ValueError, match=says):
        parse_rules(text, WINDOWS)


def test_a_bad_rule_stops_start_up_naming_the_setting(monkeypatch):
    monkeypatch.setenv("RANKFLOW_MILESTONES", "lead=top:5:3h:all")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "RANKFLOW_MILESTONES" in str(info.value) and "3h" in str(info.value)


def test_campaigns_reaching_the_threshold_stand_past_a_views_rule():
    rule = CampaignViews("big", "24h", 100)
    past = standing(rule, 5, {}, {"spring": 100, "autumn": 99, "winter": 5000})
    assert sorted(past) == ["spring", "winter"]
    assert past["spring"] == {"rule": "big", "kind": "views", "campaign": "spring",
                              "window": "24h", "threshold": 100, "views": 100, "at": 5}


def test_accounts_in_the_top_k_stand_past_a_top_rule_ties_included():
    rule = EntersTop("lead", 2, "24h", "all")
    tops = {("24h", "all"): [("a", 9.0), ("b", 8.0), ("c", 8.0), ("d", 7.0)],
            ("1h", "all"): [("d", 99.0)]}
    past = standing(rule, 5, tops, {})
    assert sorted(past) == ["a", "b", "c"]  # c ties b at rank 2
    assert past["c"]["rank"] == 2 and past["c"]["score"] == 8.0
    assert standing(EntersTop("x", 1, "7d", "all"), 5, tops, {}) == {}


def test_a_crossing_fires_once_and_re_arms_when_the_subject_falls_back():
    crossed: set[str] = set()
    fired = []
    for past in ({"a"}, {"a", "b"}, {"b"}, {"a", "b"}, set()):
        fire, rearm = crossings(crossed, past)
        fired.append(sorted(fire))
        crossed = (crossed | fire) - rearm
    assert fired == [["a"], ["b"], [], ["a"], []]
    assert crossed == set()
