"""The worker's health endpoint: `GET /ready` and `GET /live` over HTTP, for probes.

200 when the probe is up, 503 when not, with the probe's JSON body saying why
(streams/worker/health.py). A mode service handed to faust's Worker beside the app,
so it starts before the app (it answers 503 while the tables are read) and stops after
it. Off unless `RANKFLOW_HEALTH_PORT` is set (tests/integration/test_worker_health.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from mode import Service

from streams.worker.health import Probe

log = logging.getLogger(__name__)


class HealthServer(Service):
    """Serves each probe under its path (`/ready`, `/live`) on `host:port`."""

    def __init__(self, host: str, port: int, probes: dict[str, Callable[[], Probe]]) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self.probes = probes
        self._runner: web.AppRunner | None = None

    def routes(self) -> web.Application:
        app = web.Application()
        for path, probe in self.probes.items():
            app.router.add_get(path, self._answer(probe))
        return app

    @staticmethod
    def _answer(probe: Callable[[], Probe]) -> Callable[[web.Request],
                                                      Awaitable[web.StreamResponse]]:
        async def answer(request: web.Request) -> web.StreamResponse:
            found = probe()
            return web.json_response(found.body, status=200 if found.up else 503)
        return answer

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self.routes(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("health endpoint on http://%s:%d (%s)", self.host, self.port,
                 ", ".join(self.probes))

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
