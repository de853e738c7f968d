"""Has faust read a partition's tables to the end? Asked before a runtime is restored.

A partition's runtime (counters, watermarks, dedup ids, campaign totals) is rebuilt once
from the tables; rebuilt from tables still being read, the counts of the last batches
before a crash or a hand-over are lost for good. faust's own signals are not precise
enough: `on_rebalance_complete` also fires when it finishes reading for an assignment a
newer one has already replaced, and a fetch that raced a rebalance can hand over source
records of a partition whose changelog is not read yet (what the crash trials found:
docs/performance.md). So the answer comes from faust's recovery bookkeeping itself, per
changelog partition: assigned as active in the latest rebalance, with no newer rebalance
waiting, and read up to the highwater taken when its reading started; and no reading in
progress (records read are applied to the tables in batches, all of them when it ends). Offsets
and highwaters of revoked changelog partitions are dropped by faust, so a stale answer
cannot come from an earlier assignment. Each condition is held by tests/test_recovered.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.types import TP


def tables_recovered(recovery: Any, changelog_topics: Iterable[str], partition: int) -> bool:
    """True when every table's changelog partition `partition` is read to its highwater.

    `recovery` is faust's `Recovery` service (`app.tables.recovery`).
    """
    if recovery.signal_recovery_start.is_set():  # a newer rebalance waits to be read
        return False
    # faust counts a changelog record as read when it takes it, and applies it to its
    # table later, in batches: only at the end of reading are all of them applied
    if recovery.in_recovery or any(recovery.buffers.values()):
        return False
    for topic in changelog_topics:
        tp = TP(topic, partition)
        if tp not in recovery.active_tps:
            return False
        highwater = recovery.active_highwaters.get(tp)
        if highwater is None:  # reading has not started for this assignment
            return False
        offset = recovery.active_offsets.get(tp)
        if (-1 if offset is None else offset) < highwater:
            return False
    return True
