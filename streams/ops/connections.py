"""Kafka and Redis clients made from the settings, in one place: AUTH, TLS, SASL, SSL.

Every client rankflow makes goes through here, so a secured deployment needs only the
`RANKFLOW_*` security settings (streams/ops/settings.py validates their combinations):

* `redis_client(settings)`: Redis with the password (`RANKFLOW_REDIS_PASSWORD`, or the one
  in the URL), for `rediss://` URLs the CA, certificate and key files, and the connect and
  socket timeouts and TCP keepalive (`RANKFLOW_REDIS_CONNECT_TIMEOUT`, `_SOCKET_TIMEOUT`,
  `_KEEPALIVE`); with `RANKFLOW_REDIS_SENTINELS`, the primary the sentinels name
  (`master_for`), which follows a failover; with `RANKFLOW_REDIS_CLUSTER`, redis-py's
  cluster client from any node's URL (tests/test_redis_connections.py).
* `kafka_client_options(settings)`: the keyword arguments of every aiokafka client
  (`security_protocol`, `ssl_context`, `sasl_*`).
* `faust_credentials(settings)`: the same for the faust app (`broker_credentials`).
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
import redis.cluster
import redis.sentinel
from redis.connection import parse_url

from streams.ops.settings import Settings

if TYPE_CHECKING:  # faust is the worker's: the API and the tools do not import it
    from faust.types.auth import CredentialsT


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (the system's CAs unless a CA file is given)."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ca = settings.kafka_ssl_ca_file
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if settings.kafka_ssl_cert_file:
        key = settings.kafka_ssl_key_file
        context.load_cert_chain(str(settings.kafka_ssl_cert_file), str(key) if key else None)
    return context


def _sasl_secret(settings: Settings) -> str:
    assert settings.kafka_sasl_password is not None  # the settings check it for SASL_*
    return settings.kafka_sasl_password.get_secret_value()


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer/Consumer/AdminClient (security only)."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=_sasl_secret(settings))
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The faust app's `broker_credentials` (None for PLAINTEXT)."""
    import faust

    protocol = settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=_sasl_secret(settings), ssl_context=context,
                                     mechanism=settings.kafka_sasl_mechanism)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


#: TCP keepalive: seconds between probes, and probes unanswered before the connection is dead
KEEPALIVE_INTERVAL = 5
KEEPALIVE_PROBES = 3


def keepalive_options(idle: int) -> dict[int, int]:
    """The TCP_KEEP* socket options for `idle` seconds of silence (those this OS has)."""
    options = {}
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        if hasattr(socket, name):
            options[getattr(socket, name)] = value
    return options


def redis_timeouts(settings: Settings) -> dict[str, Any]:
    """Connect and socket timeouts and TCP keepalive: for Redis and the sentinels alike."""
    keepalive = settings.redis_keepalive
    options: dict[str, Any] = {"socket_connect_timeout": settings.redis_connect_timeout,
                               "socket_timeout": settings.redis_socket_timeout,
                               "socket_keepalive": keepalive > 0}
    if keepalive:
        options["socket_keepalive_options"] = keepalive_options(keepalive)
    return options


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for redis-py's `from_url` beyond the URL: password, TLS files,
    timeouts and keepalive."""
    options: dict[str, Any] = redis_timeouts(settings)
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis.startswith("rediss://"):
        for option, path in (("ssl_ca_certs", settings.redis_tls_ca_file),
                             ("ssl_certfile", settings.redis_tls_cert_file),
                             ("ssl_keyfile", settings.redis_tls_key_file)):
            if path is not None:
                options[option] = str(path)
    return options


def sentinel_connection_options(settings: Settings) -> dict[str, Any]:
    """The primary's connection options under Sentinel: RANKFLOW_REDIS gives the database,
    user, password and TLS (its host and port are the sentinels' to say)."""
    from_url = {k: v for k, v in parse_url(settings.redis).items() if v is not None}
    options: dict[str, Any] = {k: v for k, v in from_url.items()
                               if k in ("db", "username", "password")}
    if settings.redis.startswith("rediss://"):
        options["ssl"] = True
    return {**options, **redis_options(settings)}


class BlockingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The primary's pool, waiting for a free connection like BlockingConnectionPool."""


class SyncBlockingSentinelPool(redis.sentinel.SentinelConnectionPool,
                               redis.BlockingConnectionPool):
    """The same for the synchronous client."""


def _sentinel_client(settings: Settings, asyncio: bool, blocking: bool,
                     options: dict[str, Any]) -> aioredis.Redis | redis.Redis:
    # the sentinels themselves: the same timeouts, no password of the primary's
    watch = redis_timeouts(settings)
    kwargs = {**sentinel_connection_options(settings), **options}
    master = settings.redis_sentinel_master
    if asyncio:
        sentinel = aiosentinel.Sentinel(settings.sentinel_addresses, sentinel_kwargs=watch)
        pool = BlockingSentinelPool if blocking else aiosentinel.SentinelConnectionPool
        return sentinel.master_for(master, aioredis.Redis, pool, **kwargs)
    sync = redis.sentinel.Sentinel(settings.sentinel_addresses, sentinel_kwargs=watch)
    sync_pool = SyncBlockingSentinelPool if blocking else redis.sentinel.SentinelConnectionPool
    return sync.master_for(master, redis.Redis, sync_pool, **kwargs)


def is_cluster(client: object) -> bool:
    """Is this a Redis Cluster client (its writes and multi-key reads go by slot)?"""
    return isinstance(client, (aiocluster.RedisCluster, redis.cluster.RedisCluster))


def _cluster_client(settings: Settings, asyncio: bool,
                    options: dict[str, Any]) -> aioredis.Redis | redis.Redis:
    # the cluster client keeps a pool per node and takes no pool class: `blocking`, and
    # the blocking pool's wait (`timeout`), are moot (tests/integration/test_api.py)
    kwargs = {**redis_options(settings), **options}
    client: Any = (aiocluster.RedisCluster if asyncio else redis.cluster.RedisCluster
                   ).from_url(settings.redis, **kwargs)
    # it offers every command rankflow sends (single-key commands, pipelines, EVALSHA);
    # what differs (scripts over keys of one slot) asks is_cluster (streams/sink/cluster.py)
    return cast(aioredis.Redis | redis.Redis, client)


@overload
def redis_client(settings: Settings, *, asyncio: Literal[True] = True, blocking: bool = False,
                 **options: Any) -> aioredis.Redis: ...
@overload
def redis_client(settings: Settings, *, asyncio: Literal[False], blocking: bool = False,
                 **options: Any) -> redis.Redis: ...
def redis_client(settings: Settings, *, asyncio: bool = True, blocking: bool = False,
                 **options: Any) -> aioredis.Redis | redis.Redis:
    """A Redis client for RANKFLOW_REDIS (or the Sentinel primary) with the security,
    timeout and keepalive settings applied.

    `blocking`: a pool that waits for a free connection instead of failing when all
    `max_connections` are busy. Other options go to redis-py (`decode_responses`, ...)
    and win over the settings'.
    """
    if settings.redis_cluster:
        return _cluster_client(settings, asyncio,
                               {k: v for k, v in options.items() if k != "timeout"}
                               if blocking else options)
    if settings.redis_sentinels:
        return _sentinel_client(settings, asyncio, blocking, options)
    kwargs = {**redis_options(settings), **options}
    if asyncio:
        if blocking:
            return aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
                settings.redis, **kwargs))
        return aioredis.Redis.from_url(settings.redis, **kwargs)
    if blocking:
        return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            settings.redis, **kwargs))
    return redis.Redis.from_url(settings.redis, **kwargs)
