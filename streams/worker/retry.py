"""The worker's retry policy for writes: a broker or Redis away is waited for, not fatal.

A failed step is retried on the same aggregated result, with backoff, so in-memory
state is never applied twice; anything that is not an I/O failure stops the worker
(skipping a write would lose data), and so does a record the broker refuses for good
(too large, malformed): sent again, it would be refused again, forever
(tests/test_worker.py::test_a_send_refused_for_good_stops_the_worker).

Each failure is logged with how long the step has been failing (`writing Redis: no answer
for 20 s (...); retrying in 0.4s` while Redis does not answer: tests/integration/
test_redis_stall.py), and reported to a `RetryWatcher` (the worker's liveness,
streams/worker/health.py) with the success that ends the run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import aiokafka.errors as kafka_errors
import redis.asyncio as aioredis
from faust.exceptions import ProducerSendError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: seconds before the first retry, and the most between two
FIRST_DELAY = 0.2
MAX_DELAY = 5.0


class RetryWatcher(Protocol):
    """Told of each failed attempt at `what`, and of the success that ends the run."""

    def failing(self, what: str, since: float) -> None: ...

    def succeeded(self, what: str) -> None: ...


#: what a broker answers for a record it will never take, however often it is sent
REFUSED_FOR_GOOD = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordTooLargeError,
                    kafka_errors.RecordListTooLargeError, kafka_errors.CorruptRecordException,
                    kafka_errors.InvalidTopicError, kafka_errors.UnsupportedForMessageFormatError)


#: what an idempotent producer answers once the broker no longer follows its sequence:
#: only a new producer sends again (IdempotentProducer.renew)
PRODUCER_LOST = (kafka_errors.OutOfOrderSequenceNumber, kafka_errors.UnknownProducerId,
                 kafka_errors.InvalidProducerEpoch)


def unwrapped(exc: BaseException) -> BaseException:
    """The client's own error where faust wraps it: `producer.send` raises
    ProducerSendError from aiokafka's (a broker away: KafkaTimeoutError while the record
    waits for metadata; test_outages.py caught it stopping the worker)."""
    if isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def transient(exc: BaseException) -> bool:
    """An I/O failure worth waiting out: timeouts, sockets, Redis, Kafka clients; not a
    record the broker refuses for good."""
    exc = unwrapped(exc)
    if isinstance(exc, (TimeoutError, OSError, aioredis.RedisError)):
        return True
    if isinstance(exc, REFUSED_FOR_GOOD):
        return False
    return type(exc).__module__.startswith(("aiokafka", "kafka"))


def _shown(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, (OSError, aioredis.RedisError)) else ""
    return text or repr(exc)


async def retrying(what: str, step: Callable[[], Awaitable[T]],
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                   watcher: RetryWatcher | None = None,
                   clock: Callable[[], float] = time.monotonic) -> T:
    """Run `step` until it succeeds, logging each transient failure with `what`."""
    delay = FIRST_DELAY
    since: float | None = None  # when the first attempt of this run of failures began
    while True:
        started = clock()
        try:
            result = await step()
        except Exception as exc:
            if not transient(exc):
                if isinstance(unwrapped(exc), REFUSED_FOR_GOOD):
                    log.error("%s: the broker refuses a record for good (%s): stopping, "
                              "as retrying cannot succeed", what, _shown(unwrapped(exc)))
                raise
            since = started if since is None else since
            if watcher is not None:
                watcher.failing(what, since)
            seconds = clock() - since
            if isinstance(exc, (TimeoutError, aioredis.TimeoutError)):
                log.warning("%s: no answer for %.0f s (%s); retrying in %.1fs",
                            what, seconds, _shown(exc), delay)
            elif seconds >= 1:
                log.warning("%s failing for %.0f s (%s); retrying in %.1fs",
                            what, seconds, _shown(exc), delay)
            else:
                log.warning("%s failed (%s); retrying in %.1fs", what, _shown(exc), delay)
        else:
            if since is not None:
                log.warning("%s works again after %.1f s", what, clock() - since)
            if watcher is not None:
                watcher.succeeded(what)
            return result
        await sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
