"""Every Redis client's timeouts, keepalive and the Sentinel option (ops/connections.py).

No Redis is needed: redis-py connects lazily, so the options a client carries can be read
back from its pool. tests/integration/test_redis_sentinel.py writes through a real sentinel.
"""

import socket

import pytest
import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from streams.ops.connections import (
    BlockingSentinelPool,
    SyncBlockingSentinelPool,
    is_cluster,
    redis_client,
    redis_options,
)
from streams.ops.settings import Settings, SettingsError, load_settings

SENTINELS = "10.0.0.1:26379,10.0.0.2:26380"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("REDIS", "REDIS_PASSWORD", "REDIS_CONNECT_TIMEOUT", "REDIS_SOCKET_TIMEOUT",
                 "REDIS_KEEPALIVE", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER",
                 "REDIS_CLUSTER"):
        monkeypatch.delenv(f"RANKFLOW_{name}", raising=False)
    return monkeypatch


def test_default_timeouts_and_keepalive(clean_env):
    options = redis_options(Settings())
    assert options["socket_connect_timeout"] == 5.0
    assert options["socket_timeout"] == 10.0
    assert options["socket_keepalive"] is True
    assert options["socket_keepalive_options"][socket.TCP_KEEPIDLE] == 30
    assert options["socket_keepalive_options"][socket.TCP_KEEPCNT] == 3


def test_settings_reach_every_kind_of_client(clean_env):
    clean_env.setenv("RANKFLOW_REDIS_CONNECT_TIMEOUT", "2.5")
    clean_env.setenv("RANKFLOW_REDIS_SOCKET_TIMEOUT", "7")
    clean_env.setenv("RANKFLOW_REDIS_KEEPALIVE", "12")
    settings = load_settings()
    clients = [redis_client(settings), redis_client(settings, blocking=True),
               redis_client(settings, asyncio=False),
               redis_client(settings, asyncio=False, blocking=True)]
    for client in clients:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (2.5, 7.0)
        assert kwargs["socket_keepalive_options"][socket.TCP_KEEPIDLE] == 12
    # a caller's own option wins (readiness waits ATTEMPT_TIMEOUT to connect)
    one = redis_client(settings, socket_connect_timeout=10)
    assert one.connection_pool.connection_kwargs["socket_connect_timeout"] == 10


def test_keepalive_zero_turns_it_off(clean_env):
    options = redis_options(Settings(redis_keepalive=0))
    assert options["socket_keepalive"] is False
    assert "socket_keepalive_options" not in options


def test_sentinel_clients_ask_the_sentinels_for_the_primary(clean_env):
    clean_env.setenv("RANKFLOW_REDIS", "redis://:pw@ignored:1/3")
    clean_env.setenv("RANKFLOW_REDIS_SENTINELS", SENTINELS)
    clean_env.setenv("RANKFLOW_REDIS_SENTINEL_MASTER", "rankflow")
    clean_env.setenv("RANKFLOW_REDIS_SOCKET_TIMEOUT", "4")
    settings = load_settings()
    assert settings.sentinel_addresses == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    pools = {
        aiosentinel.SentinelConnectionPool: redis_client(settings),
        BlockingSentinelPool: redis_client(settings, blocking=True, max_connections=3,
                                           timeout=2),
        redis.sentinel.SentinelConnectionPool: redis_client(settings, asyncio=False),
        SyncBlockingSentinelPool: redis_client(settings, asyncio=False, blocking=True),
    }
    for pool_class, client in pools.items():
        pool = client.connection_pool
        assert type(pool) is pool_class
        assert pool.service_name == "rankflow" and pool.is_master
        kwargs = pool.connection_kwargs
        # the URL gives database and password; the sentinels give the address
        assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (3, "pw", 4.0)
        assert "host" not in kwargs
        watched = [(s.connection_pool.connection_kwargs["host"],
                    s.connection_pool.connection_kwargs["port"],
                    s.connection_pool.connection_kwargs["socket_timeout"],
                    s.connection_pool.connection_kwargs.get("password"))
                   for s in pool.sentinel_manager.sentinels]
        assert watched == [("10.0.0.1", 26379, 4.0, None), ("10.0.0.2", 26380, 4.0, None)]
    blocking = pools[BlockingSentinelPool].connection_pool
    assert isinstance(blocking, aioredis.BlockingConnectionPool)
    assert (blocking.max_connections, blocking.timeout) == (3, 2)


def test_sentinel_over_tls(clean_env, tmp_path):
    (tmp_path / "ca.pem").write_text("-")
    settings = Settings(redis="rediss://h:6380/0", redis_tls_ca_file=tmp_path / "ca.pem",
                        redis_sentinels="127.0.0.1:26379", redis_sentinel_master="m")
    pool = redis_client(settings).connection_pool
    assert pool.connection_class is aiosentinel.SentinelManagedSSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == str(tmp_path / "ca.pem")


@pytest.mark.parametrize("env,named", [
    ({"RANKFLOW_REDIS_SENTINELS": "nohost"}, "RANKFLOW_REDIS_SENTINELS"),
    ({"RANKFLOW_REDIS_SENTINELS": "h:99999", "RANKFLOW_REDIS_SENTINEL_MASTER": "m"},
     "RANKFLOW_REDIS_SENTINELS"),
    ({"RANKFLOW_REDIS_SENTINELS": "h:26379"}, "RANKFLOW_REDIS_SENTINEL_MASTER"),
    ({"RANKFLOW_REDIS_SENTINEL_MASTER": "m"}, "RANKFLOW_REDIS_SENTINELS"),
    ({"RANKFLOW_REDIS_SENTINELS": "h:26379", "RANKFLOW_REDIS_SENTINEL_MASTER": "m",
      "RANKFLOW_REDIS": "unix:///run/redis.sock"}, "RANKFLOW_REDIS_SENTINELS"),
    ({"RANKFLOW_REDIS_SOCKET_TIMEOUT": "0"}, "RANKFLOW_REDIS_SOCKET_TIMEOUT"),
    ({"RANKFLOW_REDIS_SOCKET_TIMEOUT": "1"}, "RANKFLOW_REDIS_SOCKET_TIMEOUT"),
    ({"RANKFLOW_REDIS_CONNECT_TIMEOUT": "soon"}, "RANKFLOW_REDIS_CONNECT_TIMEOUT"),
    ({"RANKFLOW_REDIS_KEEPALIVE": "-1"}, "RANKFLOW_REDIS_KEEPALIVE"),
])
def test_bad_connection_settings_stop_start_up(clean_env, env, named):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)


def test_cluster_clients_start_from_any_node_with_the_settings(clean_env):
    """RANKFLOW_REDIS_CLUSTER: redis-py's cluster clients, the timeouts on every node's
    connections (tests/integration/test_redis_cluster.py runs them on a real cluster)."""
    settings = Settings(redis_cluster=True, redis="redis://10.0.0.7:7001/0",
                        redis_socket_timeout=7)
    # (the synchronous cluster client connects at once: the integration test makes one)
    clients = [redis_client(settings), redis_client(settings, blocking=True)]
    assert [type(c) for c in clients] == [aiocluster.RedisCluster, aiocluster.RedisCluster]
    assert all(is_cluster(c) for c in clients)
    assert not is_cluster(redis_client(Settings()))
    first = clients[0]
    assert [(n.host, n.port) for n in first.startup_nodes] == [("10.0.0.7", 7001)]
    assert first.connection_kwargs["socket_timeout"] == 7.0
