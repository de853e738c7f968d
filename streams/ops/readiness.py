"""Wait for Kafka and Redis before the worker starts, instead of crashing on start-up.

A worker started while the broker or Redis is down (a machine booting, a rolling restart,
`docker compose up` starting everything at once) retries with backoff and says so:

    waiting for Kafka at 127.0.0.1:9092: KafkaConnectionError: Unable to bootstrap
    from [('127.0.0.1', 9092, <AddressFamily.AF_INET: 2>)]; retrying in 2s

Errors that waiting cannot cure (bad credentials, refused authorisation) stop the worker
at once with the reason. Once both answer, the worker starts faust as usual; what happens
when a service goes away later is faust's and the worker's (retries in
streams/worker/retry.py). Held by tests/integration/test_outages.py (a worker started
while Kafka and Redis are down waits, then works).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from streams.ops.connections import kafka_client_options, redis_client
from streams.ops.settings import Settings, redacted_url

log = logging.getLogger(__name__)

#: seconds before the first retry; doubled after each failure up to MAX_DELAY
FIRST_DELAY = 1.0
MAX_DELAY = 5.0
#: seconds one attempt may take (a port that accepts but never answers)
ATTEMPT_TIMEOUT = 10.0


class ServiceUnusable(SystemExit):
    """A service answers but refuses us (credentials, authorisation): waiting will not help."""


_FATAL_KAFKA = ("SaslAuthenticationFailed", "AuthenticationFailedError",
                "AuthenticationMethodNotSupported", "UnsupportedSaslMechanismError",
                "ClusterAuthorizationFailedError", "TopicAuthorizationFailedError")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) and not text:
        return f"no answer within {ATTEMPT_TIMEOUT:.0f}s"
    if not text or text.startswith(name):  # aiokafka's errors name themselves
        return text or name
    return f"{name}: {text}"


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence a client library's own error log while we retry (we log each attempt)."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        target.setLevel(level)


async def _wait(what: str, attempt: Callable[[], Awaitable[None]],
                fatal: Callable[[BaseException], bool], timeout: float | None) -> None:
    delay = FIRST_DELAY
    deadline = None if timeout is None else time.monotonic() + timeout
    waited = False
    while True:
        try:
            await asyncio.wait_for(attempt(), ATTEMPT_TIMEOUT)
        except Exception as exc:
            if fatal(exc):
                raise ServiceUnusable(f"{what} refuses us: {_describe(exc)}") from None
            if deadline is not None and time.monotonic() + delay > deadline:
                raise ServiceUnusable(f"{what} did not answer within {timeout:.0f}s: "
                                      f"{_describe(exc)}") from None
            log.warning("waiting for %s: %s; retrying in %.0fs", what, _describe(exc), delay)
            waited = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            continue
        if waited:
            log.info("%s answers", what)
        return


async def wait_for_kafka(settings: Settings, timeout: float | None = None) -> None:
    """Until the brokers answer a metadata request (an open port is not enough)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def attempt() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                    request_timeout_ms=int(ATTEMPT_TIMEOUT * 1000),
                                    **kafka_client_options(settings))
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    with _quiet("aiokafka"):
        await _wait(f"Kafka at {settings.kafka}", attempt,
                    lambda exc: type(exc).__name__ in _FATAL_KAFKA, timeout)


async def wait_for_redis(settings: Settings, timeout: float | None = None) -> None:
    """Until Redis answers PING (and has finished loading its data)."""
    import redis.exceptions as errors

    async def attempt() -> None:
        client = redis_client(settings, socket_connect_timeout=ATTEMPT_TIMEOUT)
        try:
            await client.ping()
        finally:
            await client.aclose()

    def fatal(exc: BaseException) -> bool:
        # wrong password, no permission, an error reply; not a refused connection or
        # BusyLoadingError (a ConnectionError: Redis still loading its data)
        return isinstance(exc, errors.AuthenticationError | errors.AuthorizationError
                          | errors.ResponseError)

    await _wait(f"Redis at {redacted_url(settings.redis)}", attempt, fatal, timeout)


async def wait_until_ready(settings: Settings, timeout: float | None = None) -> None:
    """Both services, one after the other (each logs while it waits)."""
    await wait_for_kafka(settings, timeout)
    await wait_for_redis(settings, timeout)
