"""Read API benchmark: latency under concurrency, and live-feed clients per process.

    .venv/bin/python bench/api_load.py --concurrency 200 --seconds 15 --sse 500,1000,2000

Seeds Redis with boards and accounts (1,000 accounts, every window), starts one
`rankflow api` process, then:

* runs `wrk` with `--concurrency` connections against the top-50 leaderboard and
  against account detail, and reports requests/s and p50/p99 latency;
* for each SSE client count, connects that many `/api/stream` clients, publishes a
  change notice every second, and reports how late the clients got them (p50/p99/max).

The load generator runs on the same 2-core machine as the API and Redis, so figures are
pessimistic. Writes bench/results-api.json. Needs Redis (`rankflow dev up`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
import redis

from streams.core.windows import Windows
from streams.ops.settings import load_settings

HERE = Path(__file__).resolve().parent


def seed(client: redis.Redis, prefix: str, accounts: int) -> list[str]:
    ids = [f"acct.{i:05d}" for i in range(accounts)]
    pipe = client.pipeline(transaction=False)
    for window in Windows().ids:
        scores = {a: round(random.uniform(0, 1000), 2) for a in ids}
        pipe.zadd(f"{prefix}lb:{window}:all", scores)  # type: ignore[arg-type]
        pipe.zadd(f"{prefix}lb:{window}:cat:police", dict(list(scores.items())[::5]))  # type: ignore[arg-type]
    for a in ids:
        fields = {"name": f"name {a}", "category": "police", "fans": 1000}
        for window in Windows().ids:
            fields.update({f"{window}.views": 10, f"{window}.likes": 1,
                           f"{window}.uploads": 1, f"{window}.index": 1.0})
        pipe.hset(f"{prefix}acct:{a}", mapping=fields)  # type: ignore[arg-type]
    pipe.sadd(f"{prefix}categories", "police")
    pipe.hset(f"{prefix}meta", mapping={"events": 1, "dlq": 0, "clock": 0, "updated_at": 0})
    pipe.execute()
    return ids


WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("RANKFLOW_WRK_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
"""


def load(url: str, paths: list[str], seconds: int, concurrency: int) -> dict[str, object]:
    """`wrk` (a C load generator: Python clients measure themselves) at a concurrency."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        script, listing = Path(tmp) / "paths.lua", Path(tmp) / "paths.txt"
        script.write_text(WRK_SCRIPT)
        listing.write_text("\n".join(paths) + "\n")
        done = subprocess.run(
            ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script),
             url], capture_output=True, text=True, check=True,
            env={**os.environ, "RANKFLOW_WRK_PATHS": str(listing)})
    out = done.stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", out, re.M) and
                       [(p, _ms(v, u)) for p, v, u in
                        re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", out, re.M)])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"seconds": seconds, "rps": round(rps), "p50_ms": percentiles.get("50"),
            "p99_ms": percentiles.get("99"), "non_2xx": int(errors.group(1)) if errors else 0}


def _ms(value: str, unit: str) -> float:
    return round(float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit], 2)


async def sse(url: str, client: redis.Redis, stream: str, clients: int,
              notices: int) -> dict[str, float]:
    delays: list[float] = []
    connected = 0
    sent_at: dict[str, float] = {}

    async def listen(http: httpx.AsyncClient) -> None:
        nonlocal connected
        async with http.stream("GET", "/api/stream", params={"window": "24h"}) as response:
            connected += 1
            event_id = None
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: ") and event_id in sent_at:
                    delays.append(time.time() - sent_at[event_id])

    limits = httpx.Limits(max_connections=clients + 10)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        tasks = [asyncio.ensure_future(listen(http)) for _ in range(clients)]
        deadline = time.monotonic() + 60
        while connected < clients and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        for _ in range(notices):
            notice = orjson.dumps({"clock": 0, "accounts": 1, "boards": ["24h:all"]})
            at = time.time()
            entry = client.xadd(stream, {"notice": notice})
            sent_at[entry.decode() if isinstance(entry, bytes) else str(entry)] = at
            await asyncio.sleep(1)
        await asyncio.sleep(1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    delays.sort()
    expected = connected * notices
    return {"clients": clients, "connected": connected, "received": len(delays),
            "expected": expected,
            "p50_ms": round(statistics.median(delays) * 1000, 1) if delays else None,
            "p99_ms": round(delays[int(len(delays) * 0.99)] * 1000, 1) if delays else None,
            "max_ms": round(delays[-1] * 1000, 1) if delays else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=15, help="per HTTP load test")
    parser.add_argument("--sse", default="500,1000,2000", help="SSE client counts to try")
    parser.add_argument("--notices", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results-api.json")
    args = parser.parse_args()

    prefix = f"apibench{uuid.uuid4().hex[:6]}:"
    settings = load_settings()
    client = redis.Redis.from_url(settings.redis)
    ids = seed(redis.Redis.from_url(settings.redis, decode_responses=True), prefix, 1000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANKFLOW_PREFIX": prefix, "RANKFLOW_API_PORT": str(port)}
    api = subprocess.Popen([sys.executable, "-m", "streams.ops.cli", "api"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        results: dict[str, object] = {
            "leaderboard_top50": load(
                url, ["/api/leaderboard?window=24h&board=all&limit=50"], args.seconds,
                args.concurrency),
            "account_detail": load(
                url, [f"/api/accounts/{a}" for a in random.sample(ids, 200)], args.seconds,
                args.concurrency),
            "concurrency": args.concurrency,
        }
        results["sse"] = [asyncio.run(sse(url, client, f"{prefix}changes", int(n),
                                          args.notices))
                          for n in args.sse.split(",")]
    finally:
        api.terminate()
        api.wait(timeout=10)
        keys = list(client.scan_iter(f"{prefix}*", count=10_000))
        if keys:
            client.delete(*keys)
    print(json.dumps(results, indent=2))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
