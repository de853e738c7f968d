"""Write ordering: Redis and Kafka see the worker's writes in the order they were made."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class WriteOrder:
    """Chains writes: each one starts after every write queued before it has finished."""

    def __init__(self) -> None:
        self._last: asyncio.Future[None] | None = None

    def then(self, write: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        """Queue `write` after the last one; returns its future."""
        previous = self._last

        async def in_order() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            await write

        self._last = asyncio.ensure_future(in_order())
        return self._last
