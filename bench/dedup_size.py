"""Bytes per remembered event id in a partition's dedup window (no broker).

    .venv/bin/python bench/dedup_size.py --ids 250000 --window-ids 50000

Feeds `--ids` new ids (the simulator's shape, `s42-123456`) through `RecentEventIds` in
batches, sealing each batch into segments (as the worker does) with the cap at
`--window-ids`, so the window fills, then expires ids and reuses the table's slots.
Reports the memory held per id (tracemalloc: everything the structure allocated,
segments and table), the same for what rankflow kept before (a dict of id strings and
the records' (id, ref) tuples), the CPU time per id of `first_ref` and of seal+expire,
and the window that a default cap holds at 100,000 events/s. Writes
bench/results-dedup.json. Timings here are figures, not asserts (2 shared cores).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from pathlib import Path

from streams.core.dedup import DEFAULT_MAX_IDS, RecentEventIds, source_ref

HERE = Path(__file__).resolve().parent


def event_ids(start: int, n: int) -> list[str]:
    return [f"s42-{i}" for i in range(start, start + n)]


def fill(n_ids: int, window_ids: int, batch: int) -> tuple[RecentEventIds, float, float]:
    """A window fed n_ids new ids; its CPU seconds in first_ref and in seal+expire."""
    recent = RecentEventIds(min_events=0, min_age_ms=10**12, max_ids=window_ids)
    lookup = upkeep = 0.0
    seq = 0
    for start in range(0, n_ids, batch):
        ids = event_ids(start, min(batch, n_ids - start))
        first_ref = recent.first_ref
        t0 = time.process_time()
        for offset, event_id in enumerate(ids, start):
            first_ref(event_id, source_ref(0, offset))
        t1 = time.process_time()
        seq += len(recent.seal(seq, start))
        recent.expire(start)
        upkeep += time.process_time() - t1
        lookup += t1 - t0
    return recent, lookup, upkeep


def held_bytes(build: object) -> tuple[int, object]:
    """Bytes tracemalloc sees still allocated by `build()`, and its result (kept alive)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = build()  # type: ignore[operator]
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, result


def before_bytes(window_ids: int) -> int:
    """What the window held before: a dict id -> ref and the segments' (id, ref) tuples."""
    def build() -> object:
        ids = event_ids(10**6, window_ids)
        refs = {event_id: source_ref(0, 10**7 + i) for i, event_id in enumerate(ids)}
        entries = [(event_id, ref) for event_id, ref in refs.items()]
        return refs, entries
    size, _kept = held_bytes(build)
    return size


def measure(ids: int = 250_000, window_ids: int = 50_000, batch: int = 2_000) -> dict[str, float]:
    """The figures of one run (bench/compare.py takes `bytes_per_id` from it)."""
    size, kept = held_bytes(lambda: fill(ids, window_ids, batch))
    recent = kept[0]  # type: ignore[index]
    _, lookup, upkeep = fill(ids, window_ids, batch)  # timed untraced
    held = len(recent)
    per_id = size / held
    before = before_bytes(held) / held
    slots = len(recent._slots)
    rate_per_partition = 100_000 / 8
    return {
        "ids_fed": ids, "window_ids": window_ids, "ids_held": held,
        "bytes_held": size, "bytes_per_id": round(per_id, 1),
        "table_slots": slots, "table_load": round(recent._used / slots, 3),
        "bytes_per_id_before": round(before, 1),
        "first_ref_us_per_id": round(lookup / ids * 1e6, 3),
        "seal_expire_us_per_id": round(upkeep / ids * 1e6, 3),
        "default_max_ids": DEFAULT_MAX_IDS,
        "default_window_s_at_100k_eps_8_partitions": DEFAULT_MAX_IDS / rate_per_partition,
        "mb_per_100k_eps_for_10_min": round(100_000 * 600 * per_id / 1e6),
        "mb_per_100k_eps_for_10_min_before": round(100_000 * 600 * before / 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=250_000, help="new ids fed in all")
    parser.add_argument("--window-ids", type=int, default=50_000, help="the cap (max_ids)")
    parser.add_argument("--batch", type=int, default=2_000, help="ids per sealed batch")
    parser.add_argument("--out", type=Path, default=HERE / "results-dedup.json")
    args = parser.parse_args()

    results = measure(args.ids, args.window_ids, args.batch)
    for name, value in results.items():
        print(f"{name:45} {value}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
