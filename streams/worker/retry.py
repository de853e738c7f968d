"""The worker's retry policy for writes: a broker or Redis away is waited for, not fatal.

A failed step is retried on the same aggregated result, with backoff, so in-memory
state is never applied twice; anything that is not an I/O failure stops the worker
(skipping a write would lose data).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

log = logging.getLogger(__name__)
T = TypeVar("T")

#: seconds before the first retry, and the most between two
FIRST_DELAY = 0.2
MAX_DELAY = 5.0


def transient(exc: BaseException) -> bool:
    """An I/O failure worth waiting out: timeouts, sockets, Redis, Kafka clients."""
    if isinstance(exc, (TimeoutError, OSError, aioredis.RedisError)):
        return True
    return type(exc).__module__.startswith(("aiokafka", "kafka"))


async def retrying(what: str, step: Callable[[], Awaitable[T]],
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """Run `step` until it succeeds, logging each transient failure with `what`."""
    delay = FIRST_DELAY
    while True:
        try:
            return await step()
        except Exception as exc:
            if not transient(exc):
                raise
            shown = exc if isinstance(exc, (TimeoutError, OSError, aioredis.RedisError)) \
                else repr(exc)
            log.warning("%s failed (%s); retrying in %.1fs", what, shown, delay)
        await sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
