"""The `rankflow` command line: contract §6 (Operation)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from streams.core.topics import Topics
from streams.ops.connections import kafka_client_options, redis_client
from streams.ops.settings import Settings, load_settings, redact, redacted_url

if TYPE_CHECKING:
    from streams.kafka.admin import EnsuredTopics

log = logging.getLogger("rankflow")


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_logs(settings.secrets)


def redact_logs(secrets: tuple[str, ...]) -> None:
    """Mask the secrets in every log record, whatever handler writes it (faust installs
    its own): aiokafka's debug log, for one, shows SASL authentication bytes."""
    if not secrets:
        return
    make_record = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def redacting_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: show its parts, still masked
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message, secrets), ()
        if record.exc_info:
            record.exc_text = redact(formatter.formatException(record.exc_info), secrets)
        return record

    logging.setLogRecordFactory(redacting_record)


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from streams.dev.devstack import DevStack

    stack = DevStack(settings, brokers=args.brokers, sentinel=args.sentinel,
                     redis_cluster=args.redis_cluster)
    if args.action == "status" and args.json:
        print(json.dumps({"processes": stack.processes()}))
        return 0
    action = {"up": stack.up, "down": stack.down, "status": stack.status,
              "reset": stack.reset}[args.action]
    for line in action():
        print(line)
    if args.action == "up" and args.brokers > 1:
        print(f"bootstrap servers: RANKFLOW_KAFKA={stack.bootstrap}")
    if args.action == "up" and args.sentinel:
        print("sentinels: RANKFLOW_REDIS_SENTINELS=" + ",".join(
            f"{e.host}:{e.port}" for e in stack.sentinels)
              + " RANKFLOW_REDIS_SENTINEL_MASTER=rankflow")
    if args.action == "up" and args.redis_cluster:
        print(f"redis cluster: RANKFLOW_REDIS_CLUSTER=true RANKFLOW_REDIS={stack.cluster_url}")
    return 0


def ensured_topics(settings: Settings) -> EnsuredTopics:
    """Every topic, created with the cluster's replication and checked (admin.py)."""
    from streams.kafka.admin import ensure_topics

    return asyncio.run(ensure_topics(
        settings.bootstrap_servers, Topics(settings.topic_prefix, settings.app_id),
        settings.partitions, replication_factor=settings.replication_factor,
        min_insync_replicas=settings.min_insync_replicas,
        kafka_options=kafka_client_options(settings)))


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    ensured = ensured_topics(settings)
    created = ensured.created
    replication = ensured.replication
    print(f"created {len(created)} topic(s) with replication factor {replication.factor}, "
          f"min.insync.replicas {replication.min_insync}: {', '.join(created)}" if created
          else "all topics exist")
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:

    from streams.kafka.app import create_app
    from streams.ops.readiness import wait_until_ready
    from streams.ops.stop_deadline import DeadlinedWorker
    from streams.worker.compose import compose_worker, install

    # Kafka or Redis down at start-up: wait for them (logging why), do not crash.
    asyncio.run(wait_until_ready(settings))
    # Make sure every topic exists, co-partitioned: a broker that auto-creates topics
    # would otherwise give a missing one a single partition.
    ensured = ensured_topics(settings)
    wiring = create_app(settings, ensured.replication)
    composed = compose_worker(wiring, settings, redis_client(settings))
    install(composed, wiring.app)
    # the health endpoint starts before the app (it answers while the tables are read)
    beside = [composed.health_server] if composed.health_server is not None else []
    # "info", never "warn": faust maps unknown levels so that root logs at DEBUG.
    worker = DeadlinedWorker(wiring.app, *beside, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
    return 0


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from streams.api.app import create_api

    log.info("read API on http://%s:%d/", settings.api_host, settings.api_port)
    # live-feed clients never end their streams: without a bound, SIGTERM waits for them
    uvicorn.run(create_api(settings), host=settings.api_host, port=settings.api_port,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    return 0


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from streams.ops.rebuild import rebuild

    report = asyncio.run(rebuild(settings, clear=args.clear, progress=not args.quiet))
    print(f"rebuilt {report.accounts} accounts over {report.partitions} partitions "
          f"({report.events} events counted) in {report.seconds:.1f}s")
    return 0


def _start_ms(text: str | None) -> int:
    if text is None:
        return int(time.time() * 1000) - 2 * 86_400_000
    if text.isdigit():
        return int(text)
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from itertools import chain

    from streams.dev.simulate import SimulatedPlatform, produce

    platform = SimulatedPlatform(
        seed=args.seed, accounts=args.accounts, start_ms=_start_ms(args.start),
        step_ms=args.step_ms, bad_share=args.bad, duplicate_share=args.duplicates,
        unkeyed_share=args.unkeyed)
    live = args.rate is not None
    n = args.events if args.events is not None else int((args.rate or 0) * args.duration)
    messages = platform.events(n, live=live)
    total = n
    if not args.no_profiles:
        messages = chain(platform.profiles(), messages)
        total += args.accounts
    topics = Topics(settings.topic_prefix, settings.app_id)
    sent = asyncio.run(produce(settings.bootstrap_servers, topics, messages, total,
                               rate=args.rate, progress=not args.quiet,
                               kafka_options=kafka_client_options(settings)))
    print(f"sent {sent} messages")
    return 0


def cmd_schemas(settings: Settings, args: argparse.Namespace) -> int:
    from schemas.jsonschema import write_schemas

    for path in write_schemas():
        print(path)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Local stack, topics, a worker, the API and live traffic; prints where to look."""
    from streams.dev.devstack import DevStack
    from streams.sink.keys import RedisKeys

    for line in DevStack(settings, redis_cluster=settings.redis_cluster).up():
        print(line)
    cmd_topics(settings, args)
    # the services' own logs (faust's included) go to files: the terminal shows the demo
    logs = Path(settings.cache_dir) / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    commands = {"worker": ["worker"], "api": ["api"],
                "simulate": ["simulate", "--rate", str(args.rate), "--duration",
                             str(args.duration), "--quiet"]}
    children = []
    for name, command in commands.items():
        with (logs / f"{name}.log").open("ab") as log:
            children.append(subprocess.Popen([sys.executable, "-m", "streams.ops.cli", *command],
                                             stdout=log, stderr=subprocess.STDOUT))
    keys = RedisKeys(settings.prefix)
    client = redis_client(settings, asyncio=False, decode_responses=True)
    print(f"\nThe live page: http://{settings.api_host}:{settings.api_port}/")
    print(f"Logs of the worker, the API and the traffic: {logs}/{{worker,api,simulate}}.log")
    url = redacted_url(settings.redis)
    print(f"Live boards are Redis sorted sets: redis-cli -u {url} "
          f"ZREVRANGE {keys.board('24h', 'all')} 0 9 WITHSCORES")
    if url != settings.redis or settings.redis_password is not None:
        print("(the password is not shown: put it in place of *** or in REDISCLI_AUTH)")
    print("Ctrl-C stops the demo (the stack keeps running: `rankflow dev down`).\n")
    try:
        while all(c.poll() is None for c in children[:1]):
            time.sleep(3)
            top: list[tuple[str, float]] = client.zrevrange(  # type: ignore[assignment]
                keys.board("24h", "all"), 0, 9, withscores=True)
            meta: dict[str, str] = client.hgetall(keys.meta)  # type: ignore[assignment]
            print(f"--- events counted {meta.get('events', 0)}, "
                  f"dead-lettered {meta.get('dlq', 0)}")
            for rank, (account_id, score) in enumerate(top, 1):
                name = str(client.hget(keys.account(account_id), "name") or "")
                print(f"{rank:>3}. {score:8.2f}  {account_id:<24} {name}")
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rankflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="local Kafka (KRaft) + Redis on loopback")
    dev.add_argument("action", choices=("up", "down", "status", "reset"),
                     help="reset: stop all and delete every Kafka topic (the jars stay)")
    dev.add_argument("--brokers", type=int, default=1,
                     help="up: KRaft brokers, on RANKFLOW_KAFKA's port and every 100th after "
                          "it (default 1)")
    dev.add_argument("--sentinel", action="store_true",
                     help="up: also a Redis replica (port + 1) and three sentinels (port + "
                          "20000...; master name rankflow, quorum 2)")
    dev.add_argument("--redis-cluster", action="store_true",
                     help="up: a Redis Cluster in place of the one Redis: three primaries "
                          "and three replicas on ports 7000-7005")
    dev.add_argument("--json", action="store_true",
                     help="status: the processes as JSON (role, id, port, pid)")
    dev.set_defaults(func=cmd_dev)
    sub.add_parser("topics", help="create the topics (idempotent)").set_defaults(func=cmd_topics)
    sub.add_parser("worker", help="run one stream worker").set_defaults(func=cmd_worker)
    sub.add_parser("api", help="run the read API and the live page").set_defaults(func=cmd_api)
    rebuild = sub.add_parser("rebuild", help="rewrite the Redis layout from the state")
    rebuild.add_argument("--clear", action="store_true",
                         help="delete every key under RANKFLOW_PREFIX first")
    rebuild.add_argument("--quiet", action="store_true", help="no progress bars")
    rebuild.set_defaults(func=cmd_rebuild)
    sim = sub.add_parser("simulate", help="produce realistic events")
    sim.add_argument("--accounts", type=int, default=1000)
    sim.add_argument("--events", type=int, help="a fixed replay of N events")
    sim.add_argument("--rate", type=float, help="live events per second (ts = now)")
    sim.add_argument("--duration", type=float, default=60.0, help="seconds, with --rate")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--start", help="replay start time: ISO date or epoch ms")
    sim.add_argument("--step-ms", type=float, default=100.0, help="replay ms between events")
    sim.add_argument("--bad", type=float, default=0.0, help="share of bad messages")
    sim.add_argument("--duplicates", type=float, default=0.0, help="share of duplicates")
    sim.add_argument("--unkeyed", type=float, default=0.0, help="share without a key")
    sim.add_argument("--no-profiles", action="store_true", help="skip the profiles")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=cmd_simulate)
    sub.add_parser("schemas", help="write the JSON Schemas to schemas/json/").set_defaults(
        func=cmd_schemas)
    demo = sub.add_parser("demo", help="stack + worker + live events, printing the top 10")
    demo.add_argument("--rate", type=float, default=2000.0)
    demo.add_argument("--duration", type=float, default=3600.0)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    _setup_logging(settings)
    if args.command == "simulate" and (args.events is None) == (args.rate is None):
        print("simulate: give exactly one of --events N or --rate R", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return int(args.func(settings, args) or 0)
    except KeyboardInterrupt:  # Ctrl-C is how a user stops `simulate` or `demo`
        return 130


if __name__ == "__main__":
    sys.exit(main())
