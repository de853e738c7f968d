"""Soak test: one `rankflow worker` under a steady live load; its lag and RSS over time.

    .venv/bin/python bench/soak.py --rate 20000 --minutes 30
    .venv/bin/python bench/soak.py --rate 5000 --minutes 2 --plot /tmp/soak.png   # a quick look

Why: the replay and latency benchmarks run for seconds to minutes; a leak, a slowly
growing backlog or a worker that falls behind only after its state has grown shows over
a long run at a realistic rate. This is a command, not a test: it reports, it does not judge.

How: a fresh deployment (its own topic prefix, app id, Redis prefix), then one asyncio
producer sending live simulated events at `--rate` for `--minutes` (compare.live_load,
no probe), while a sampler thread records every 10 s: events produced and counted
(`{prefix}meta` `events` + `dlq`), lag (their difference, and the worker's own figure
from `{prefix}metrics:workers`), the worker's RSS (VmRSS) and CPU time. Then it lets the
worker catch up (60 s at most), stops it, deletes the deployment's Redis keys and topics,
prints a summary and writes the samples and summary as JSON and a two-panel PNG (lag and
RSS against minutes). Needs `rankflow dev up`; the plot needs matplotlib (the dev extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from compare import delete_topics, fresh_env, live_load
from replay import delete_keys
from tqdm import tqdm

from schemas.events import EVENT_KINDS
from streams.core.topics import Topics
from streams.dev.processes import WorkerProcess
from streams.dev.simulate import SimulatedPlatform, produce
from streams.ops.connections import kafka_client_options, redis_client
from streams.ops.settings import Settings, load_settings

HERE = Path(__file__).resolve().parent
SAMPLE_EVERY_S = 10.0
CATCH_UP_S = 60.0
#: RSS is compared between the first and the last this many minutes of the load
RSS_WINDOW_MIN = 5.0
WARM_UP_EVENTS = 10

log = logging.getLogger("soak")


class Sampler:
    """Samples the deployment every SAMPLE_EVERY_S from a thread, until `stop` is set."""

    def __init__(self, client: redis.Redis, prefix: str, worker: WorkerProcess,
                 base: int, bar: tqdm) -> None:
        self.client, self.prefix, self.worker, self.base, self.bar = \
            client, prefix, worker, base, bar
        self.worker_field = f"{socket.gethostname()}-{worker.pid}"
        self.produced = 0  # set by the producer's on_sent callback (one int: no lock needed)
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def counted(self) -> int:
        meta: dict[str, str] = self.client.hgetall(f"{self.prefix}meta")  # type: ignore[assignment]
        return int(meta.get("events", 0)) + int(meta.get("dlq", 0)) - self.base

    def worker_lag(self) -> int | None:
        raw: dict[str, str] = self.client.hgetall(  # type: ignore[assignment]
            f"{self.prefix}metrics:workers")
        if not raw:
            return None
        value = raw.get(self.worker_field)
        snapshots = [orjson.loads(value)] if value else [orjson.loads(v) for v in raw.values()]
        return max(int(s.get("lag", 0)) for s in snapshots)

    def sample(self, phase: str = "load") -> dict[str, Any]:
        produced = self.produced
        counted = self.counted()
        worker_lag = self.worker_lag()
        usage = self.worker.usage()
        sample = {"t_s": round(time.monotonic() - self.started, 2), "phase": phase,
                  "produced": produced, "counted": counted, "lag": produced - counted,
                  "worker_lag": worker_lag,
                  "rss_mb": round(usage.rss_mb, 1),
                  "worker_cpu_s": round(usage.cpu_seconds, 2),
                  "producer_cpu_s": round(time.process_time(), 2)}
        self.samples.append(sample)
        log.debug("sample %s", sample)
        return sample

    def _run(self) -> None:
        shown = 0.0
        n = 0
        while True:
            sample = self.sample()
            minutes = sample["t_s"] / 60
            self.bar.set_postfix(lag=f"{sample['lag']:,}", rss=f"{sample['rss_mb']:.0f}MB",
                                 refresh=False)
            self.bar.update(min(self.bar.total, minutes) - shown)
            shown = min(self.bar.total, minutes)
            n += 1
            # the last sample of the load is the main thread's, when the producer stops
            if n * SAMPLE_EVERY_S > self.bar.total * 60 - 1:
                return
            if self.stop.wait(max(0.0, self.started + n * SAMPLE_EVERY_S - time.monotonic())):
                return


def warm_up(settings: Settings, topics: Topics, accounts: int, client: redis.Redis,
            prefix: str, worker: subprocess.Popen[bytes], logfile: Path) -> int:
    """Profiles for every account and a few events; waits until the worker has applied
    them all (a million profiles take it minutes: a load started before would measure the
    warm-up). Returns the count the load starts from."""
    sim = SimulatedPlatform(seed=1, accounts=accounts, start_ms=int(time.time() * 1000))
    # just created: the broker answers "not leader" for a moment, and aiokafka retries
    quiet = logging.getLogger("aiokafka").level
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    asyncio.run(produce(settings.bootstrap_servers, topics, sim.profiles(), accounts,
                        progress=False, kafka_options=kafka_client_options(settings)))
    asyncio.run(produce(settings.bootstrap_servers, topics,
                        sim.events(WARM_UP_EVENTS, live=True), WARM_UP_EVENTS,
                        progress=False, kafka_options=kafka_client_options(settings)))
    logging.getLogger("aiokafka").setLevel(quiet)
    deadline = time.monotonic() + 120 + accounts / 2_000
    while True:
        meta: dict[str, str] = client.hgetall(f"{prefix}meta")  # type: ignore[assignment]
        counted = int(meta.get("events", 0)) + int(meta.get("dlq", 0))
        if counted >= WARM_UP_EVENTS and records_applied(client, prefix) >= \
                accounts + WARM_UP_EVENTS:
            return counted
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit(f"the worker did not start; see {logfile}")
        time.sleep(0.2)


def records_applied(client: redis.Redis, prefix: str) -> int:
    """Records (profiles, events, bad ones) the deployment's workers have applied, by
    their last metrics snapshots."""
    raw: dict[str, str] = client.hgetall(f"{prefix}metrics:workers")  # type: ignore[assignment]
    return sum(int(orjson.loads(v).get("records", 0)) for v in raw.values())


async def events_in_kafka(settings: Settings, topics: Topics) -> int:
    """Messages in the event topics (their end offsets): what the producer delivered."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                **kafka_client_options(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topics.event(kind), p) for kind in EVENT_KINDS
               for p in range(settings.partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def summarize(samples: list[dict[str, Any]], rate: float, minutes: float, sent: int,
              load_s: float, load_cpu: tuple[float, float], catch_up_s: float | None,
              peak_rss: float) -> dict[str, Any]:
    load = [s for s in samples if s["phase"] == "load"]
    end = load[-1]
    window_s = min(RSS_WINDOW_MIN, minutes / 2) * 60
    first = [s["rss_mb"] for s in load if s["t_s"] <= window_s]
    last = [s["rss_mb"] for s in load if s["t_s"] >= end["t_s"] - window_s]
    rss_first, rss_last = statistics.median(first), statistics.median(last)
    # a leak keeps the slope up once the dedup window (10 min by default) has filled
    half = [s for s in load if s["t_s"] >= end["t_s"] / 2]
    slope = None
    if len(half) > 1:
        slope = round(statistics.linear_regression([s["t_s"] / 60 for s in half],
                                                   [s["rss_mb"] for s in half]).slope, 2)
    worker_lags = [s["worker_lag"] for s in samples if s["worker_lag"] is not None]
    worker_cpu, producer_cpu = load_cpu
    achieved = sent / load_s
    return {
        "rate": rate, "minutes": minutes, "events_sent": sent,
        "achieved_eps": round(achieved),
        "max_lag": max(s["lag"] for s in samples),
        "lag_at_end": end["lag"],
        "max_worker_lag": max(worker_lags) if worker_lags else None,
        "worker_lag_at_end": end["worker_lag"],
        "catch_up_s": None if catch_up_s is None else round(catch_up_s, 1),
        "lag_after_catch_up": samples[-1]["lag"],
        "rss_window_minutes": window_s / 60,
        "rss_first_median_mb": round(rss_first, 1),
        "rss_last_median_mb": round(rss_last, 1),
        "rss_growth_mb": round(rss_last - rss_first, 1),
        "rss_peak_mb": round(peak_rss, 1),
        "rss_slope_second_half_mb_per_min": slope,
        # CPU seconds per wall second over the load: 1.0 is one core
        "worker_cpu_share": round(worker_cpu / load_s, 3),
        "producer_cpu_share": round(producer_cpu / load_s, 3),
        "producer_cpu_share_per_1000_eps": round(producer_cpu / load_s / achieved * 1000, 4),
    }


def plot(samples: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    minutes = [s["t_s"] / 60 for s in samples]
    fig, (lag_ax, rss_ax) = plt.subplots(2, 1, sharex=True, figsize=(7, 4.8), dpi=100)
    lag_ax.plot(minutes, [s["lag"] for s in samples], marker=".", label="produced − counted")
    worker = [(m, s["worker_lag"]) for m, s in zip(minutes, samples, strict=True)
              if s["worker_lag"] is not None]
    if worker:
        lag_ax.plot(*zip(*worker, strict=True), linestyle="--", marker=".",
                    label="worker's own figure")
    lag_ax.set_ylabel("lag (events)")
    lag_ax.set_ylim(bottom=0)
    lag_ax.legend(loc="best", fontsize="small")
    lag_ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    rss_ax.plot(minutes, [s["rss_mb"] for s in samples], marker=".", color="tab:green")
    rss_ax.set_ylabel("worker RSS (MB)")
    rss_ax.set_xlabel("minutes")
    load_end = max(m for m, s in zip(minutes, samples, strict=True) if s["phase"] == "load")
    for ax in (lag_ax, rss_ax):
        ax.grid(alpha=0.3)
        if load_end < minutes[-1]:
            ax.axvline(load_end, color="grey", linestyle=":", linewidth=1)
    fig.suptitle(f"rankflow soak: {summary['accounts']:,} accounts, {summary['rate']:,.0f} "
                 f"events/s for {summary['minutes']:g} min (achieved "
                 f"{summary['achieved_eps']:,}/s, one worker)", fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--zipf", type=float, default=None,
                        help="Zipf popularity of the live events (the million replay's is "
                             "1.0); default: the simulator's own mix")
    parser.add_argument("--out", type=Path, default=HERE / "results-soak.json")
    parser.add_argument("--plot", type=Path, default=HERE.parent / "docs" / "soak.png")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every sample")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)

    app_id = f"soak{int(time.time())}"
    os.environ["RANKFLOW_TOPIC_PREFIX"] = f"{app_id}."
    settings = load_settings()
    topics = Topics(settings.topic_prefix, app_id)
    prefix = f"{app_id}:"
    env = {**fresh_env(settings, app_id), "RANKFLOW_TOPIC_PREFIX": settings.topic_prefix}
    client = redis_client(settings, asyncio=False, decode_responses=True)
    logfile = HERE / f"{app_id}-worker.log"
    seconds = args.minutes * 60
    log.info("deployment %s: %d partitions, worker log %s", app_id, settings.partitions,
             logfile)
    worker = WorkerProcess(env, logfile)
    ok, catch_up_s = False, None
    try:
        base = warm_up(settings, topics, args.accounts, client, prefix, worker, logfile)
        log.info("worker up; producing %s events/s for %g min", f"{args.rate:,.0f}",
                 args.minutes)
        bar = tqdm(total=args.minutes, unit="min", desc="soak",
                   bar_format="{l_bar}{bar}| {n:.1f}/{total:g} min [{elapsed}{postfix}]")
        sampler = Sampler(client, prefix, worker, base, bar)

        def on_sent(total: int) -> None:
            sampler.produced = total

        cpu0 = (worker.usage().cpu_seconds, time.process_time())
        started = sampler.started = time.monotonic()
        sampler.thread.start()
        sent = asyncio.run(live_load(settings, topics, args.rate, seconds, None,
                                     args.accounts, on_sent, zipf=args.zipf))
        load_s = time.monotonic() - started
        load_cpu = (worker.usage().cpu_seconds - cpu0[0], time.process_time() - cpu0[1])
        sampler.produced = sent
        sampler.stop.set()
        sampler.thread.join()
        sampler.sample()
        bar.update(bar.total - bar.n)
        bar.close()
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited ({worker.returncode}); see {logfile}")

        log.info("producer stopped after %s events; waiting for the worker to catch up",
                 f"{sent:,}")
        stopped = time.monotonic()
        while time.monotonic() - stopped < CATCH_UP_S:
            if sampler.counted() >= sent:
                catch_up_s = time.monotonic() - stopped
                break
            time.sleep(0.2)
        if catch_up_s is None:
            log.warning("the worker did not catch up within %.0f s", CATCH_UP_S)
        sampler.sample("drain")
        in_kafka = asyncio.run(events_in_kafka(settings, topics)) - WARM_UP_EVENTS
        if in_kafka != sent:
            log.warning("%s events sent, %s in Kafka", f"{sent:,}", f"{in_kafka:,}")
        peak = worker.usage().peak_rss_mb
        ok = True
    finally:
        worker.stop()
        keys = delete_keys(client, prefix)
        names = asyncio.run(delete_topics(settings, app_id))
        log.info("deleted %d Redis keys and %d topics of %s", keys, len(names), app_id)
        if ok and catch_up_s is not None:
            logfile.unlink()
        else:
            log.warning("kept the worker log %s", logfile)

    summary = summarize(sampler.samples, args.rate, args.minutes, sent, load_s, load_cpu,
                        catch_up_s, peak)
    summary["events_in_kafka"] = in_kafka
    summary["accounts"] = args.accounts
    results = {"summary": summary, "samples": sampler.samples,
               "accounts": args.accounts, "zipf": args.zipf,
               "partitions": settings.partitions,
               "sample_every_s": SAMPLE_EVERY_S,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"Python {platform.python_version()}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    try:
        plot(sampler.samples, summary, args.plot)
    except ImportError:
        log.error("no plot: matplotlib is missing (.venv/bin/pip install -e '.[dev]')")

    s = summary
    rows = [("target / achieved rate", f"{s['rate']:,.0f} / {s['achieved_eps']:,} events/s"),
            ("duration", f"{s['minutes']:g} min, {s['events_sent']:,} events"),
            ("max lag (produced − counted)", f"{s['max_lag']:,} events"),
            ("lag at end of load (worker's own)",
             f"{s['lag_at_end']:,} ({s['worker_lag_at_end']}) events"),
            ("catch-up after the load",
             "not within 60 s" if s["catch_up_s"] is None else f"{s['catch_up_s']} s"),
            (f"RSS median, first / last {s['rss_window_minutes']:g} min",
             f"{s['rss_first_median_mb']:.0f} / {s['rss_last_median_mb']:.0f} MB "
             f"({s['rss_growth_mb']:+.1f} MB)"),
            ("RSS slope over the second half",
             f"{s['rss_slope_second_half_mb_per_min'] or 0:+.1f} MB/min"),
            ("peak RSS", f"{s['rss_peak_mb']:.0f} MB"),
            ("worker CPU (1.0 = one core)", f"{s['worker_cpu_share']:.2f}"),
            ("producer CPU (1.0 = one core)",
             f"{s['producer_cpu_share']:.2f} "
             f"({s['producer_cpu_share_per_1000_eps']:.3f} per 1000 events/s)")]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
