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
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
