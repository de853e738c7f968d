"""A lease in Redis that elects one holder among the API processes.

`hold()` takes the lease when it is free (SET NX PX) or renews it when this process holds
it (a script that extends it only if it still carries this holder's token), and says
whether this process holds it now. A holder that dies stops renewing; another process
takes it once it lapses (tests/integration/test_recorder.py). The token names the host
and process, so an operator (and that test) can see who records.
"""

from __future__ import annotations

import os
import secrets
import socket

import redis.asyncio as aioredis

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """One process's claim on a Redis key for `ttl` seconds at a time."""

    def __init__(self, client: aioredis.Redis, key: str, ttl: float) -> None:
        self.client, self.key = client, key
        self.ttl_ms = max(1, int(ttl * 1000))
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.held = False
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    async def hold(self) -> bool:
        """Take or renew the lease; True while this process holds it."""
        if self.held:
            self.held = bool(await self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))
        if not self.held:
            self.held = bool(await self.client.set(self.key, self.token, nx=True,
                                                   px=self.ttl_ms))
        return self.held

    async def release(self) -> None:
        """Give the lease up (on shutdown), so another process takes it without waiting."""
        if self.held:
            self.held = False
            await self._release(keys=[self.key], args=[self.token])
