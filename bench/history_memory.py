"""Redis memory of the rank history per board (the README's figure).

    .venv/bin/python bench/history_memory.py

Writes a full history of one board's top 100 (every tick of a day at 10 s and of 30 days
at 10 min) with the recorder's own write (`RankRecorder.write`) under a prefix of its own
on the dev Redis, sums MEMORY USAGE of the keys, deletes them and writes
bench/results-history-memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from streams.api.lease import Lease
from streams.api.rank_samples import STEPS
from streams.api.recorder import RankRecorder
from streams.core.windows import Windows
from streams.ops.settings import load_settings
from streams.sink.keys import RedisKeys

HERE = Path(__file__).resolve().parent
log = logging.getLogger("history_memory")
START = 1_700_000_000_000


async def measure(client: aioredis.Redis, top: int) -> dict[str, int]:
    keys = RedisKeys(f"histmem{uuid.uuid4().hex[:6]}:")
    recorder = RankRecorder(client, keys, Windows(), Lease(client, keys.recorder_lease, 5))
    for step in STEPS.values():
        for n in range(step.slots):
            # scores move a little every tick, as a live board's do
            tops = {("24h", "all"): [(f"gov.{i:04d}", round(900 - i * 3.7 + n % 17 * 0.13, 2))
                                     for i in range(top)]}
            await recorder.write(START + n * step.ms, tops, step)
    out = {}
    for step in STEPS:
        names = [k async for k in client.scan_iter(f"{keys.prefix}rank-history:{step}:*",
                                                   count=1000)]
        out[step] = sum([int(await client.memory_usage(n, samples=0) or 0) for n in names])
        await client.delete(*names)
    return out


async def main(top: int) -> dict[str, object]:
    client = aioredis.Redis.from_url(load_settings().redis)
    found = await measure(client, top)
    await client.aclose()
    return {"top": top, "slots": {s.name: s.slots for s in STEPS.values()},
            "ring_bytes": {s.name: s.ring_bytes for s in STEPS.values()},
            "memory_usage_bytes": found, "bytes_per_board": sum(found.values()),
            "bytes_per_account": sum(found.values()) // top}


if __name__ == "__main__":
    logging.basicConfig(level="INFO", format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=100)
    result = asyncio.run(main(parser.parse_args().top))
    (HERE / "results-history-memory.json").write_text(json.dumps(result, indent=1) + "\n")
    log.info("%s", json.dumps(result, indent=1))
