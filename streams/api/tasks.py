"""Background work that an API process runs from start-up to shutdown."""

from __future__ import annotations

import asyncio


class BackgroundTask:
    """Something an API process runs from start-up to shutdown (`run`)."""

    _task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        # Cancel until it ends: a cancellation that lands while redis-py connects can be
        # swallowed (the task then sleeps and loops on), which hung a quick shutdown.
        while self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=0.5)
        if self._task is not None:
            if not self._task.cancelled():
                self._task.exception()  # retrieved, so asyncio does not warn about it
            self._task = None
