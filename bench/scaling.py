"""Scaling out: one worker, then two in one consumer group, on the same 8-partition replay.

    .venv/bin/python bench/scaling.py --events 1000000

Preloads a replay (fixed seed, a named period covering it), then cold-starts one worker
and later two workers together (each run with its own consumer group, state topics and
Redis prefix), each until `rf:meta` counts every message. Reports both rates and checks
that both runs end with the same Redis state for `all` and the named period: every board
and every account's `all.*` and period fields, and the counters. Rolling windows are left
out: they follow the wall clock, which moves between the runs. Writes
bench/results-scaling.json. On a 2-core machine that also runs Kafka and Redis, two
workers share the same two cores: the figure shows the overhead, not a speed-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from itertools import chain
from pathlib import Path
from typing import Any

import redis
from compare import fresh_env
from replay import delete_keys

from streams.core.topics import Topics
from streams.dev.processes import WorkerProcess
from streams.dev.simulate import SimulatedPlatform, produce
from streams.kafka.admin import create_topics, delete_topics
from streams.ops.connections import kafka_client_options, redis_client
from streams.ops.settings import load_settings

HERE = Path(__file__).resolve().parent
PERIOD = "bench"


def run_workers(n: int, env: dict[str, str], expected: int, prefix: str,
                client: redis.Redis) -> dict[str, Any]:
    """Cold-start `n` workers in one group until `expected` messages are counted."""
    logs = [HERE / f"{env['RANKFLOW_APP_ID']}-worker{i}.log" for i in range(n)]
    started = time.monotonic()
    workers = [WorkerProcess(env, log, cwd=HERE.parent) for log in logs]
    try:
        done = 0
        while done < expected:
            time.sleep(0.05)
            for worker, log in zip(workers, logs, strict=True):
                if worker.poll() is not None:
                    raise SystemExit(f"a worker exited ({worker.returncode}); see {log}")
            meta: dict[str, str] = client.hgetall(f"{prefix}meta")  # type: ignore[assignment]
            done = int(meta.get("events", 0)) + int(meta.get("dlq", 0))
        elapsed = time.monotonic() - started
        rss = [w.usage().peak_rss_mb for w in workers]
        time.sleep(2)  # let the last writes of the other worker land
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.stop()
    for log in logs:
        log.unlink()
    return {"workers": n, "eps": expected / elapsed, "seconds": elapsed, "rss_mb": rss}


def final_state(client: redis.Redis, prefix: str, windows: tuple[str, ...]) -> dict[str, Any]:
    """Boards and account fields of the given windows, and the counters."""
    found: dict[str, Any] = {}
    fields = [f"{w}.{m}" for w in windows for m in ("views", "likes", "uploads", "index")]
    for key in client.scan_iter(f"{prefix}*", count=10_000):
        name = key[len(prefix):]  # type: ignore[index]
        if name.startswith("lb:") and name.split(":")[1] in windows:
            found[name] = client.zrange(key, 0, -1, withscores=True)
        elif name.startswith("acct:"):
            found[name] = client.hmget(key, [*fields, "fans", "category", "name"])
    meta: dict[str, str] = client.hgetall(f"{prefix}meta")  # type: ignore[assignment]
    found["meta"] = (meta.get("events"), meta.get("dlq"))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=HERE / "results-scaling.json")
    args = parser.parse_args()

    start_ms = int(time.time() * 1000) - 86_400_000
    day = time.strftime("%Y-%m-%d", time.gmtime(start_ms / 1000 - 86_400))
    end = time.strftime("%Y-%m-%d", time.gmtime(start_ms / 1000 + 2 * 86_400))
    name = f"scale{int(time.time())}"
    os.environ["RANKFLOW_TOPIC_PREFIX"] = f"{name}."
    os.environ["RANKFLOW_PERIODS"] = f"{PERIOD}={day}/{end}"
    settings = load_settings()
    if settings.partitions != 8:
        print(f"note: RANKFLOW_PARTITIONS is {settings.partitions}, not 8")
    options = kafka_client_options(settings)
    topics = Topics(settings.topic_prefix, f"{name}-data")
    asyncio.run(create_topics(settings.bootstrap_servers, topics, settings.partitions,
                              kafka_options=options))
    sim = SimulatedPlatform(seed=42, accounts=args.accounts, start_ms=start_ms,
                            step_ms=86_400_000 / args.events, bad_share=0.001,
                            duplicate_share=0.001, unkeyed_share=0.01)
    total = args.accounts + args.events
    print(f"preloading {args.events:,} events ...")
    asyncio.run(produce(settings.bootstrap_servers, topics,
                        chain(sim.profiles(), sim.events(args.events)), total,
                        kafka_options=options))
    client = redis_client(settings, asyncio=False, decode_responses=True)
    runs, states = [], []
    for n in (1, 2):
        app_id = f"{name}-{n}w"
        run = run_workers(n, fresh_env(settings, app_id), args.events, f"{app_id}:", client)
        states.append(final_state(client, f"{app_id}:", ("all", PERIOD)))
        delete_keys(client, f"{app_id}:")
        runs.append(run)
        print(f"{n} worker(s): {run['eps']:,.0f} events/s, peak RSS "
              f"{', '.join(f'{r:.0f}' for r in run['rss_mb'])} MB")
    same = states[0] == states[1]
    differing = sorted(k for k in states[0].keys() | states[1].keys()
                       if states[0].get(k) != states[1].get(k))
    results = {
        "events": args.events, "partitions": settings.partitions,
        "one_worker_eps": round(runs[0]["eps"]), "two_workers_eps": round(runs[1]["eps"]),
        "two_to_one": round(runs[1]["eps"] / runs[0]["eps"], 3),
        "same_final_state": same, "keys_compared": len(states[0]),
        "differing_keys": differing[:20], "cores": os.cpu_count(), "runs": runs,
    }
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    asyncio.run(delete_topics(settings.bootstrap_servers, name, kafka_options=options))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
