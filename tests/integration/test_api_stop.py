"""SIGTERM stops `rankflow api` within seconds, even with live-feed clients connected
(their streams never end: uvicorn would wait for them for ever)."""

import signal
import threading
import time

import httpx

from tests.integration.conftest import ARTIFACTS, start_api


def test_sigterm_stops_the_api_while_feed_clients_are_connected(deploy):
    d = deploy()
    with (ARTIFACTS / f"{d.name}-api.log").open("wb") as log:
        api, url = start_api(d, log)
        opened = threading.Event()

        def follow() -> None:
            try:
                with httpx.stream("GET", f"{url}/api/stream", timeout=30) as stream:
                    opened.set()
                    for _ in stream.iter_bytes():
                        pass
            except httpx.HTTPError:
                pass  # the server went away: what this test wants

        clients = [threading.Thread(target=follow, daemon=True) for _ in range(3)]
        for client in clients:
            client.start()
        assert opened.wait(10), "no feed client connected"
        stopped = time.monotonic()
        api.send_signal(signal.SIGTERM)
        try:
            code = api.wait(timeout=15)
        finally:
            api.kill()
        assert code in (0, -signal.SIGTERM)  # uvicorn raises the signal again once stopped
        assert time.monotonic() - stopped < 15
