"""Replay benchmark: one worker, a preloaded replay, cold start until Redis shows it all.

    .venv/bin/python bench/replay.py --events 1000000 --runs 3
    .venv/bin/python bench/replay.py --code . --code ../other-checkout   # A/B, same run

Preloads the simulated replay once, then starts a `rankflow worker` process per run
(each with its own consumer group, state topics and Redis prefix: a true cold start)
and measures events/s from its start until `rf:meta` counts every message (events +
dead letters), and its peak RSS (VmHWM). With several `--code` folders the runs
alternate between them, so their ratio is measured under the same conditions. Prints
the figures and writes bench/results-replay.json. Needs `rankflow dev up`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from itertools import chain
from pathlib import Path

import redis

from streams.core.topics import Topics
from streams.dev.processes import WORKER_ARGV, WorkerProcess
from streams.dev.simulate import SimulatedPlatform, produce
from streams.kafka.admin import create_topics, delete_topics
from streams.ops.settings import load_settings

HERE = Path(__file__).resolve().parent


def delete_keys(client: redis.Redis, prefix: str, last: str | None = None) -> int:
    """Delete every key of the prefix in chunks (`last`, when given, at the very end);
    returns how many were deleted."""
    keys = [k for k in client.scan_iter(f"{prefix}*", count=10_000) if k != last]
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start:start + 10_000])
    return len(keys) + (int(client.delete(last)) if last else 0)  # type: ignore[arg-type]


def worker_argv(code: Path) -> tuple[str, ...]:
    """The worker command of a code folder (before the subpackages, `streams.cli`)."""
    if (code / "streams" / "ops" / "cli.py").exists():
        return WORKER_ARGV
    return (sys.executable, "-m", "streams.cli", "worker")


def cold_start(env: dict[str, str], expected: int, prefix: str, client: redis.Redis,
               log: Path) -> tuple[WorkerProcess, dict[str, float]]:
    """Start a worker and wait until `expected` messages are counted; the running worker
    and its timings, RSS now (`rss_now_mb`) and peak RSS. The caller stops the worker."""
    started = time.monotonic()
    # run from the code folder: `-m` puts the working directory first on sys.path
    code = Path(env.get("PYTHONPATH", HERE.parent))
    worker = WorkerProcess(env, log, cwd=code, argv=worker_argv(code))
    done, first_seen = 0, None
    try:
        while done < expected:
            time.sleep(0.05)
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited ({worker.returncode}); see {log}")
            meta: dict[str, str] = client.hgetall(f"{prefix}meta")  # type: ignore[assignment]
            done = int(meta.get("events", 0)) + int(meta.get("dlq", 0))
            if done and first_seen is None:
                first_seen = time.monotonic()
        elapsed = time.monotonic() - started
        usage = worker.usage()
    except BaseException:
        worker.stop()
        raise
    startup = (first_seen or started) - started
    return worker, {"eps": expected / elapsed, "steady_eps": expected / (elapsed - startup),
                    "seconds": elapsed, "startup_seconds": startup,
                    "rss_mb": usage.peak_rss_mb, "rss_now_mb": usage.rss_mb,
                    "cpu_us_per_event": usage.cpu_seconds / expected * 1e6}


def run_worker(env: dict[str, str], expected: int, prefix: str,
               client: redis.Redis) -> dict[str, float]:
    """One cold start until `expected` messages are counted; its timings and RSS."""
    log = HERE / f"{env['RANKFLOW_APP_ID']}-worker.log"
    worker, run = cold_start(env, expected, prefix, client, log)
    worker.stop()
    log.unlink()
    delete_keys(client, prefix)
    del run["rss_now_mb"]
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bad", type=float, default=0.001)
    parser.add_argument("--duplicates", type=float, default=0.001)
    parser.add_argument("--runs", type=int, default=1, help="cold starts per code folder")
    parser.add_argument("--code", action="append", type=Path,
                        help="source folder to run the worker from (repeat to compare)")
    parser.add_argument("--out", type=Path, default=HERE / "results-replay.json")
    args = parser.parse_args()
    codes = [c.resolve() for c in (args.code or [HERE.parent])]

    name = f"bench{int(time.time())}"
    os.environ["RANKFLOW_TOPIC_PREFIX"] = f"{name}."
    settings = load_settings()
    topics = Topics(settings.topic_prefix, f"{name}-0-0")
    asyncio.run(create_topics(settings.bootstrap_servers, topics, settings.partitions))
    sim = SimulatedPlatform(seed=args.seed, accounts=args.accounts,
                            start_ms=int(time.time() * 1000) - 86_400_000,
                            step_ms=86_400_000 / args.events, bad_share=args.bad,
                            duplicate_share=args.duplicates)
    print(f"preloading {args.events:,} events for {args.accounts:,} accounts ...")
    started = time.monotonic()
    asyncio.run(produce(settings.bootstrap_servers, topics,
                        chain(sim.profiles(), sim.events(args.events)),
                        args.accounts + args.events))
    preload_s = time.monotonic() - started

    client = redis.Redis.from_url(settings.redis, decode_responses=True)
    runs: dict[str, list[dict[str, float]]] = {str(code): [] for code in codes}
    for i in range(args.runs):
        for k, code in enumerate(codes):
            app_id = f"{name}-{i}-{k}"
            asyncio.run(create_topics(settings.bootstrap_servers,
                                      Topics(settings.topic_prefix, app_id), settings.partitions))
            env = {**os.environ, "RANKFLOW_APP_ID": app_id, "RANKFLOW_PREFIX": f"{app_id}:",
                   "PYTHONPATH": str(code)}
            run = run_worker(env, args.events, f"{app_id}:", client)
            runs[str(code)].append(run)
            print(f"run {i + 1}, {code}: {run['eps']:,.0f} events/s, "
                  f"{run['cpu_us_per_event']:.1f} µs CPU per event, "
                  f"{run['rss_mb']:.0f} MB peak RSS")

    def median(code: Path, key: str) -> float:
        return statistics.median(r[key] for r in runs[str(code)])

    results = {
        "events": args.events,
        "accounts": args.accounts,
        "runs": args.runs,
        "cold_start_eps": round(median(codes[0], "eps")),
        "steady_eps": round(median(codes[0], "steady_eps")),
        "startup_seconds": round(median(codes[0], "startup_seconds"), 2),
        "rss_mb": round(median(codes[0], "rss_mb"), 1),
        "preload_seconds": round(preload_s, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "per_code": {str(code): {"cold_start_eps": round(median(code, "eps")),
                                 "rss_mb": round(median(code, "rss_mb"), 1),
                                 "cpu_us_per_event": round(median(code, "cpu_us_per_event"), 2),
                                 "all_eps": [round(r["eps"]) for r in runs[str(code)]]}
                     for code in codes},
    }
    if len(codes) > 1:
        results["ratio_to_first"] = {
            str(code): round(median(code, "eps") / median(codes[0], "eps"), 3)
            for code in codes[1:]}
    print(json.dumps(results, indent=2))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    asyncio.run(delete_topics(settings.bootstrap_servers, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
