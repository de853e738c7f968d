"""Security on the real stack: a password-protected (and a TLS) Redis, a SASL/PLAIN Kafka
broker, and the read API's guard (read-only, small requests, no CORS by default).

The secured servers are started here, on other loopback ports, and stopped at the end:
a redis-server with `requirepass`, one with TLS only, and a second single-node Kafka
(the dev stack's jars) whose only client listener is SASL_PLAINTEXT.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from streams.api.app import create_api
from streams.api.guard import MAX_BODY_BYTES, MAX_TARGET_BYTES
from streams.core.topics import Topics
from streams.dev.devstack import LOG4J1_PROPERTIES, LOG4J2_PROPERTIES, DevStack
from streams.dev.processes import WorkerProcess, stop_process
from streams.dev.simulate import Message, produce
from streams.kafka.admin import create_topics
from streams.ops.connections import kafka_client_options, redis_client
from streams.ops.settings import Settings
from tests.integration.conftest import ARTIFACTS

REDIS_PW = f"redis-pw-{uuid.uuid4().hex[:12]}"
KAFKA_PW = f"kafka-pw-{uuid.uuid4().hex[:12]}"


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise AssertionError("no free port")


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:
            if time.monotonic() > deadline:
                raise
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    stop_process(proc, timeout=20)


def start_redis(directory: Path, config: str) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    (directory / "redis.conf").write_text(
        f'bind 127.0.0.1\nsave ""\nappendonly no\ndir {directory}\n{config}')
    return subprocess.Popen([binary, str(directory / "redis.conf")],
                            stdout=(directory / "redis.log").open("wb"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def events(n: int) -> list[Message]:
    now = int(time.time() * 1000)
    profile = {"account_id": "gov.sec", "name": "secured", "category": "police", "fans": 10}
    return [Message("accounts", b"gov.sec", orjson.dumps(profile)),
            *(Message("view", b"gov.sec", orjson.dumps(
                {"event_id": f"e{i}", "account_id": "gov.sec", "ts": now - 1000, "count": 5}))
              for i in range(n))]


# --- the read API's guard -----------------------------------------------------------

@pytest.fixture
def api_of(stack):
    made: list[TestClient] = []

    def make(**settings: str) -> TestClient:
        client = TestClient(create_api(Settings(prefix=f"sec{uuid.uuid4().hex[:8]}:",
                                                redis=stack.redis, **settings)))
        made.append(client.__enter__())
        return client

    yield make
    for client in made:
        client.__exit__(None, None, None)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("path", ["/", "/api/leaderboard", "/api/accounts/a", "/metrics",
                                  "/no/such/path"])
def test_the_api_is_read_only(api_of, method, path):
    response = api_of().request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json() == {"error": "method not allowed",
                               "detail": "the API is read-only: GET and HEAD only"}


def test_head_answers_like_get_without_a_body(api_of):
    api = api_of()
    for path in ("/", "/healthz", "/api/boards", "/api/leaderboard", "/api/stream"):
        get = api.get(path) if path != "/api/stream" else None
        head = api.head(path)
        assert head.status_code == 200 and head.content == b"", path
        if get is not None:
            assert head.headers["content-length"] == get.headers["content-length"], path
    assert api.head("/api/leaderboard", params={"window": "nope"}).status_code == 422


def test_oversized_requests_are_refused(api_of):
    api = api_of()
    assert api.request("GET", "/api/boards", content=b"x" * MAX_BODY_BYTES).status_code == 200
    too_big = api.request("GET", "/api/boards", content=b"x" * (MAX_BODY_BYTES + 1))
    assert too_big.status_code == 413 and too_big.json()["error"] == "request body too large"
    chunked = api.request("GET", "/api/boards", content=iter([b"x" * 10_000, b"y" * 10_000]))
    assert chunked.status_code == 413
    assert api.request("GET", "/api/boards", content=iter([b"x" * 100])).status_code == 200
    long = api.get("/api/leaderboard", params={"board": "cat:" + "x" * MAX_TARGET_BYTES})
    assert long.status_code == 414 and long.json()["error"] == "request target too long"


def test_no_cors_unless_origins_are_configured(api_of):
    plain = api_of()
    preflight = {"Origin": "https://board.example", "Access-Control-Request-Method": "GET"}
    response = plain.get("/api/boards", headers={"Origin": "https://board.example"})
    assert response.status_code == 200
    assert not any(h.startswith("access-control-") for h in response.headers)
    assert plain.options("/api/boards", headers=preflight).status_code == 405

    api = api_of(api_cors_origins="https://board.example")
    allowed = api.options("/api/boards", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://board.example"
    assert allowed.headers["access-control-allow-methods"] == "GET, HEAD"
    response = api.get("/api/boards", headers={"Origin": "https://board.example"})
    assert response.headers["access-control-allow-origin"] == "https://board.example"
    other = api.get("/api/boards", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    assert api.options("/api/boards", headers={**preflight, "Origin": "https://evil.example"}
                       ).status_code == 400
    assert api.delete("/api/boards", headers={"Origin": "https://board.example"}
                      ).status_code == 405


# --- Redis with a password ----------------------------------------------------------

@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory) -> Iterator[int]:
    port = free_port(16390)
    proc = start_redis(tmp_path_factory.mktemp("redis-auth"),
                       f"port {port}\nrequirepass {REDIS_PW}\n")
    client = redis.Redis(port=port, password=REDIS_PW)
    wait_until(client.ping, 10, "the password-protected redis", proc)
    yield port
    stop(proc)


def test_worker_writes_to_a_password_protected_redis_and_logs_no_password(deploy,
                                                                           secured_redis):
    with pytest.raises(redis.AuthenticationError):  # it does want the password
        redis.Redis(port=secured_redis).ping()
    d = deploy(RANKFLOW_REDIS=f"redis://:{REDIS_PW}@127.0.0.1:{secured_redis}/0",
               RANKFLOW_LOG_LEVEL="debug")
    d.produce(events(3))
    d.start_worker()
    d.wait_counted(events=3, dead=0, timeout=90)
    assert d.redis.zscore(f"{d.prefix}lb:24h:all", "gov.sec") is not None
    assert d.redis.hget(f"{d.prefix}acct:gov.sec", "24h.views") == "15"
    d.stop(d.workers[0])
    log = (ARTIFACTS / f"{d.name}-worker0.log").read_text(errors="replace")
    assert "DEBUG" in log  # it logged, at debug level
    assert REDIS_PW not in log


def test_api_reads_a_password_protected_redis_through_the_password_setting(secured_redis):
    """`rankflow api` on uvicorn: RANKFLOW_REDIS_PASSWORD, and the guard on a real server."""
    port = free_port(18480)
    prefix = f"sec{uuid.uuid4().hex[:8]}:"
    seeded = redis.Redis(port=secured_redis, password=REDIS_PW)
    seeded.zadd(f"{prefix}lb:24h:all", {"a": 2.0})
    log_path = ARTIFACTS / f"{prefix[:-1]}-api.log"
    env = {**os.environ, "RANKFLOW_API_PORT": str(port), "RANKFLOW_PREFIX": prefix,
           "RANKFLOW_REDIS": f"redis://127.0.0.1:{secured_redis}/0",
           "RANKFLOW_REDIS_PASSWORD": REDIS_PW, "RANKFLOW_LOG_LEVEL": "debug"}
    ARTIFACTS.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "streams.ops.cli", "api"], env=env,
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        health = wait_until(lambda: httpx.get(f"{base}/healthz", timeout=1), 20, "the API",
                            proc)
        assert health.status_code == 200 and health.json()["redis"] is True
        board = httpx.get(f"{base}/api/leaderboard", params={"window": "24h"})
        assert [e["account_id"] for e in board.json()["entries"]] == ["a"]
        # read-only, headers-only HEAD (the event stream too), size limits, no CORS
        head = httpx.head(f"{base}/api/stream", timeout=5)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"].startswith("text/event-stream")
        assert httpx.head(f"{base}/api/leaderboard").headers["content-length"] == \
            board.headers["content-length"]
        post = httpx.post(f"{base}/api/leaderboard", json={"window": "24h"})
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        assert post.json()["error"] == "method not allowed"
        big = httpx.request("GET", f"{base}/api/boards", content=b"x" * (MAX_BODY_BYTES + 1))
        assert big.status_code == 413 and "error" in big.json()
        chunked = httpx.request("GET", f"{base}/api/boards",
                                content=iter([b"x" * MAX_BODY_BYTES, b"y"]))
        assert chunked.status_code == 413
        long = httpx.get(f"{base}/api/boards", params={"q": "x" * MAX_TARGET_BYTES})
        assert long.status_code == 414 and "error" in long.json()
        cors = httpx.get(f"{base}/api/boards", headers={"Origin": "https://evil.example"})
        assert cors.status_code == 200 and "access-control-allow-origin" not in cors.headers
    finally:
        stop(proc)
        seeded.delete(f"{prefix}lb:24h:all")
    assert REDIS_PW not in log_path.read_text(errors="replace")


# --- Redis over TLS -----------------------------------------------------------------

def make_certificates(directory: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=rankflow test CA", "-keyout", "ca.key", "-out", "ca.pem")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem")


def test_redis_over_tls_with_client_certificates_and_a_password(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    make_certificates(tmp_path)
    port = free_port(16391)
    proc = start_redis(tmp_path, (
        f"port 0\ntls-port {port}\ntls-cert-file {tmp_path}/server.pem\n"
        f"tls-key-file {tmp_path}/server.key\ntls-ca-cert-file {tmp_path}/ca.pem\n"
        f"tls-auth-clients yes\nrequirepass {REDIS_PW}\n"))
    try:
        time.sleep(0.3)
        if proc.poll() is not None:
            pytest.skip("this redis-server has no TLS support: "
                        + (tmp_path / "redis.log").read_text()[-300:])
        settings = Settings(redis=f"rediss://127.0.0.1:{port}/0", redis_password=REDIS_PW,
                            redis_tls_ca_file=tmp_path / "ca.pem",
                            redis_tls_cert_file=tmp_path / "client.pem",
                            redis_tls_key_file=tmp_path / "client.key")
        client = redis_client(settings, asyncio=False, decode_responses=True)
        wait_until(client.ping, 10, "redis over TLS", proc)
        client.set("rf-tls-check", "ok")
        assert client.get("rf-tls-check") == "ok"

        async def async_round_trip() -> str | None:
            aclient = redis_client(settings)
            try:
                return await aclient.get("rf-tls-check")
            finally:
                await aclient.aclose()

        assert asyncio.run(async_round_trip()) == b"ok"
        without_cert = Settings(redis=f"rediss://127.0.0.1:{port}/0", redis_password=REDIS_PW,
                                redis_tls_ca_file=tmp_path / "ca.pem")
        with pytest.raises(redis.ConnectionError):  # the server wants a client certificate
            redis_client(without_cert, asyncio=False, socket_timeout=3).ping()
    finally:
        stop(proc)


# --- Kafka with SASL/PLAIN ----------------------------------------------------------

SASL_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=\
org.apache.kafka.common.security.plain.PlainLoginModule required \
username="admin" password="admin-{admin}" user_admin="admin-{admin}" user_rankflow="{password}";
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=2
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
"""


def sasl_settings(port: int, name: str, password: str = KAFKA_PW) -> dict[str, str]:
    return {"RANKFLOW_KAFKA": f"127.0.0.1:{port}", "RANKFLOW_KAFKA_SECURITY_PROTOCOL":
            "SASL_PLAINTEXT", "RANKFLOW_KAFKA_SASL_USERNAME": "rankflow",
            "RANKFLOW_KAFKA_SASL_PASSWORD": password, "RANKFLOW_TOPIC_PREFIX": f"{name}.",
            "RANKFLOW_APP_ID": name, "RANKFLOW_PREFIX": f"{name}:", "RANKFLOW_PARTITIONS": "2",
            "RANKFLOW_SESSION_TIMEOUT": "6", "RANKFLOW_REBALANCE_TIMEOUT": "6"}


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{k[9:].lower(): v for k, v in env.items() if k.startswith("RANKFLOW_")})


async def _topics_of(settings: Settings) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                request_timeout_ms=5000, **kafka_client_options(settings))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def sasl_kafka(stack, tmp_path_factory) -> Iterator[int]:
    """A second single-node Kafka (KRaft) whose client listener is SASL_PLAINTEXT only."""
    dev = DevStack(stack)
    classpath = dev._classpath()  # the dev stack's jars, resolved already by `stack`
    root = tmp_path_factory.mktemp("kafka-sasl")
    port = free_port(19492)
    controller = free_port(19493)
    config = root / "server.properties"
    config.write_text(SASL_PROPERTIES.format(port=port, controller=controller, data=root / "data",
                                             admin=uuid.uuid4().hex[:8], password=KAFKA_PW))
    if dev._log4j2:
        (root / "log4j2.properties").write_text(LOG4J2_PROPERTIES.format(log=root / "server.log"))
        logging_opt = f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}"
    else:
        (root / "log4j.properties").write_text(LOG4J1_PROPERTIES.format(log=root / "server.log"))
        logging_opt = f"-Dlog4j.configuration=file:{root / 'log4j.properties'}"
    java = ["java", "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true", f"-Dkafka.logs.dir={root}", logging_opt,
            "-cp", classpath]
    cluster_id = "-"
    while cluster_id.startswith("-"):  # as Kafka's own random ids: "-…" reads as an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    subprocess.run([*java, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                    "-c", str(config)], check=True, capture_output=True)
    proc = subprocess.Popen([*java, "kafka.Kafka", str(config)],
                            stdout=(root / "stdout.log").open("wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        probe = settings_of(sasl_settings(port, "probe"))
        wait_until(lambda: asyncio.run(_topics_of(probe)) is not None, 90,
                   f"the SASL broker (see {root})", proc)
        yield port
    finally:
        stop(proc)


def test_worker_runs_through_sasl_plain_and_logs_no_password(stack, sasl_kafka):
    name = f"t{uuid.uuid4().hex[:10]}"
    env = {**os.environ, **sasl_settings(sasl_kafka, name), "RANKFLOW_LOG_LEVEL": "debug"}
    settings = settings_of(env)
    topics = Topics(settings.topic_prefix, settings.app_id)
    options = kafka_client_options(settings)
    # a wrong password is refused
    wrong = settings_of(sasl_settings(sasl_kafka, name, password="not-it"))
    with pytest.raises(Exception):  # noqa: B017 - aiokafka's auth error types vary
        asyncio.run(asyncio.wait_for(_topics_of(wrong), 20))
    assert asyncio.run(create_topics(settings.bootstrap_servers, topics, settings.partitions,
                                     kafka_options=options))
    messages = events(4)
    assert asyncio.run(produce(settings.bootstrap_servers, topics, iter(messages),
                               len(messages), progress=False, kafka_options=options)) == 5
    log_path = ARTIFACTS / f"{name}-sasl-worker.log"
    ARTIFACTS.mkdir(exist_ok=True)
    worker = WorkerProcess(env, log_path)
    r = redis.Redis.from_url(stack.redis, decode_responses=True)
    try:
        wait_until(lambda: r.hget(f"{name}:meta", "events") == "4", 90,
                   f"4 events counted through SASL (see {log_path})", worker)
        assert r.hget(f"{name}:acct:gov.sec", "24h.views") == "20"
        assert r.zscore(f"{name}:lb:24h:all", "gov.sec") is not None
    finally:
        stop(worker)
        keys = list(r.scan_iter(f"{name}:*", count=1000))
        if keys:
            r.delete(*keys)
    log = log_path.read_text(errors="replace")
    assert "Authenticated as rankflow via PLAIN" in log  # aiokafka's debug log of SASL
    assert KAFKA_PW not in log
