"""`rankflow dev` on real processes, on spare ports with a cache folder of its own: `up
--sentinel` starts Redis, a replica and three sentinels (master `rankflow`, quorum 2);
`status --json` names each with its pid; `up` again starts only the one killed; `down`
stops every one. (The three-broker cluster: tests/integration/test_broker_kill.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.integration.test_outages import free_ports


def rankflow(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "streams.ops.cli", *args], env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"rankflow {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def processes(env: dict[str, str]) -> dict[tuple[str, int], dict]:
    listed = json.loads(rankflow(env, "dev", "status", "--json"))["processes"]
    return {(p["role"], p["id"]): p for p in listed}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    return state != "Z"


def test_up_with_sentinel_status_json_restart_of_one_and_down(tmp_path):
    kafka, _ = free_ports(2, 39092)
    (port,) = free_ports(1, 16479)
    while not all(free_ports(1, p) == [p] for p in (port + 1, port + 20000, port + 20001,
                                                    port + 20002)):
        (port,) = free_ports(1, port + 10)
    env = {**os.environ, "RANKFLOW_KAFKA": f"127.0.0.1:{kafka}",
           "RANKFLOW_REDIS": f"redis://127.0.0.1:{port}/0", "RANKFLOW_CACHE_DIR": str(tmp_path)}
    again: dict[tuple[str, int], dict] = {}
    try:
        rankflow(env, "dev", "up", "--sentinel")
        found = processes(env)
        assert {(role, ident, p["port"]) for (role, ident), p in found.items()} == {
            ("kafka", 1, kafka), ("redis", 0, port), ("redis-replica", 1, port + 1),
            ("sentinel", 1, port + 20000), ("sentinel", 2, port + 20001),
            ("sentinel", 3, port + 20002)}
        assert all(alive(p["pid"]) for p in found.values())
        watcher = redis.Redis(port=port + 20000, decode_responses=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the sentinels find each other and the replica
            master = watcher.sentinel_master("rankflow")
            if master["num-other-sentinels"] == 2 and master["num-slaves"] == 1:
                break
            time.sleep(0.5)
        assert (master["port"], master["quorum"], master["num-other-sentinels"],
                master["num-slaves"]) == (port, 2, 2, 1)

        replica = found["redis-replica", 1]["pid"]
        os.kill(replica, signal.SIGKILL)
        out = rankflow(env, "dev", "up", "--sentinel")
        again = processes(env)
        assert again["redis-replica", 1]["pid"] not in (None, replica)
        assert {k: p["pid"] for k, p in again.items() if k != ("redis-replica", 1)} == {
            k: p["pid"] for k, p in found.items() if k != ("redis-replica", 1)}
        assert out.count("already running") == 5
    finally:
        rankflow(env, "dev", "down")  # no option given: stops what --sentinel started too
    assert not any(alive(p["pid"]) for p in again.values())
    assert json.loads(rankflow(env, "dev", "status", "--json")) == {"processes": []}
