"""Redis-loss benchmark: how long until the layout of N accounts is back after Redis
lost its data, (1) by the running worker itself and (2) by `rankflow rebuild`.

    .venv/bin/python bench/redis_loss.py --accounts 100000 --events 300000

Why: Redis is a cache of the workers' state (the changelogs are the truth). A worker
notices a lost Redis through its generation marker (checked every second) and rewrites
every account it owns; `rankflow rebuild` does the same on demand from the changelogs.
This measures both at a realistic account count.

How: a fresh deployment (own topic prefix, app id and Redis prefix) is preloaded with
the simulated profiles of every account and `--events` events, and one worker is run
until `{prefix}meta` counts them all and the number of `{prefix}acct:*` hashes stops
growing. Then

* loss 1, worker running: every key of the prefix is deleted (the generation marker
  last, so the worker cannot start rewriting before the loss is complete), and the wall
  time from then until `{prefix}meta` and the count of `{prefix}acct:*` hashes are back
  is taken (detection, up to 1 s, included), next to what the worker logs
  ("Redis rewritten from state: N accounts in X s");
* loss 2, on demand: the worker is stopped, the keys deleted again, and
  `python -m streams.ops.cli rebuild --quiet` is timed (wall, process start included).

After each, the layout is checked: meta counters, account hashes, the same board keys
as before, and `lb:all:all` (which does not decay) identical. Prints a table, writes
bench/results-redis-loss.json, then deletes the deployment's Redis keys and topics.
Needs `rankflow dev up`. Redis is shared (db 0): only the prefix's keys are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import redis
from compare import delete_topics, fresh_env
from replay import delete_keys

from streams.core.topics import Topics
from streams.dev.processes import WorkerProcess
from streams.dev.simulate import Message, SimulatedPlatform, produce
from streams.ops.connections import kafka_client_options, redis_client
from streams.ops.settings import load_settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REWRITTEN = re.compile(r"Redis rewritten from state: (\d+) accounts in ([\d.]+)s")
LOST = "Redis has lost its data"
REBUILT = re.compile(r"rebuilt (\d+) accounts over (\d+) partitions .* in ([\d.]+)s")
#: keys that are not part of the layout proper (or that `rebuild` does not write)
VOLATILE = ("changes", "metrics:workers", "generation")


class Failed(SystemExit):
    """The benchmark could not finish; the worker log is kept."""


def counting(messages: Iterator[Message], seen: set[bytes]) -> Iterator[Message]:
    """Pass messages through, noting the keys (account ids) of the events."""
    for message in messages:
        if message.kind != "accounts" and message.key:
            seen.add(message.key)
        yield message


def meta(client: redis.Redis, prefix: str) -> tuple[int, int]:
    values: dict[str, str] = client.hgetall(f"{prefix}meta")  # type: ignore[assignment]
    return int(values.get("events", 0)), int(values.get("dlq", 0))


def count_accounts(client: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in client.scan_iter(f"{prefix}acct:*", count=10_000))


def layout(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """What is compared before and after a loss: layout keys, counters, the all board."""
    keys = {k for k in client.scan_iter(f"{prefix}*", count=10_000)
            if k.removeprefix(prefix) not in VOLATILE}
    board = f"{prefix}lb:all:all"
    return {"keys": keys,
            "accounts": sum(1 for k in keys if k.startswith(f"{prefix}acct:")),
            "meta": meta(client, prefix),
            "all_board": dict(client.zrange(board, 0, -1, withscores=True)),  # type: ignore[arg-type]
            "boards": {k: client.zcard(k) for k in keys if k.startswith(f"{prefix}lb:")}}


def compare_layout(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    # rolling boards may differ by then (accounts leave a 1h campaign board as time passes)
    boards_off = sorted(k for k, n in before["boards"].items() if after["boards"].get(k) != n)
    check = {"meta_equal": before["meta"] == after["meta"],
             "accounts": after["accounts"],
             "accounts_equal": before["accounts"] == after["accounts"],
             "missing_keys": len(before["keys"] - after["keys"]),
             "extra_keys": len(after["keys"] - before["keys"]),
             "boards_with_other_size": boards_off,  # names
             "all_board_identical": before["all_board"] == after["all_board"]}
    check["complete"] = (check["meta_equal"] and check["accounts_equal"]
                         and not check["missing_keys"] and check["all_board_identical"])
    return check


def wait_loaded(client: redis.Redis, prefix: str, expected: int,
                worker: subprocess.Popen[bytes], timeout: float) -> tuple[float, int]:
    """Until meta counts `expected` messages and the account hashes stop growing;
    returns the seconds it took and the account count."""
    started = time.monotonic()
    deadline = started + timeout
    while sum(meta(client, prefix)) < expected:
        if worker.poll() is not None:
            raise Failed(f"the worker exited ({worker.returncode})")
        if time.monotonic() > deadline:
            raise Failed(f"the worker counted {sum(meta(client, prefix)):,} of "
                         f"{expected:,} messages in {timeout:.0f} s")
        time.sleep(0.5)
    counts = [count_accounts(client, prefix)]
    while len(counts) < 3 or len(set(counts[-3:])) > 1:
        if time.monotonic() > deadline:
            raise Failed("the account hashes kept changing")
        time.sleep(1.0)
        counts.append(count_accounts(client, prefix))
    return time.monotonic() - started, counts[-1]


def wait_restored(client: redis.Redis, prefix: str, before: dict[str, Any],
                  since: float, timeout: float) -> float | None:
    """Seconds from `since` until meta and the account count are back (a full SCAN
    ends each check, so the figure is an upper bound by one scan); None on timeout."""
    while time.monotonic() - since < timeout:
        if meta(client, prefix) == before["meta"] and \
                count_accounts(client, prefix) >= before["accounts"]:
            return time.monotonic() - since
        time.sleep(0.05)
    return None


def log_lines(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds allowed for each wait")
    parser.add_argument("--out", type=Path, default=HERE / "results-redis-loss.json")
    args = parser.parse_args()

    name = f"rloss{int(time.time())}"
    os.environ["RANKFLOW_TOPIC_PREFIX"] = f"{name}."
    settings = load_settings()
    prefix = f"{name}:"
    env = {**fresh_env(settings, name), "RANKFLOW_TOPIC_PREFIX": settings.topic_prefix}
    own = settings.model_copy(update={"app_id": name, "prefix": prefix})
    client = redis_client(settings, asyncio=False, decode_responses=True)
    logfile = HERE / f"{name}-worker.log"
    results: dict[str, Any] = {"accounts_simulated": args.accounts, "events": args.events,
                               "seed": args.seed, "partitions": settings.partitions}
    worker: WorkerProcess | None = None
    ok = False
    try:
        sim = SimulatedPlatform(seed=args.seed, accounts=args.accounts,
                                start_ms=int(time.time() * 1000) - 86_400_000,
                                step_ms=86_400_000 / args.events, bad_share=0.001,
                                duplicate_share=0.001)
        with_events: set[bytes] = set()
        # just created: the broker answers "not leader" for a moment, and aiokafka retries
        logging.getLogger("aiokafka").setLevel(logging.ERROR)
        print(f"deployment {name}: preloading {args.accounts:,} profiles and "
              f"{args.events:,} events ...")
        asyncio.run(produce(own.bootstrap_servers, Topics(own.topic_prefix, own.app_id), counting(
            chain(sim.profiles(), sim.events(args.events)), with_events),
            args.accounts + args.events, kafka_options=kafka_client_options(own)))
        results["accounts_with_events"] = len(with_events)
        print(f"{len(with_events):,} of {args.accounts:,} accounts have events "
              f"(the others stand on the boards by their profile)")

        worker = WorkerProcess(env, logfile, cwd=ROOT)
        load_s, accounts = wait_loaded(client, prefix, args.events, worker, args.timeout)
        results["accounts"] = accounts
        results["seconds_to_load"] = round(load_s, 1)
        before = layout(client, prefix)
        print(f"worker loaded in {load_s:.0f} s: {accounts:,} account hashes, "
              f"meta events/dlq {before['meta']}, {len(before['keys']):,} layout keys")

        # loss 1: the running worker notices and rewrites
        offset = logfile.stat().st_size
        started = time.monotonic()
        deleted = delete_keys(client, prefix, last=f"{prefix}generation")
        lost = time.monotonic()
        results["keys_deleted"] = deleted
        results["seconds_deleting_keys"] = round(lost - started, 2)
        seconds = wait_restored(client, prefix, before, lost, args.timeout)
        if seconds is None:
            raise Failed("the worker did not restore the layout")
        results["seconds_worker_rewrite"] = round(seconds, 2)
        found = None
        deadline = time.monotonic() + 60
        while found is None and time.monotonic() < deadline:
            text = log_lines(logfile, offset)
            found = REWRITTEN.search(text) if LOST in text else None
            time.sleep(0.2)
        if found is None:
            raise Failed("the worker logged no rewrite")
        results["worker_logged_rewrite_accounts"] = int(found.group(1))
        results["worker_logged_rewrite_seconds"] = float(found.group(2))
        time.sleep(2)  # let any decay tick land, so the check sees a settled layout
        results["after_worker_rewrite"] = compare_layout(before, layout(client, prefix))

        # loss 2: worker stopped, `rankflow rebuild` from the changelogs
        worker.stop()
        delete_keys(client, prefix)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "streams.ops.cli", "rebuild", "--quiet"],
                              env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        results["seconds_rebuild_command"] = round(time.monotonic() - started, 2)
        if done.returncode:
            raise Failed(f"rebuild failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        reported = REBUILT.search(done.stdout)
        if reported:
            results["rebuild_reported_accounts"] = int(reported.group(1))
            results["rebuild_reported_seconds"] = float(reported.group(3))
        results["after_rebuild"] = compare_layout(before, layout(client, prefix))
        results["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, "
                              f"Python {platform.python_version()}")
        ok = True
    finally:
        if worker is not None:
            worker.stop()
        keys = delete_keys(client, prefix)
        names = asyncio.run(delete_topics(settings, name))
        print(f"cleaned up: {keys:,} Redis keys, {len(names)} topics of {name}")
        if ok:
            logfile.unlink(missing_ok=True)
        else:
            print(f"kept the worker log {logfile}")

    first, second = results["after_worker_rewrite"], results["after_rebuild"]
    rows = [("accounts (acct:* hashes)", f"{results['accounts']:,}"),
            ("  of which with events", f"{results['accounts_with_events']:,}"),
            ("events", f"{args.events:,}"),
            ("worker rewrite, from the loss (wall)",
             f"{results['seconds_worker_rewrite']:.1f} s"),
            ("  as logged by the worker",
             f"{results['worker_logged_rewrite_seconds']:.1f} s "
             f"({results['worker_logged_rewrite_accounts']:,} accounts)"),
            ("  layout complete", str(first["complete"])),
            ("rankflow rebuild --quiet (wall)", f"{results['seconds_rebuild_command']:.1f} s"),
            ("  layout complete", str(second["complete"]))]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if first["complete"] and second["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
