"""The real local stack (rankflow dev up), and a worker run as its own process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiokafka.errors import KafkaError

from streams.core.topics import Topics
from streams.dev.devstack import DevStack
from streams.dev.processes import WorkerProcess
from streams.kafka.admin import create_topics, delete_topics
from streams.ops.connections import kafka_client_options, redis_client
from streams.ops.settings import Settings, load_settings

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="session")
def stack() -> Settings:
    settings = load_settings()
    DevStack(settings).up()
    return settings


@pytest.fixture(scope="session")
def redis_cluster(stack: Settings) -> Settings:
    """The dev stack's Redis Cluster (dev up --redis-cluster: ports 7000-7005, beside the
    single Redis), and settings that use it."""
    dev = DevStack(stack, redis_cluster=True)
    dev.up()
    return stack.model_copy(update={"redis": dev.cluster_url, "redis_cluster": True})


class Deployment:
    """One isolated rankflow deployment: own topics, consumer group and Redis prefix."""

    def __init__(self, settings: Settings, name: str, extra_env: dict[str, str]) -> None:
        self.name = name
        self.env = {
            **os.environ,
            "RANKFLOW_TOPIC_PREFIX": f"{name}.",
            "RANKFLOW_APP_ID": name,
            "RANKFLOW_PREFIX": f"{name}:",
            "RANKFLOW_SESSION_TIMEOUT": "6",
            "RANKFLOW_REBALANCE_TIMEOUT": "6",
            **extra_env,
        }
        self.settings = Settings(**{k[9:].lower(): v for k, v in self.env.items()
                                    if k.startswith("RANKFLOW_")})
        self.topics = Topics(self.settings.topic_prefix, self.settings.app_id)
        self.prefix = self.settings.prefix
        self.redis: Any = (
            redis_client(self.settings, asyncio=False, decode_responses=True)
            if self.settings.redis_cluster
            else redis.Redis.from_url(self.settings.redis, decode_responses=True))
        self.workers: list[WorkerProcess] = []
        ARTIFACTS.mkdir(exist_ok=True)
        asyncio.run(create_topics(self.settings.bootstrap_servers, self.topics,
                                  self.settings.partitions))

    def start_worker(self) -> WorkerProcess:
        proc = WorkerProcess(self.env, ARTIFACTS / f"{self.name}-worker{len(self.workers)}.log")
        self.workers.append(proc)
        return proc

    def stop(self, proc: WorkerProcess, sig: int = signal.SIGTERM) -> None:
        proc.stop(timeout=30, sig=sig)

    def produce(self, messages: Iterable, rate: float | None = None) -> int:
        from streams.dev.simulate import produce

        listed = list(messages)
        return asyncio.run(produce(self.settings.bootstrap_servers, self.topics, iter(listed),
                                   len(listed), rate=rate, progress=False))

    def meta(self) -> dict[str, str]:
        return self.redis.hgetall(f"{self.prefix}meta")  # type: ignore[return-value]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            for proc in self.workers:
                if proc.poll() not in (None, 0, -signal.SIGKILL, -signal.SIGTERM):
                    raise AssertionError(f"a worker exited with {proc.returncode}: see "
                                         f"{ARTIFACTS}")
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; meta={self.meta()}")

    def wait_counted(self, events: int, dead: int, timeout: float = 120) -> None:
        def done() -> bool:
            meta = self.meta()
            return int(meta.get("events", -1)) == events and int(meta.get("dlq", -1)) == dead
        self.wait_for(done, timeout, f"{events} events and {dead} dead letters counted")

    def close(self) -> None:
        """Stop the workers, then delete the deployment's Redis keys and Kafka topics."""
        for proc in self.workers:
            self.stop(proc)
        try:
            asyncio.run(asyncio.wait_for(delete_topics(
                self.settings.bootstrap_servers, self.name,
                kafka_options=kafka_client_options(self.settings)), 30))
        except (KafkaError, OSError, TimeoutError) as exc:  # a test may leave the broker down
            warnings.warn(f"{self.name}: topics not deleted: {exc!r}", stacklevel=1)
        keys = list(self.redis.scan_iter(f"{self.prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            self.redis.delete(*keys[start:start + 1000])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(d: Deployment, log: Any, **extra_env: str) -> tuple[subprocess.Popen, str]:
    """`rankflow api` of a deployment, as its own process, once it answers: it and its URL."""
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "streams.ops.cli", "api"],
                           env={**d.env, "RANKFLOW_API_PORT": str(port), **extra_env},
                           stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return api, url
        except httpx.TransportError:
            if time.monotonic() > deadline:
                api.kill()
                raise AssertionError("rankflow api did not start") from None
            time.sleep(0.2)


@contextmanager
def api_process(d: Deployment, **extra_env: str) -> Iterator[str]:
    """`rankflow api` of a deployment until the block ends: its URL."""
    with (ARTIFACTS / f"{d.name}-api.log").open("wb") as log:
        api, url = start_api(d, log, **extra_env)
        try:
            yield url
        finally:
            api.terminate()
            api.wait(timeout=10)


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str | None, str | None, Any]]:
    """The (event, id, data) of each server-sent event in a stream's lines."""
    kind = event_id = None
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            yield kind, event_id, json.loads(line[6:])
            kind = event_id = None


@pytest.fixture
def deploy(stack: Settings):
    made: list[Deployment] = []

    def make(**extra_env: str) -> Deployment:
        deployment = Deployment(stack, f"t{uuid.uuid4().hex[:10]}", extra_env)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()


@pytest.fixture
def cluster_deploy(redis_cluster: Settings):
    """`deploy` on the dev stack's Redis Cluster (RANKFLOW_REDIS_CLUSTER=true)."""
    made: list[Deployment] = []

    def make(**extra_env: str) -> Deployment:
        env = {"RANKFLOW_REDIS": redis_cluster.redis, "RANKFLOW_REDIS_CLUSTER": "true",
               **extra_env}
        deployment = Deployment(redis_cluster, f"t{uuid.uuid4().hex[:10]}", env)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()


@pytest.fixture
def spare_redis(tmp_path: Path):
    """(port, process): a redis-server of the test's own on a spare port, to stall, stop
    (SIGSTOP) or put to sleep (DEBUG SLEEP) without disturbing other tests."""
    from tests.integration.test_outages import free_ports
    from tests.integration.test_redis_loss import start_redis

    (port,) = free_ports(1, 26700)
    proc = start_redis(tmp_path, port)
    yield port, proc
    proc.send_signal(signal.SIGCONT)
    proc.kill()
    proc.wait()


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
