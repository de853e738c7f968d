"""After a restart, every account must still decay when its buckets leave a window.

Found by the crash trials (test_crash_trials.py): a worker restored a partition's runtime
(its decay schedule among others) only when a batch brought records of that partition.

* A partition whose records were all consumed before the restart got no batch, so its
  accounts were never re-scored when their buckets left a window. No crash is needed: a
  clean stop and start showed it (under the wall clock too: `_tick` walks the runtimes).
* A partition restored late (its first batch after the restart came when other
  partitions had moved the worker's clock on) lost the due times passed in between:
  `restore_runtime` schedules only those after the clock.

Both pass since partitions are restored when recovery completes (c2cdd3c).
"""

import orjson
import pytest

from streams.core.ingest import partition_for
from streams.dev.simulate import Message

START = 1_525_000_000_000
HOUR = 3_600_000
PARTITIONS = 8


def accounts_on_two_partitions() -> tuple[str, str]:
    first = "police.idle"
    other = next(f"media.busy{i}" for i in range(100)
                 if partition_for(f"media.busy{i}", PARTITIONS)
                 != partition_for(first, PARTITIONS))
    return first, other


def view(account_id: str, event_id: str, ts: int) -> Message:
    return Message("view", account_id.encode(), orjson.dumps(
        {"event_id": event_id, "account_id": account_id, "ts": ts, "count": 5}))


@pytest.mark.timeout(120)
def test_an_idle_partition_decays_after_a_restart(deploy):
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PARTITIONS=str(PARTITIONS))
    idle, busy = accounts_on_two_partitions()
    d.produce([view(idle, "i1", START), view(busy, "b1", START)])
    worker = d.start_worker()
    d.wait_counted(2, 0, timeout=60)
    assert d.redis.hget(f"{d.prefix}acct:{idle}", "1h.views") == "5"
    d.stop(worker)
    # only the busy partition gets new records; the clock moves two hours on
    d.produce([view(busy, "b2", START + 2 * HOUR)])
    d.start_worker()
    d.wait_counted(3, 0, timeout=60)
    d.wait_for(lambda: d.meta().get("clock") == str(START + 2 * HOUR), 30, "the event clock")
    assert d.redis.hget(f"{d.prefix}acct:{busy}", "1h.views") == "5"
    assert d.redis.hget(f"{d.prefix}acct:{idle}", "1h.views") == "0", \
        "the idle partition's account still counts a view that left the 1h window"
    assert d.redis.zscore(f"{d.prefix}lb:1h:all", idle) == \
        float(d.redis.hget(f"{d.prefix}acct:{idle}", "1h.index") or -1)


@pytest.mark.timeout(120)
def test_a_partition_restored_after_the_clock_moved_still_decays(deploy):
    d = deploy(RANKFLOW_CLOCK="event", RANKFLOW_PARTITIONS=str(PARTITIONS))
    late, busy = accounts_on_two_partitions()
    other = next(f"police.late{i}" for i in range(100)
                 if partition_for(f"police.late{i}", PARTITIONS)
                 == partition_for(late, PARTITIONS) and f"police.late{i}" != late)
    d.produce([view(late, "l1", START), view(busy, "b1", START)])
    worker = d.start_worker()
    d.wait_counted(2, 0, timeout=60)
    d.stop(worker)
    d.start_worker()
    # first a batch of the busy partition only: the clock moves two hours on ...
    d.produce([view(busy, "b2", START + 2 * HOUR)])
    d.wait_counted(3, 0, timeout=60)
    # ... then the late account's partition gets a record, and its runtime is restored
    d.produce([view(other, "o1", START + 2 * HOUR)])
    d.wait_counted(4, 0, timeout=60)
    assert d.redis.hget(f"{d.prefix}acct:{other}", "1h.views") == "5"
    assert d.redis.hget(f"{d.prefix}acct:{late}", "1h.views") == "0", \
        "the view left the 1h window before its partition was restored: never re-scored"
