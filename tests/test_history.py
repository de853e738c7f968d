"""The page's chart history stays bounded however long it runs (no Redis)."""

from streams.api.history import History

INTERVAL_MS = 10_000


def test_history_holds_only_the_last_span_however_many_campaigns_pass():
    history = History(points=36)
    span = history.points * INTERVAL_MS
    windows = ("1h", "24h")
    largest = 0
    for tick in range(5000):  # nearly 14 hours at 10 s; a new campaign every 10 snapshots
        now = tick * INTERVAL_MS
        for window in windows:
            history.add_campaign(window, f"campaign{tick // 10}", now, (tick, 0, 0, 1))
        history.forget_before(now - span)
        largest = max(largest, sum(map(len, history.campaigns.values())))
    snapshots = history.points + 1  # those within the span, both ends included
    assert largest <= snapshots * len(windows)
    assert len(history.campaigns) <= len(windows) * (snapshots // 10 + 2)
    # the newest points are still there
    assert history.campaigns["24h", "campaign499"][-1] == (4999 * INTERVAL_MS, 4999, 0, 0, 1)


def test_a_series_keeps_its_recent_points_and_drops_only_the_old_ones():
    history = History(points=360)
    for at in (1, 2, 3):
        history.add_campaign("24h", "a", at, (at, 0, 0, 1))
    history.add_campaign("24h", "b", 1, (1, 0, 0, 1))
    history.forget_before(2)
    assert list(history.campaigns["24h", "a"]) == [(2, 2, 0, 0, 1), (3, 3, 0, 0, 1)]
    assert ("24h", "b") not in history.campaigns
