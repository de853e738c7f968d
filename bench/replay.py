"""Replay benchmark: one worker, a preloaded replay, cold start until Redis shows it all.

    .venv/bin/python bench/replay.py --events 1000000

Preloads the simulated replay into fresh topics, then starts one `rankflow worker`
process and measures events/s from its start until `rf:meta` counts every message
(events + dead letters), and the worker's peak RSS (VmHWM). Prints the figures and
writes them to bench/results-replay.json. Needs the local stack (`rankflow dev up`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from itertools import chain
from pathlib import Path

import redis

from streams.settings import load_settings
from streams.simulate import SimulatedPlatform, produce
from streams.topics import Topics, create_topics

HERE = Path(__file__).resolve().parent


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bad", type=float, default=0.001)
    parser.add_argument("--duplicates", type=float, default=0.001)
    parser.add_argument("--out", type=Path, default=HERE / "results-replay.json")
    args = parser.parse_args()

    name = f"bench{int(time.time())}"
    env = {**os.environ, "RANKFLOW_TOPIC_PREFIX": f"{name}.", "RANKFLOW_APP_ID": name,
           "RANKFLOW_PREFIX": f"{name}:"}
    os.environ.update(env)
    settings = load_settings()
    topics = Topics(settings.topic_prefix, settings.app_id)
    asyncio.run(create_topics(settings.bootstrap_servers, topics, settings.partitions))

    sim = SimulatedPlatform(seed=args.seed, accounts=args.accounts,
                            start_ms=int(time.time() * 1000) - 86_400_000,
                            step_ms=86_400_000 / args.events, bad_share=args.bad,
                            duplicate_share=args.duplicates)
    total = args.accounts + args.events
    print(f"preloading {args.events:,} events for {args.accounts:,} accounts ...")
    started = time.monotonic()
    asyncio.run(produce(settings.bootstrap_servers, topics,
                        chain(sim.profiles(), sim.events(args.events)), total))
    preload_s = time.monotonic() - started

    client = redis.Redis.from_url(settings.redis, decode_responses=True)
    log = (HERE / f"{name}-worker.log").open("wb")
    started = time.monotonic()
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    done = 0
    first_seen = None
    try:
        while done < args.events:
            time.sleep(0.05)
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited ({worker.returncode}); see {log.name}")
            meta = client.hgetall(f"{settings.prefix}meta")
            done = int(meta.get("events", 0)) + int(meta.get("dlq", 0))  # type: ignore[union-attr]
            if done and first_seen is None:
                first_seen = time.monotonic()
        elapsed = time.monotonic() - started
        rss = peak_rss_mb(worker.pid)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    steady = elapsed - ((first_seen or started) - started)
    results = {
        "events": args.events,
        "accounts": args.accounts,
        "cold_start_eps": round(args.events / elapsed),
        "after_first_write_eps": round(args.events / steady) if steady > 0 else None,
        "seconds": round(elapsed, 2),
        "startup_seconds": round((first_seen or started) - started, 2),
        "rss_mb": round(rss, 1),
        "preload_seconds": round(preload_s, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
    }
    print(json.dumps(results, indent=2))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    keys = list(client.scan_iter(f"{settings.prefix}*", count=10_000))
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start:start + 10_000])
    Path(log.name).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
