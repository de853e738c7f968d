"""Redis memory of one campaign's time series (the README's figure).

    .venv/bin/python bench/series_memory.py [--partitions 8]

Writes one campaign's full series, every minute of a day and every hour of 30 days with a
share from every partition (a campaign whose accounts are spread over all of them: the
most fields it can have), through the worker's own payload (`LayoutWriter.add_series`,
then lua/apply_changes.lua) under a prefix of its own on the dev Redis; sums MEMORY USAGE
of the two keys, deletes them and writes bench/results-series-memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from streams.core.series import SPANS, STEPS, UNITS, Cell
from streams.core.windows import Windows
from streams.ops.settings import load_settings
from streams.sink.keys import RedisKeys
from streams.sink.writer import BoardChanges, RedisBoardWriter, apply_changes_payload

HERE = Path(__file__).resolve().parent
log = logging.getLogger("series_memory")
CLOCK = 1_700_000_000_000
CAMPAIGN = "spring-festival-2026"


def full_series(partitions: int, rng: random.Random) -> dict[int, list[Cell]]:
    """Every bucket of both spans, a share per partition, with live-like magnitudes."""
    out: dict[int, list[Cell]] = {p: [] for p in range(partitions)}
    for step, unit, span in zip(STEPS, UNITS, SPANS, strict=True):
        last = CLOCK // unit
        scale = unit // 60_000  # an hour holds sixty minutes' worth
        for bucket in range(last - span + 1, last + 1):
            for p in range(partitions):
                views = rng.randrange(50, 5_000) * scale
                value = f"{views},{views // 20},{rng.randrange(0, 5) * scale}," \
                        f"{rng.randrange(1, 40) * min(scale, 8)}"
                out[p].append((CAMPAIGN, step, bucket * unit, value))
    return out


async def measure(client: aioredis.Redis, partitions: int) -> dict[str, int]:
    keys = RedisKeys(f"sermem{uuid.uuid4().hex[:6]}:")
    writer = RedisBoardWriter(client, keys, Windows())
    parts: dict[int, BoardChanges] = {}
    writer.add_series(parts, full_series(partitions, random.Random(7)))
    for p, changes in parts.items():  # one partition's payload per call, as chunked writes go
        await writer._apply_changes(  # the worker's own script; no owner stamps here
            keys=[keys.owners, keys.campaigns], args=[apply_changes_payload({p: changes}, {})])
    out = {step: int(await client.memory_usage(keys.series(CAMPAIGN, step), samples=0) or 0)
           for step in STEPS}
    await client.delete(*(keys.series(CAMPAIGN, step) for step in STEPS))
    return out


async def main(partitions: int) -> dict[str, object]:
    client = aioredis.Redis.from_url(load_settings().redis)
    found = await measure(client, partitions)
    await client.aclose()
    fields = {step: span * partitions for step, span in zip(STEPS, SPANS, strict=True)}
    return {"partitions": partitions, "fields": fields, "memory_usage_bytes": found,
            "bytes_per_campaign": sum(found.values()),
            "bytes_per_field": round(sum(found.values()) / sum(fields.values()), 1)}


if __name__ == "__main__":
    logging.basicConfig(level="INFO", format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=8)
    result = asyncio.run(main(parser.parse_args().partitions))
    (HERE / "results-series-memory.json").write_text(json.dumps(result, indent=1) + "\n")
    log.info("%s", json.dumps(result, indent=1))
