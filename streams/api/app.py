"""`rankflow api`: the read API of contract §5 (Read API) over Redis, and the live page.

Reads Redis only, so it scales apart from the workers. Every bad parameter gets a 4xx
with a JSON body (`{"error": ..., "detail": ...}`); Redis being away is a 503
(tests/integration/test_api.py::test_bad_parameters_get_a_4xx_json_error,
tests/integration/test_openapi.py::test_no_input_gets_a_server_error).
"""


import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any, cast

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.events import ID_PATTERN
from streams.api.feed import ChangeFeed
from streams.api.guard import ALLOWED, RequestGuard
from streams.api.lease import Lease
from streams.api.milestones import Milestones
from streams.api.models import (
    Account,
    AccountHistory,
    Around,
    Campaign,
    CampaignSeries,
    Error,
    Health,
    Leaderboard,
)
from streams.api.rank_samples import STEPS
from streams.api.reader import BoardReader
from streams.api.recorder import RankRecorder, now_ms
from streams.api.top_feed import TOP_MAX, TooManyBoards, TopFeeds
from streams.core.windows import Windows
from streams.ops.connections import redis_client
from streams.ops.settings import Settings
from streams.sink.keys import RedisKeys

log = logging.getLogger(__name__)
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error}, 404: {"model": Error}, 422: {"model": Error}, 503: {"model": Error}}
Identifier = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=64)]
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
_ID = ID_PATTERN.pattern.strip("^$")
BOARD_PATTERN = f"^(all|cat:{_ID}|campaign:{_ID})$"


#: a worker snapshot older than this is left out of /metrics (the worker is gone)
WORKER_STALE_S = 60


class WorkerCollector:
    """Renders the snapshots workers publish to Redis (streams/worker/metrics.py)."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, Any]] = []

    def collect(self) -> Iterator[Metric]:
        counters = {name: CounterMetricFamily(f"rankflow_worker_{name}", help_, labels=["worker"])
                    for name, help_ in (("batches", "record batches applied"),
                                        ("records", "records consumed"),
                                        ("events", "events counted"),
                                        ("dead_letters", "messages dead-lettered"),
                                        ("decayed", "accounts re-scored by decay"),
                                        ("dedup_window_cuts", "dedup windows cut short by "
                                         "RANKFLOW_DEDUP_MAX_IDS (episodes)"),
                                        ("dedup_ids_cut", "event ids forgotten before "
                                         "their dedup window ended"))}
        lag = GaugeMetricFamily("rankflow_worker_consumer_lag", "messages behind the end of "
                                "its partitions", labels=["worker"])
        latency = HistogramMetricFamily(
            "rankflow_worker_event_to_redis_seconds",
            "from an event's production to its effect in Redis (sampled)", labels=["worker"])
        for snap in self.snapshots:
            worker = [snap["worker"]]
            for name, family in counters.items():
                family.add_metric(worker, snap.get(name, 0))  # older workers lack some
            lag.add_metric(worker, snap["lag"])
            cumulative, buckets = 0, []
            for bound, count in zip([*snap["latency_buckets_ms"], None],
                                    snap["latency_counts"], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound is None else str(bound / 1000), cumulative))
            latency.add_metric(worker, buckets, sum_value=snap["latency_sum_ms"] / 1000)
        yield from counters.values()
        yield lag
        yield latency


class MilestoneCollector:
    """Renders how often each milestone rule fired, as counted in Redis (the same on every
    API process)."""

    def __init__(self) -> None:
        self.rules: list[str] = []
        self.fired: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("rankflow_api_milestones", "milestone crossings fired "
                                     "(alerts)", labels=["rule"])
        for rule in self.rules:
            family.add_metric([rule], self.fired.get(rule, 0))
        yield family


class ApiMetrics:
    """The API's own Prometheus metrics, plus the pipeline's figures read from Redis."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rankflow_api_requests", "API requests",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("rankflow_api_request_seconds", "API request latency",
                                 ["route"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1))
        self.events = Gauge("rankflow_events_counted", "events counted (rf:meta)",
                            registry=self.registry)
        self.dead = Gauge("rankflow_events_dead_lettered", "events dead-lettered (rf:meta)",
                          registry=self.registry)
        self.age = Gauge("rankflow_data_age_seconds", "seconds since a worker last wrote",
                         registry=self.registry)
        self.workers = WorkerCollector()
        self.registry.register(self.workers)
        self.milestones = MilestoneCollector()
        self.registry.register(self.milestones)


class RequestMetrics:
    """Counts and times requests per route (plain ASGI: no per-request task overhead)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def create_api(settings: Settings, client: aioredis.Redis | None = None) -> FastAPI:
    windows = Windows(settings.named_periods)
    keys = RedisKeys(settings.prefix)
    # A bounded pool that waits for a free connection rather than failing under load.
    client = client or redis_client(settings, blocking=True, decode_responses=True,
                                    max_connections=64, timeout=10)
    reader = BoardReader(client, keys, windows)
    # the recorder's ring writes touch many slots in one script: not on a cluster yet, nor
    # the milestones it fires (test_live.py::test_the_feed_on_the_redis_cluster)
    record_ranks = not settings.redis_cluster
    feed = ChangeFeed(client, keys.changes, keys.alerts if record_ranks else None)
    tops = TopFeeds(client, keys)
    feed.listeners.append(tops.notice)
    # the rank history is binary (streams/api/rank_samples.py): a client that keeps bytes
    raw = redis_client(settings, blocking=True, max_connections=16, timeout=10)
    ranks = RankRecorder(raw, keys, windows,
                         Lease(raw, keys.recorder_lease, settings.api_recorder_lease))
    rules = settings.milestone_rules
    if rules:
        ranks.listeners.append(Milestones(raw, keys, rules).check)
    metrics = ApiMetrics()
    metrics.milestones.rules = [rule.name for rule in rules]

    if not record_ranks:
        log.warning("rank history is not recorded on a Redis Cluster: "
                    "/api/accounts/{id}/history answers with no points")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        feed.start()
        if record_ranks:
            ranks.start()
        yield
        if record_ranks:
            await ranks.stop()
        await raw.aclose()
        await feed.stop()
        await tops.close()

    api = FastAPI(title="rankflow", version="1", lifespan=lifespan,
                  description="Live influence leaderboards of short-video accounts.")

    window_pattern = "^(" + "|".join(re.escape(w) for w in windows.ids) + ")$"
    Window = Annotated[str, Query(pattern=window_pattern, max_length=64,
                                  description="1h, 24h, 7d, 30d, all or a named period")]
    Board = Annotated[str, Query(pattern=BOARD_PATTERN, max_length=140,
                                 description="all, cat:{category} or campaign:{campaign}")]

    # Outermost first: metrics count every answer, CORS answers preflights (only when
    # origins are configured), the guard refuses writes and oversized requests.
    api.add_middleware(RequestGuard)
    if settings.cors_origins:
        api.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=list(ALLOWED), allow_headers=["Last-Event-ID"],
                           allow_credentials=False, max_age=600)
    api.add_middleware(RequestMetrics, metrics=metrics)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"where": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                  for e in exc.errors()]
        return JSONResponse({"error": "invalid parameters", "detail": detail},
                            status_code=422)

    @api.exception_handler(aioredis.RedisError)
    async def redis_away(request: Request, exc: aioredis.RedisError) -> JSONResponse:
        log.warning("redis error answering %s: %r", request.url.path, exc)
        return JSONResponse({"error": f"redis unavailable: {type(exc).__name__}"},
                            status_code=503)

    @api.get("/api/leaderboard", response_model=Leaderboard, responses=ERRORS)
    async def leaderboard(
        window: Window = "24h",
        board: Board = "all",
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Leaderboard:
        return await reader.leaderboard(window, board, offset,
                                        limit)

    @api.get("/api/leaderboard/around", response_model=Around, responses=ERRORS)
    async def around(
        account_id: Annotated[str, Query(pattern=ID_PATTERN.pattern, max_length=64)],
        window: Window = "24h",
        board: Board = "all",
        radius: Annotated[int, Query(ge=0, le=50)] = 5,
    ) -> Around:
        found = await reader.around(window, board, account_id,
                                    radius)
        if found is None:
            raise HTTPException(404, f"{account_id} is not on {board} in {window}")
        return found

    @api.get("/api/accounts/{account_id}", response_model=Account, responses=ERRORS)
    async def account(account_id: Identifier) -> Account:
        found = await reader.account(account_id)
        if found is None:
            raise HTTPException(404, f"no account {account_id}")
        return found

    @api.get("/api/campaigns/{campaign}", response_model=Campaign, responses=ERRORS)
    async def campaign(campaign: Identifier,
                       top: Annotated[int, Query(ge=1, le=100)] = 10) -> Campaign:
        found = await reader.campaign(campaign, top)
        if found is None:
            raise HTTPException(404, f"no campaign {campaign}")
        return found

    @api.get("/api/accounts/{account_id}/history", response_model=AccountHistory,
             responses=ERRORS)
    async def account_history(
        account_id: Identifier, window: Window = "24h", board: Board = "all",
        step: Annotated[str, Query(pattern="^(10s|10m)$", description=(
            "10s: a sample every 10 seconds over the last 24 hours; 10m: every 10 "
            "minutes over the last 30 days"))] = "10s",
    ) -> AccountHistory:
        """The account's index and rank on a board over time, at each tick it stood in
        the board's top 100 (recorded in Redis: every API process answers the same)."""
        if not await client.exists(keys.account(account_id)):
            raise HTTPException(404, f"no account {account_id}")
        ring = cast(bytes | None, await raw.get(keys.rank_history(step, window, board,
                                                                   account_id)))
        found = STEPS[step].points(ring or b"", now_ms())
        return AccountHistory(account_id=account_id, window=window, board=board, step=step,
                              points=[list(p) for p in found])

    @api.get("/api/campaigns/{campaign}/series", response_model=CampaignSeries,
             responses=ERRORS)
    async def campaign_series(
            campaign: Identifier,
            step: Annotated[str, Query(pattern="^(1m|1h)$", description=(
                "1m: per minute over the last 24 hours; 1h: per hour over 30 days"))] = "1m",
    ) -> CampaignSeries:
        """A campaign's views, likes, uploads and distinct accounts per bucket, in event
        time, as the workers wrote them (the same from every API process)."""
        if not await client.exists(keys.campaign(campaign)):
            raise HTTPException(404, f"no campaign {campaign}")
        return await reader.series(campaign, step)

    @api.get("/api/boards", responses=ERRORS)
    async def boards() -> dict[str, list[str]]:
        """The windows, and the boards that exist now (for pickers)."""
        categories: list[str] = sorted(await client.smembers(keys.categories))  # type: ignore[arg-type]
        campaigns: list[str] = sorted(await client.smembers(keys.campaigns))  # type: ignore[arg-type]
        return {"windows": list(windows.ids),
                "boards": ["all", *(f"cat:{c}" for c in categories),
                           *(f"campaign:{c}" for c in campaigns)]}

    @api.get("/api/stream", responses=ERRORS, response_class=StreamingResponse)
    async def stream(
        window: Annotated[str | None, Query(pattern=window_pattern, max_length=64)] = None,
        board: Annotated[str | None, Query(pattern=BOARD_PATTERN, max_length=140)] = None,
        top: Annotated[int | None, Query(
            ge=1, le=TOP_MAX, description="follow this board's top N: a snapshot, then "
            "its changes (window defaults to 24h, board to all)")] = None,
        last_event_id: Annotated[str | None, Header(max_length=40)] = None,
    ) -> StreamingResponse:
        """Server-sent events. Without `top`: `change` (boards that changed), `reset`
        (refetch), `alert` (a milestone crossed, RANKFLOW_MILESTONES; no id). With `top`:
        `snapshot` (the top N), then `change` (`entries` that entered or moved, accounts
        that `left`); `reset` before a new snapshot."""
        if last_event_id is not None and not STREAM_ID.fullmatch(last_event_id):
            raise HTTPException(400, "Last-Event-ID must be an event id such as 1700000-0")
        if top is None:
            events = feed.events(window, board, last_event_id)
        else:
            try:
                tracker = await tops.open(window or "24h", board or "all", top)
            except TooManyBoards as exc:
                raise HTTPException(503, str(exc)) from exc
            events = tracker.events(last_event_id)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    @api.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> Response:
        try:
            await client.ping()
            meta = await client.hgetall(keys.meta)
        except aioredis.RedisError:
            return JSONResponse(Health(status="redis unavailable", redis=False).model_dump(),
                                status_code=503)
        updated = int(meta["updated_at"]) if meta.get("updated_at") else None
        age = None if updated is None else max(0.0, time.time() - updated / 1000)
        return JSONResponse(Health(status="ok", redis=True,
                                   events=int(meta.get("events", 0)), updated_at=updated,
                                   data_age_seconds=age).model_dump())

    @api.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        meta = await client.hgetall(keys.meta)
        metrics.events.set(int(meta.get("events", 0)))
        metrics.dead.set(int(meta.get("dlq", 0)))
        if meta.get("updated_at"):
            metrics.age.set(max(0.0, time.time() - int(meta["updated_at"]) / 1000))
        snapshots = [orjson.loads(s) for s in (await client.hgetall(keys.worker_metrics)).values()]
        metrics.workers.snapshots = [s for s in snapshots
                                     if time.time() - s["at"] / 1000 < WORKER_STALE_S]
        if metrics.milestones.rules:
            fired = cast(dict[str, str], await client.hgetall(keys.milestones_fired))
            metrics.milestones.fired = {rule: int(n) for rule, n in fired.items()}
        return PlainTextResponse(generate_latest(metrics.registry).decode(),
                                 media_type="text/plain; version=0.0.4")

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(files("streams.api").joinpath("page.html").read_text("utf-8"))

    return api
