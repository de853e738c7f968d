"""The textbook per-event faust implementation of rankflow's job: a benchmark baseline.

It exists so that bench/ can compare rankflow's batch pipeline (streams/) with what a
faust user writes first for the same job: stock `kafka://` transport, one agent per
input topic, `async for` over ONE event at a time, pydantic validation per message,
dead letters, dedup through a Table of seen event ids, a changelog-backed Table per
account (a plain dict of minute/hour/day buckets), the same index, and a Redis round
trip per event (a ZADD per board, HINCRBY meta). It is a baseline only: nothing in
streams/ imports it, and it skips what a first version would skip (decay without new
events, campaigns, account hashes, re-keying of misplaced messages).

    .venv/bin/python bench/naive.py worker            # one worker, RANKFLOW_* settings
    .venv/bin/python bench/naive.py bench --events 20000 --timeout 120

Its consumer group and changelogs are named `{RANKFLOW_APP_ID}-naive...`, so it never
collides with a rankflow worker; it reads the same topics and writes the same boards
(`{RANKFLOW_PREFIX}lb:{window}:all`, `...:cat:{category}`) and `{prefix}meta`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import faust
import redis
import redis.asyncio as aioredis
from pydantic import ValidationError
from replay import delete_keys

from schemas.events import EVENT_KINDS, EVENT_MODELS, ID_PATTERN, EventBase, EventKind, Profile
from streams.core.ingest import dead_letter
from streams.core.scoring import influence_index, scoring_config
from streams.core.topics import Topics
from streams.dev.processes import WorkerProcess
from streams.kafka.admin import create_topics, delete_topics
from streams.ops.settings import Settings, load_settings

HERE = Path(__file__).resolve().parent
FUTURE_TOLERANCE_MS = 5 * 60_000
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
#: rolling windows: (bucket key in the table value, bucket size, buckets in the window)
ROLLING = {"1h": ("m", MINUTE_MS, 60), "24h": ("h", HOUR_MS, 24),
           "7d": ("d", DAY_MS, 7), "30d": ("d", DAY_MS, 30)}
#: bucket granularities kept, and how many buckets each keeps
KEEP = (("m", MINUTE_MS, 60), ("h", HOUR_MS, 24), ("d", DAY_MS, 30))
#: position of each windowed kind in a [views, likes, uploads] triple; follows -> fans
SLOT = {"view": 0, "like": 1, "upload": 2}

log = logging.getLogger("rankflow.naive")


def _reason(what: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(map(str, err["loc"]))
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return f"invalid {what}: " + "; ".join(parts)


def validate_event(kind: EventKind, key: bytes | None, value: bytes | None,
                   produced_ms: int | None) -> EventBase | str:
    """The event, or why it is dead-lettered: the pydantic model, then the key and time
    rules (contract §1). `produced_ms` (the record time) enables the 5-minute rule."""
    if value is None:
        return "value is null: an event topic takes event JSON"
    try:
        event = EVENT_MODELS[kind].model_validate_json(value)
    except ValidationError as exc:
        return _reason(f"{kind} event", exc)
    if key is not None and key != event.account_id.encode():
        return f"key {key[:80]!r} does not match account_id {event.account_id!r}"
    if produced_ms is not None and event.ts > produced_ms + FUTURE_TOLERANCE_MS:
        return f"ts {event.ts} is more than 5 minutes after the time it was produced"
    return event


def validate_profile(key: bytes | None, value: bytes | None) -> Profile | str | None:
    """The profile, None for a tombstone, or why it is dead-lettered."""
    if value is None:
        if key is None or not ID_PATTERN.fullmatch(key.decode(errors="replace")):
            return "tombstone without a valid account_id key"
        return None
    try:
        profile = Profile.model_validate_json(value)
    except ValidationError as exc:
        return _reason("profile", exc)
    if key is not None and key != profile.account_id.encode():
        return f"key {key[:80]!r} does not match account_id {profile.account_id!r}"
    return profile


def new_state() -> dict[str, Any]:
    """An account's table value: JSON-friendly (bucket keys are strings)."""
    return {"m": {}, "h": {}, "d": {}, "all": [0, 0, 0], "p": {}, "follows": 0,
            "profile": None, "tombstoned": False, "board_category": None}


def add_event(state: dict[str, Any], kind: EventKind, count: int, ts: int, clock: int,
              periods: dict[str, tuple[int, int]]) -> None:
    """Add one event to the account's buckets and drop the buckets out of every window."""
    if kind == "follow":
        state["follows"] += count
        return
    slot = SLOT[kind]
    for key, size, keep in KEEP:
        floor = clock // size - keep
        buckets = state[key]
        if ts // size > floor:
            buckets.setdefault(str(ts // size), [0, 0, 0])[slot] += count
        for old in [b for b in buckets if int(b) <= floor]:
            del buckets[old]
    state["all"][slot] += count
    for name, (start, end) in periods.items():
        if start <= ts < end:
            state["p"].setdefault(name, [0, 0, 0])[slot] += count


def window_sums(state: dict[str, Any], clock: int,
                periods: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    """[views, likes, uploads] of every window at this clock."""
    sums: dict[str, list[int]] = {}
    for window, (key, size, length) in ROLLING.items():
        floor = clock // size - length
        total = [0, 0, 0]
        for bucket, values in state[key].items():
            if int(bucket) > floor:
                total = [a + b for a, b in zip(total, values, strict=True)]
        sums[window] = total
    sums["all"] = state["all"]
    for name in periods:
        sums[name] = state["p"].get(name, [0, 0, 0])
    return sums


def create_app(settings: Settings) -> faust.App:
    """The faust app: five agents, two tables, a Redis client. Nothing connects yet."""
    app_id = f"{settings.app_id}-naive"
    app = faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_rebalance_timeout=6.0,
        broker_heartbeat_interval=2.0,
        logging_config=None,
    )
    topics = Topics(settings.topic_prefix, settings.app_id)
    accounts = app.Table("accounts", default=None, partitions=settings.partitions)
    seen = app.Table("seen", default=None, partitions=settings.partitions)
    dlq = app.topic(topics.dlq, key_serializer="raw", value_serializer="raw")
    db = aioredis.from_url(settings.redis)
    config = scoring_config(settings)
    periods = {p.name: (p.start_ms, p.end_ms) for p in settings.named_periods}
    days = {"1h": 1 / 24, "24h": 1.0, "7d": 7.0, "30d": 30.0, "all": 365.0,
            **{p.name: p.days for p in settings.named_periods}}
    windows = list(days)
    meta = f"{settings.prefix}meta"
    event_clock = settings.clock == "event"
    progress = {"events": 0, "dlq": 0, "clock": 0}

    def now_ms() -> int:
        return int(time.time() * 1000)

    async def reject(message: Any, reason: str) -> None:
        envelope = dead_letter(reason, message.topic, message.partition, message.offset,
                               message.value)
        await dlq.send(key=message.key, value=envelope)
        await db.hincrby(meta, "dlq", 1)
        progress["dlq"] += 1

    def board_writes(account_id: str, state: dict[str, Any], clock: int,
                     counted: bool) -> Any:
        """A pipeline: ZADD the account on every board it stands on (moving it between
        category boards), the meta counters. Queued without an await, so the caller can
        store the state back before another agent runs."""
        pipe = db.pipeline(transaction=False)
        profile = state["profile"]
        category = profile["category"] if profile else "unknown"
        old = state["board_category"]
        if state["tombstoned"]:
            category = None
        if old is not None and old != category:
            for window in windows:
                pipe.zrem(f"{settings.prefix}lb:{window}:cat:{old}", account_id)
        if category is None:
            for window in windows:
                pipe.zrem(f"{settings.prefix}lb:{window}:all", account_id)
        else:
            fans = (profile["fans"] if profile else 0) + state["follows"]
            for window, (views, likes, uploads) in window_sums(state, clock, periods).items():
                index = influence_index(views, likes, uploads, fans, days[window], config)
                pipe.zadd(f"{settings.prefix}lb:{window}:all", {account_id: index})
                pipe.zadd(f"{settings.prefix}lb:{window}:cat:{category}", {account_id: index})
        state["board_category"] = category
        if counted:
            pipe.hincrby(meta, "events", 1)
        pipe.hset(meta, mapping={"clock": clock, "updated_at": now_ms()})
        return pipe

    def event_agent(kind: EventKind) -> None:
        topic = app.topic(topics.event(kind), key_serializer="raw", value_serializer="raw")

        async def process(stream: faust.StreamT) -> None:
            async for event in stream.events():
                message = event.message
                produced = None if event_clock else round(message.timestamp * 1000)
                parsed = validate_event(kind, message.key, message.value, produced)
                if isinstance(parsed, str):
                    await reject(message, parsed)
                    continue
                first = seen.get(parsed.event_id)
                if first is not None:
                    await reject(message, f"duplicate event_id {parsed.event_id!r}: first "
                                          f"counted from {first}")
                    continue
                seen[parsed.event_id] = f"{message.topic}:{message.partition}:{message.offset}"
                clock = max(progress["clock"], parsed.ts) if event_clock else now_ms()
                progress["clock"] = clock
                state = accounts.get(parsed.account_id) or new_state()
                count: int = parsed.count  # type: ignore[attr-defined]
                add_event(state, kind, count, parsed.ts, clock, periods)
                pipe = board_writes(parsed.account_id, state, clock, counted=True)
                accounts[parsed.account_id] = state  # before any await: agents share it
                await pipe.execute()
                progress["events"] += 1

        app.agent(topic, name=f"naive-{kind}")(process)

    for kind in EVENT_KINDS:
        event_agent(kind)

    accounts_topic = app.topic(topics.accounts, key_serializer="raw", value_serializer="raw")

    @app.agent(accounts_topic, name="naive-accounts")
    async def profiles(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            parsed = validate_profile(message.key, message.value)
            if isinstance(parsed, str):
                await reject(message, parsed)
                continue
            account_id = parsed.account_id if parsed else message.key.decode()
            state = accounts.get(account_id) or new_state()
            if parsed is None:
                state["profile"], state["tombstoned"] = None, True
            else:
                state["profile"] = {"name": parsed.name, "category": parsed.category,
                                    "fans": parsed.fans}
                state["tombstoned"] = False
            clock = progress["clock"] if event_clock else now_ms()
            pipe = board_writes(account_id, state, clock, counted=False)
            accounts[account_id] = state
            await pipe.execute()

    @app.timer(10.0)
    async def report() -> None:
        log.info("naive worker: %d events counted, %d dead-lettered",
                 progress["events"], progress["dlq"])

    logging.getLogger("faust").setLevel(logging.WARNING if settings.log_level == "info"
                                        else settings.log_level.upper())
    return app


def worker() -> int:
    """`python bench/naive.py worker`: one worker on the RANKFLOW_* settings."""
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(create_topics(settings.bootstrap_servers,
                              Topics(settings.topic_prefix, settings.app_id), settings.partitions))
    app = create_app(settings)
    # "info", never "warn": faust maps unknown levels so that root logs at DEBUG.
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
    return 0


def run_naive(env: dict[str, str], expected: int, prefix: str, client: redis.Redis,
              timeout: float, *, keep_keys: bool = False) -> dict[str, float]:
    """Cold-start a naive worker until `{prefix}meta` counts `expected` messages or
    `timeout` seconds pass; its rate over what it counted (`complete` 0 on timeout).

    `env` is the worker's environment (RANKFLOW_APP_ID, RANKFLOW_PREFIX = `prefix`, ...).
    The `{prefix}*` keys are deleted afterwards unless `keep_keys`.
    """
    log_path = HERE / f"{env.get('RANKFLOW_APP_ID', 'rankflow')}-naive-worker.log"
    env = {"PYTHONPATH": str(HERE.parent), **env}
    started = time.monotonic()
    proc = WorkerProcess(env, log_path,
                         argv=[sys.executable, str(Path(__file__).resolve()), "worker"])
    done, first_seen = 0, None
    try:
        while done < expected and time.monotonic() - started < timeout:
            time.sleep(0.05)
            if proc.poll() is not None:
                raise SystemExit(f"the naive worker exited ({proc.returncode}); "
                                 f"see {log_path}")
            meta: dict[str, str] = client.hgetall(f"{prefix}meta")  # type: ignore[assignment]
            done = int(meta.get("events", 0)) + int(meta.get("dlq", 0))
            if done and first_seen is None:
                first_seen = time.monotonic()
        elapsed = time.monotonic() - started
        usage = proc.usage()
        rss, cpu = usage.peak_rss_mb, usage.cpu_seconds
    finally:
        proc.stop()
    log_path.unlink()
    startup = (first_seen or started) - started
    if not keep_keys:
        delete_keys(client, prefix)
    return {"eps": done / elapsed, "steady_eps": done / max(elapsed - startup, 1e-9),
            "seconds": elapsed, "startup_seconds": startup, "rss_mb": rss,
            "cpu_seconds": cpu, "events": done, "complete": float(done >= expected)}


def bench(argv: list[str]) -> int:
    """Preload a simulated replay and time one naive cold start on it (a manual check)."""
    from itertools import chain

    from streams.dev.simulate import SimulatedPlatform, produce

    parser = argparse.ArgumentParser(prog="bench/naive.py bench")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep-keys", action="store_true", help="leave the boards in Redis")
    args = parser.parse_args(argv)
    name = f"naive{int(time.time())}"
    os.environ["RANKFLOW_TOPIC_PREFIX"] = f"{name}."
    settings = load_settings()
    topics = Topics(settings.topic_prefix, name)
    asyncio.run(create_topics(settings.bootstrap_servers, topics, settings.partitions))
    sim = SimulatedPlatform(seed=args.seed, accounts=args.accounts,
                            start_ms=int(time.time() * 1000) - DAY_MS,
                            step_ms=DAY_MS / args.events, bad_share=0.001,
                            duplicate_share=0.001)
    print(f"preloading {args.events:,} events for {args.accounts:,} accounts ...")
    asyncio.run(produce(settings.bootstrap_servers, topics,
                        chain(sim.profiles(), sim.events(args.events)),
                        args.accounts + args.events))
    client = redis.Redis.from_url(settings.redis, decode_responses=True)
    env = {**os.environ, "RANKFLOW_APP_ID": name, "RANKFLOW_PREFIX": f"{name}:"}
    result = run_naive(env, args.events, f"{name}:", client, args.timeout,
                       keep_keys=args.keep_keys)
    print({k: round(v, 2) for k, v in result.items()})
    if args.keep_keys:
        print(f"boards kept under {name}:lb:*")
    asyncio.run(delete_topics(settings.bootstrap_servers, name))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(worker())
    if sys.argv[1:2] == ["bench"]:
        sys.exit(bench(sys.argv[2:]))
    sys.exit(__doc__)
