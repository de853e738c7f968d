"""Side-by-side benchmark (`make bench`): the ceiling, the naive faust app, rankflow.

    .venv/bin/python bench/compare.py                    # 2,000,000 events, ~10 minutes
    .venv/bin/python bench/compare.py --events 200000    # a quick look
    .venv/bin/python bench/compare.py --million          # make bench: and a million accounts

One preloaded replay (fixed seed, all windows on), then one after another:

* `raw_eps`: the ceiling: aiokafka `getmany` and orjson decoding of every message,
  doing nothing else (one consumer, all input partitions, from a cold start);
* `naive_eps`: bench/naive.py, the textbook per-event faust app, cold start, measured
  over what it counts within `--naive-seconds` (it is too slow to finish);
* `rankflow_eps`: one `rankflow worker`, cold start until `rf:meta` counts every message,
  with its peak RSS and CPU time;
* latency: a fresh worker fed live at half of `rankflow_eps`; a probe account gets one
  event every 50 ms, and a poller times each one from its production to its effect in
  Redis (`acct:{probe}` `all.views`);
* `state_bytes_per_account`: the average account-state changelog record;
* `dedup_bytes_per_id`: bytes per remembered event id (bench/dedup_size.py's measure);
* with `--million`, the `million` block (bench/million.py): 1,000,000 accounts, Zipf
  popularity, 5,000,000 events; its ratios are taken against this run's `raw_eps` and
  `rankflow_eps`. `--million-only` measures only those two (no naive app, no 1,000-account
  latency) and the block, and writes `million` and `dedup_bytes_per_id` into the existing
  bench/results.json, keeping its other keys.

Prints a table and writes bench/results.json. Needs `rankflow dev up`. Ratios between
these figures are what carries from machine to machine: all of them share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from itertools import chain, islice
from pathlib import Path
from typing import Any

import orjson
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from dedup_size import measure as measure_dedup
from naive import run_naive
from replay import delete_keys, run_worker
from tqdm import tqdm

from streams.core.ingest import partition_for
from streams.core.topics import ACCOUNT_TABLE, Topics
from streams.dev.processes import WorkerProcess
from streams.dev.simulate import SimulatedPlatform, produce
from streams.kafka.admin import create_topics
from streams.kafka.admin import delete_topics as delete_deployment_topics
from streams.kafka.changelogs import read_latest
from streams.ops.connections import kafka_client_options, redis_client
from streams.ops.rebuild import changelog
from streams.ops.settings import Settings, load_settings

HERE = Path(__file__).resolve().parent
PROBE = "bench-probe"
PROBE_EVERY_S = 0.05


async def raw_ceiling(settings: Settings, topics: Topics, expected: int) -> float:
    """Events/s of getmany + orjson.loads over every input message, from a cold start."""
    started = time.monotonic()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024,
                                **kafka_client_options(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics.sources[:5]
               for p in range(settings.partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        decoded = 0
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for tp, records in batch.items():
                for record in records:
                    try:  # noqa: SIM105 (suppress() costs a context per message)
                        orjson.loads(record.value)  # type: ignore[arg-type]
                    except orjson.JSONDecodeError:
                        pass
                decoded += len(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return decoded / (time.monotonic() - started)


def fresh_env(settings: Settings, app_id: str) -> dict[str, str]:
    asyncio.run(create_topics(settings.bootstrap_servers, Topics(settings.topic_prefix, app_id),
                              settings.partitions, kafka_options=kafka_client_options(settings)))
    return {**os.environ, "RANKFLOW_APP_ID": app_id, "RANKFLOW_PREFIX": f"{app_id}:",
            "PYTHONPATH": str(HERE.parent), "RANKFLOW_SESSION_TIMEOUT": "6",
            "RANKFLOW_REBALANCE_TIMEOUT": "6"}


async def delete_topics(settings: Settings, name: str) -> list[str]:
    """A deployment's topics: its topic prefix's and faust's own (`{name}-...`)."""
    return await delete_deployment_topics(settings.bootstrap_servers, name,
                                          kafka_options=kafka_client_options(settings))


def state_bytes_per_account(settings: Settings, app_id: str) -> float:
    """Average size of the latest account-state record per account in the changelog."""
    own = settings.model_copy(update={"app_id": app_id})
    latest = asyncio.run(read_latest(own, changelog(own, ACCOUNT_TABLE), False))
    return sum(map(len, latest.values())) / max(1, len(latest))


class ProbeTimer:
    """Times probe events from production to their effect in Redis."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client, self.key = client, key
        self.sent: dict[int, float] = {}
        self.latencies_ms: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        done = 0
        while not self.stop.is_set():
            views = int(self.client.hget(self.key, "all.views") or 0)  # type: ignore[arg-type]
            now = time.time()
            for n in range(done + 1, views + 1):
                if n in self.sent:
                    self.latencies_ms.append((now - self.sent[n]) * 1000)
            done = max(done, views)
            time.sleep(0.002)


async def _append(producer: AIOKafkaProducer, batches: dict[tuple[str, int], Any],
                  tp: tuple[str, int], key: bytes | None, value: bytes | None) -> None:
    """Add a message to the round's batch for `tp`; a full one (max_batch_size, as after
    a stall) is sent first: `append` returns None rather than take more."""
    batch = batches.get(tp)
    if batch is None:
        batch = batches[tp] = producer.create_batch()
    if batch.append(key=key, value=value, timestamp=None) is None:
        batch.close()
        await producer.send_batch(batch, tp[0], partition=tp[1])
        batch = batches[tp] = producer.create_batch()
        batch.append(key=key, value=value, timestamp=None)


async def live_load(settings: Settings, topics: Topics, rate: float, seconds: float,
                    probe: ProbeTimer | None, accounts: int,
                    on_sent: Callable[[int], None] | None = None,
                    zipf: float | None = None) -> int:
    """Produce live events at `rate`/s for `seconds` through per-partition record batches,
    with one probe event every PROBE_EVERY_S (none without a `probe`); returns how many
    were sent. `on_sent(total)`, when given, is called after each round of batches;
    `zipf`: the simulator's Zipf popularity instead of its default."""
    sim = SimulatedPlatform(seed=7, accounts=accounts, start_ms=int(time.time() * 1000),
                            zipf=zipf)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks=1,
                                linger_ms=5, **kafka_client_options(settings))
    await producer.start()
    events = sim.events(int(rate * seconds) + 1, live=True)
    started = time.monotonic()
    sent = probes = 0
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(rate * elapsed) - sent
            batches: dict[tuple[str, int], Any] = {}
            # islice: a `break` inside `for message in events` would drop a message per
            # round, and the generator would run dry before `seconds` are up
            for message in islice(events, max(0, due)):
                key = message.key or b""
                tp = (topics.event(message.kind),  # type: ignore[arg-type]
                      partition_for(key.decode(), settings.partitions))
                await _append(producer, batches, tp, message.key, message.value)
                sent += 1
            if probe is not None and probes < elapsed / PROBE_EVERY_S:
                probes += 1
                value = orjson.dumps({"event_id": f"probe-{probes}", "account_id": PROBE,
                                      "ts": int(time.time() * 1000), "count": 1})
                tp = (topics.event("view"), partition_for(PROBE, settings.partitions))
                await _append(producer, batches, tp, PROBE.encode(), value)
                probe.sent[probes] = time.time()
            for (topic, partition), batch in batches.items():
                batch.close()
                await producer.send_batch(batch, topic, partition=partition)
            if on_sent is not None:
                on_sent(sent)
            await asyncio.sleep(0.005)
    finally:
        await producer.stop()
    return sent


def latency_run(settings: Settings, rate: float, seconds: float, accounts: int,
                name: str) -> dict[str, float]:
    """A fresh worker fed live at `rate`; the probe's production-to-Redis latencies."""
    app_id = f"{name}-live"
    os.environ["RANKFLOW_TOPIC_PREFIX"] = f"{app_id}."
    live = load_settings()
    topics = Topics(live.topic_prefix, app_id)
    env = {**fresh_env(live, app_id), "RANKFLOW_TOPIC_PREFIX": live.topic_prefix}
    client = redis_client(live, asyncio=False, decode_responses=True)
    log = HERE / f"{app_id}-worker.log"
    worker = WorkerProcess(env, log)
    try:
        # warm up: the worker has joined its group once a first event shows in Redis
        asyncio.run(produce(live.bootstrap_servers, topics, iter(
            SimulatedPlatform(seed=1, accounts=10, start_ms=int(time.time() * 1000))
            .events(10, live=True)), 10, progress=False,
            kafka_options=kafka_client_options(live)))
        deadline = time.monotonic() + 120
        while not client.hget(f"{app_id}:meta", "events"):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"the live worker did not start; see {log}")
            time.sleep(0.1)
        latency = timed_load(live, topics, client, f"{app_id}:", rate, seconds, accounts)
    finally:
        worker.stop()
        delete_keys(client, f"{app_id}:")
    log.unlink()
    return latency


def timed_load(settings: Settings, topics: Topics, client: redis.Redis, prefix: str,
               rate: float, seconds: float, accounts: int,
               zipf: float | None = None) -> dict[str, float]:
    """Live load at `rate` into a running deployment, its probe account (`PROBE`, which
    must have no views yet) timed from production to Redis; the latencies' summary."""
    probe = ProbeTimer(client, f"{prefix}acct:{PROBE}")
    probe.thread.start()
    try:
        sent = asyncio.run(live_load(settings, topics, rate, seconds, probe, accounts,
                                     zipf=zipf))
        time.sleep(3)
    finally:
        probe.stop.set()
        probe.thread.join()
    got = sorted(probe.latencies_ms)
    if not got:
        raise SystemExit("no probe event reached Redis")
    return {"rate": rate, "sent": sent, "achieved_eps": sent / seconds, "probes": len(got),
            "probes_sent": len(probe.sent),
            "p50_ms": statistics.median(got),
            "p99_ms": got[min(len(got) - 1, int(len(got) * 0.99))]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--naive-seconds", type=float, default=60.0)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--million", action="store_true",
                        help="add the million-account block (bench/million.py)")
    parser.add_argument("--million-only", action="store_true",
                        help="raw ceiling, one 1,000-account worker and the million block "
                             "only, merged into the existing --out")
    parser.add_argument("--million-accounts", type=int, default=1_000_000)
    parser.add_argument("--million-events", type=int, default=5_000_000)
    parser.add_argument("--million-latency-seconds", type=float, default=30.0)
    parser.add_argument("--million-sample", type=int, default=2_000,
                        help="accounts of the killed worker's partitions compared")
    parser.add_argument("--zipf", type=float, default=1.0, help="the million block's exponent")
    parser.add_argument("--dedup-ids", type=int, default=250_000,
                        help="bench/dedup_size.py's --ids")
    parser.add_argument("--dedup-window-ids", type=int, default=50_000,
                        help="bench/dedup_size.py's --window-ids")
    args = parser.parse_args()
    if args.million_only:
        return million_only(args)

    name = f"cmp{int(time.time())}"
    os.environ["RANKFLOW_TOPIC_PREFIX"] = f"{name}."
    settings = load_settings()
    topics = Topics(settings.topic_prefix, f"{name}-raw")
    asyncio.run(create_topics(settings.bootstrap_servers, topics, settings.partitions,
                              kafka_options=kafka_client_options(settings)))
    sim = SimulatedPlatform(seed=args.seed, accounts=args.accounts,
                            start_ms=int(time.time() * 1000) - 86_400_000,
                            step_ms=86_400_000 / args.events, bad_share=0.001,
                            duplicate_share=0.001)
    total = args.accounts + args.events
    print(f"preloading {args.events:,} events for {args.accounts:,} accounts ...")
    asyncio.run(produce(settings.bootstrap_servers, topics,
                        chain(sim.profiles(), sim.events(args.events)), total,
                        kafka_options=kafka_client_options(settings)))
    client = redis_client(settings, asyncio=False, decode_responses=True)
    results: dict[str, Any] = {"events": args.events, "accounts": args.accounts,
                               "seed": args.seed}
    steps = tqdm(total=4, desc="bench", unit="step")

    raw = asyncio.run(raw_ceiling(settings, topics, total))
    results["raw_eps"] = round(raw)
    steps.update()

    # `rf:meta` counts events and dead letters, not profiles
    naive = run_naive(fresh_env(settings, f"{name}-naive"), args.events, f"{name}-naive:",
                      client, args.naive_seconds)
    results["naive_eps"] = round(naive["eps"])
    results["naive"] = {k: round(v, 2) for k, v in naive.items()}
    steps.update()

    app_id = f"{name}-rankflow"
    run = run_worker(fresh_env(settings, app_id), args.events, f"{app_id}:", client)
    results["rankflow_eps"] = round(run["eps"])
    results["rankflow"] = {k: round(v, 2) for k, v in run.items()}
    results["rss_mb"] = round(run["rss_mb"], 1)
    results["state_bytes_per_account"] = round(state_bytes_per_account(settings, app_id))
    steps.update()

    latency = latency_run(settings, run["eps"] / 2, args.latency_seconds, args.accounts, name)
    results["latency_p50_ms"] = round(latency["p50_ms"], 1)
    results["latency_p99_ms"] = round(latency["p99_ms"], 1)
    results["latency"] = {k: round(v, 1) for k, v in latency.items()}
    steps.update()
    steps.close()

    results["ratios"] = {
        "rankflow_to_raw": round(run["eps"] / raw, 3),
        "rankflow_to_naive": round(run["eps"] / naive["eps"], 1),
    }
    dedup = measure_dedup(args.dedup_ids, args.dedup_window_ids)
    results["dedup_bytes_per_id"] = dedup["bytes_per_id"]
    results["dedup"] = dedup
    if args.million:
        from million import run_million  # million.py imports this module

        results["million"] = run_million(
            settings, name, args.million_accounts, args.million_events, args.zipf,
            args.million_latency_seconds, args.million_sample, run["eps"], raw)
    results["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"Python {platform.python_version()}")
    rows = [("raw ceiling (getmany + orjson)", f"{raw:,.0f} events/s"),
            (f"naive faust ({naive['events']:,.0f} events in {naive['seconds']:.0f} s)",
             f"{naive['eps']:,.0f} events/s"),
            ("rankflow, one worker, cold start", f"{run['eps']:,.0f} events/s"),
            ("rankflow / raw", f"{results['ratios']['rankflow_to_raw']:.2f}"),
            ("rankflow / naive", f"{results['ratios']['rankflow_to_naive']:.0f}x"),
            (f"latency at {latency['achieved_eps']:,.0f} events/s, p50 / p99",
             f"{latency['p50_ms']:.0f} / {latency['p99_ms']:.0f} ms"),
            ("peak RSS", f"{results['rss_mb']:.0f} MB"),
            ("state per account (changelog record)",
             f"{results['state_bytes_per_account']} B"),
            ("dedup, bytes per remembered id", f"{results['dedup_bytes_per_id']} B"),
            *million_rows(results.get("million"))]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    asyncio.run(delete_topics(settings, name))
    return 0


def million_rows(m: dict[str, Any] | None) -> list[tuple[str, str]]:
    if m is None:
        return []
    return [(f"million: {m['accounts']:,} accounts, {m['events']:,} events, cold start",
             f"{m['rankflow_eps']:,} events/s"),
            ("million: / 1,000 accounts, / raw",
             f"{m['ratio_to_1000_accounts']:.2f}, {m['ratio_to_raw']:.2f}"),
            (f"million: latency at {m['latency']['achieved_eps']:,.0f} events/s, p50 / p99",
             f"{m['latency_p50_ms']:.0f} / {m['latency_p99_ms']:.0f} ms"),
            ("million: worker peak RSS", f"{m['worker_rss_mb']:,.0f} MB"),
            ("million: worker memory per account", f"{m['state_bytes_per_account']} B"),
            ("million: recovery after a SIGKILL (two workers)",
             "not within the timeout" if m["recovery_s"] is None else f"{m['recovery_s']} s"),
            *((f"million target {k} {t['target']}", "met" if t["met"] else "MISSED")
              for k, t in m["targets"].items())]


def million_only(args: argparse.Namespace) -> int:
    """The raw ceiling and one worker on the usual replay, then the million block; merges
    `million` and the dedup figures into the existing results file."""
    name = f"cmp{int(time.time())}"
    os.environ["RANKFLOW_TOPIC_PREFIX"] = f"{name}."
    settings = load_settings()
    topics = Topics(settings.topic_prefix, f"{name}-raw")
    asyncio.run(create_topics(settings.bootstrap_servers, topics, settings.partitions,
                              kafka_options=kafka_client_options(settings)))
    sim = SimulatedPlatform(seed=args.seed, accounts=args.accounts,
                            start_ms=int(time.time() * 1000) - 86_400_000,
                            step_ms=86_400_000 / args.events, bad_share=0.001,
                            duplicate_share=0.001)
    print(f"preloading {args.events:,} events for {args.accounts:,} accounts ...")
    asyncio.run(produce(settings.bootstrap_servers, topics,
                        chain(sim.profiles(), sim.events(args.events)),
                        args.accounts + args.events,
                        kafka_options=kafka_client_options(settings)))
    client = redis_client(settings, asyncio=False, decode_responses=True)
    try:
        raw = asyncio.run(raw_ceiling(settings, topics, args.accounts + args.events))
        app_id = f"{name}-rankflow"
        run = run_worker(fresh_env(settings, app_id), args.events, f"{app_id}:", client)
        print(f"raw ceiling {raw:,.0f} events/s; rankflow, {args.accounts:,} accounts, "
              f"{run['eps']:,.0f} events/s")
        dedup = measure_dedup(args.dedup_ids, args.dedup_window_ids)
        from million import run_million  # million.py imports this module

        million = run_million(settings, name, args.million_accounts, args.million_events,
                              args.zipf, args.million_latency_seconds, args.million_sample,
                              run["eps"], raw)
    finally:
        asyncio.run(delete_topics(settings, name))
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["dedup_bytes_per_id"] = dedup["bytes_per_id"]
    results["dedup"] = dedup
    results["million"] = million
    results["million"]["base"] = {"events": args.events, "accounts": args.accounts,
                                  "seed": args.seed, "rankflow": {
                                      k: round(v, 2) for k, v in run.items()}}
    rows = million_rows(million)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
