"""Boards decay on time: a bucket leaving `1h` is rewritten with no new event."""

import json
import time

import orjson

from streams.core.scoring import influence_index
from streams.dev.simulate import Message
from tests.integration.conftest import ARTIFACTS

MINUTE = 60_000


def test_an_event_leaves_1h_at_the_minute_boundary_while_24h_keeps_it(deploy):
    d = deploy()
    now = int(time.time() * 1000)
    # the oldest minute still inside `1h`; if the boundary is too near, the one after it
    minute = now // MINUTE - (59 if now % MINUTE < 35_000 else 58)
    boundary_ms = (minute + 60) * MINUTE
    event = {"event_id": "old", "account_id": "gov.x", "ts": minute * MINUTE + 500,
             "count": 7, "campaign": "c1"}
    d.produce([
        Message("accounts", b"gov.x", orjson.dumps(
            {"account_id": "gov.x", "name": "x", "category": "police", "fans": 100})),
        Message("view", b"gov.x", orjson.dumps(event)),
    ])
    d.start_worker()
    d.wait_counted(events=1, dead=0, timeout=60)
    r, p = d.redis, d.prefix
    assert time.time() * 1000 < boundary_ms, "the worker was too slow to see it in 1h"
    assert r.hget(f"{p}acct:gov.x", "1h.views") == "7"
    assert r.zscore(f"{p}lb:1h:campaign:c1", "gov.x") == 7.0

    d.wait_for(lambda: r.hget(f"{p}acct:gov.x", "1h.views") == "0",
               timeout=(boundary_ms - time.time() * 1000) / 1000 + 10,
               what="the 1h window to drop the event")
    delay_s = time.time() - boundary_ms / 1000
    assert time.time() * 1000 >= boundary_ms, "left 1h before its boundary"
    assert delay_s < 5, f"decay took {delay_s:.1f}s"

    fans_only = influence_index(0, 0, 0, 100, 1 / 24)
    assert r.zscore(f"{p}lb:1h:all", "gov.x") == fans_only
    assert r.zscore(f"{p}lb:1h:cat:police", "gov.x") == fans_only
    assert r.zscore(f"{p}lb:1h:campaign:c1", "gov.x") is None
    assert r.hget(f"{p}campaign:c1", "1h.views") == "0"
    assert r.hget(f"{p}campaign:c1", "1h.accounts") == "0"
    assert r.hget(f"{p}acct:gov.x", "24h.views") == "7"
    assert r.zscore(f"{p}lb:24h:all", "gov.x") == influence_index(7, 0, 0, 100, 1)
    assert r.zscore(f"{p}lb:24h:campaign:c1", "gov.x") == 7.0
    assert r.hget(f"{p}campaign:c1", "24h.accounts") == "1"
    (ARTIFACTS / "decay-delay.json").write_text(json.dumps({"decay_delay_s": delay_s}))
