"""The page's chart history stays bounded however long it runs (no Redis)."""

from streams.api.history import History

INTERVAL_MS = 10_000


def test_history_holds_only_the_last_span_however_many_accounts_and_campaigns_pass():
    history = History(points=36)
    span = history.points * INTERVAL_MS
    windows, top = ("1h", "24h"), 20
    largest = 0
    for tick in range(5000):  # nearly 14 hours at 10 s; the top changes every snapshot
        now = tick * INTERVAL_MS
        for window in windows:
            for place in range(top):
                history.add_account(window, f"acct{tick * 7 + place}", now, float(place))
            history.add_campaign(window, f"campaign{tick // 10}", now, (tick, 0, 0, 1))
        history.forget_before(now - span)
        points = sum(map(len, history.accounts.values())) + sum(
            map(len, history.campaigns.values()))
        largest = max(largest, points)
    snapshots = history.points + 1  # those within the span, both ends included
    assert largest <= snapshots * len(windows) * (top + 1)
    assert len(history.accounts) <= snapshots * len(windows) * top
    assert len(history.campaigns) <= len(windows) * (snapshots // 10 + 2)
    # the newest points are still there
    assert history.accounts["24h", f"acct{4999 * 7}"][-1] == (4999 * INTERVAL_MS, 0.0)


def test_a_series_keeps_its_recent_points_and_drops_only_the_old_ones():
    history = History(points=360)
    for at in (1, 2, 3):
        history.add_account("24h", "a", at, 1.0)
    history.add_account("24h", "b", 1, 1.0)
    history.forget_before(2)
    assert list(history.accounts["24h", "a"]) == [(2, 1.0), (3, 1.0)]
    assert ("24h", "b") not in history.accounts
