"""All of rankflow's settings, read once from the environment (and a `.env` file).

Every variable is named `RANKFLOW_*` (contract §6, Operation). A bad value stops the
program at start-up with a message naming the variable: see `load_settings`
(tests/test_settings.py). Secrets (passwords) are pydantic `SecretStr`s, and the password
of a Redis URL is masked in `repr(settings)` and in error messages (`redacted_url`), so
printing or logging settings shows no secret (tests/test_security_settings.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.api.milestone_rules import Rule, parse_rules
from streams.core.dedup import DEFAULT_MAX_IDS, MAX_IDS_LIMIT
from streams.core.periods import Period, parse_periods
from streams.core.windows import ROLLING

ROLLING_IDS = tuple(r.id for r in ROLLING)

#: fields whose given value is never echoed in an error message
SECRET_FIELDS = frozenset({"redis_password", "kafka_sasl_password"})
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def redacted_url(url: str) -> str:
    """The URL with its password (userinfo or `?password=`) replaced by `***`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not parseable: show only the scheme
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() == "password" for key, _ in pairs):
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs],
                              safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str, secrets: Iterable[str]) -> str:
    """The text with every secret (also as a str or bytes repr shows it) replaced by `***`."""
    for secret in secrets:
        for shown in {secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]}:
            if shown and shown in text:
                text = text.replace(shown, "***")
    return text


def _url_password(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.password:
        return parts.password
    return next((v for k, v in parse_qsl(parts.query) if k.lower() == "password"), None)


class Settings(BaseSettings):
    """rankflow's configuration (contract §6, Operation, plus tuning knobs with safe
    defaults)."""

    model_config = SettingsConfigDict(
        env_prefix="RANKFLOW_", env_file=".env", extra="ignore", frozen=True
    )

    kafka: str = "127.0.0.1:9092"
    #: may carry the password (`redis://:pw@host:6379/0`); `rediss://` for TLS
    redis: str = "redis://127.0.0.1:6379/0"
    prefix: str = "rf:"
    topic_prefix: str = ""
    app_id: str = "rankflow"
    clock: Literal["wall", "event"] = "wall"
    periods: str = ""
    partitions: int = Field(default=8, ge=1, le=1024)
    api_port: int = Field(default=8080, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    #: seconds the rank recorder's lease lasts unrenewed: a recorder that died is replaced
    #: within this (renewed every third of it)
    api_recorder_lease: float = Field(default=15.0, ge=1, le=600)
    #: milestone rules, `name=views:{window}:{N}` or `name=top:{K}:{window}:{board}`,
    #: comma-separated (streams/api/milestone_rules.py); empty = none
    milestones: str = ""
    #: origins allowed to read the API from a browser (CORS), comma-separated; none by default
    api_cors_origins: str = ""

    # Security: Redis AUTH and TLS, Kafka SASL and SSL (validated together below).
    redis_password: SecretStr | None = None
    redis_tls_ca_file: FilePath | None = None
    redis_tls_cert_file: FilePath | None = None
    redis_tls_key_file: FilePath | None = None
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: FilePath | None = None
    kafka_ssl_cert_file: FilePath | None = None
    kafka_ssl_key_file: FilePath | None = None

    # Redis connections: every client's timeouts and TCP keepalive, and Sentinel.
    #: seconds to open a connection (a LAN connects in milliseconds; 5 s rides out a lost SYN)
    redis_connect_timeout: float = Field(default=5.0, gt=0, le=300)
    #: seconds a reply may take: far above the longest legitimate call (one script of at
    #: most 200 accounts, under 100 ms: WRITE_CHUNK in streams/worker/redis_watch.py;
    #: the API's 1 s XREAD block), short enough that a Redis not answering is noticed and
    #: logged within a 30 s stall (tests/integration/test_redis_stall.py)
    redis_socket_timeout: float = Field(default=10.0, gt=1, le=3600)
    #: seconds of silence before TCP keepalive probes (every 5 s, 3 of them); 0 = off
    redis_keepalive: int = Field(default=30, ge=0, le=7200)
    #: Redis Sentinel: `host:port` of each sentinel, comma-separated; empty = no Sentinel
    redis_sentinels: str = ""
    #: the primary's service name the sentinels monitor (needed with RANKFLOW_REDIS_SENTINELS)
    redis_sentinel_master: str = ""
    #: Redis Cluster: RANKFLOW_REDIS names any node; the client finds the others and follows
    #: failovers and slot moves (streams/sink/cluster.py writes by slot)
    redis_cluster: bool = False

    # The worker's health endpoint (GET /ready, GET /live) and when it turns unhealthy.
    #: 0 = no health endpoint
    health_port: int = Field(default=0, ge=0, le=65535)
    health_host: str = "127.0.0.1"
    #: seconds a write (Redis or Kafka) may fail without a break before /live answers 503
    unhealthy_after: float = Field(default=60.0, gt=0, le=86_400)

    # Kafka durability (README, "Production Kafka settings"); unset: from the cluster's size.
    #: replicas of each topic rankflow creates; unset: 3 on a cluster of 3 or more brokers,
    #: else 1 (the admin client's describe_cluster counts them: streams/kafka/admin.py)
    replication_factor: int | None = Field(default=None, ge=1, le=16)
    #: min.insync.replicas of those topics; unset: 2 with a replication factor of 3 or
    #: more, else 1 (a write is acknowledged once that many replicas have it)
    min_insync_replicas: int | None = Field(default=None, ge=1, le=16)
    #: acks of every record rankflow writes (dead letters, re-keyed copies, changelogs);
    #: `all` also makes the producer idempotent (a retried send is not written twice)
    kafka_acks: Literal["all", "1"] = "all"

    # Scoring (the defaults of contract §3, Influence index): weights summing to 1,
    # ceilings per day of window.
    weight_views: float = Field(default=0.40, ge=0, le=1)
    weight_likes: float = Field(default=0.25, ge=0, le=1)
    weight_fans: float = Field(default=0.25, ge=0, le=1)
    weight_uploads: float = Field(default=0.10, ge=0, le=1)
    cap_views_per_day: float = Field(default=10_000_000, gt=0)
    cap_likes_per_day: float = Field(default=500_000, gt=0)
    cap_uploads_per_day: float = Field(default=20, gt=0)
    cap_fans: float = Field(default=50_000_000, gt=0)

    # Tuning; the defaults suit one worker on a small machine.
    batch_max_records: int = Field(default=100_000, ge=1)
    dedup_min_events: int = Field(default=100_000, ge=0)
    dedup_min_seconds: float = Field(default=600.0, ge=0)
    #: ids remembered per partition at most: 10 minutes at 100,000 events/s over 8
    #: partitions is 7,500,000 (about 30 bytes each: bench/dedup_size.py)
    dedup_max_ids: int = Field(default=DEFAULT_MAX_IDS, ge=1, le=MAX_IDS_LIMIT)
    session_timeout: float = Field(default=10.0, gt=0)
    rebalance_timeout: float = Field(default=10.0, gt=0)
    kafka_version: str = "3.9.1"
    cache_dir: Path = Path(os.path.expanduser("~/.cache/rankflow"))
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("kafka")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        if not servers:
            raise ValueError("no bootstrap server given")
        return ",".join(servers)

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: str) -> str:
        sentinels = [s.strip() for s in value.split(",") if s.strip()]
        for sentinel in sentinels:
            host, sep, port = sentinel.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{sentinel!r} is not host:port")
        return ",".join(sentinels)

    @field_validator("redis")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("api_cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        origins = [o.strip() for o in value.split(",") if o.strip()]
        for origin in origins:
            parts = urlsplit(origin)
            if origin == "*" or "*" in origin:
                raise ValueError("list the origins (scheme://host[:port]); '*' is not allowed")
            if parts.scheme not in ("http", "https") or not parts.hostname \
                    or parts.path or parts.query or parts.username:
                raise ValueError(f"{origin!r} is not an origin such as https://example.org")
        return ",".join(origins)

    @field_validator("kafka_sasl_username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("redis_password", "kafka_sasl_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @field_validator("periods")
    @classmethod
    def _periods(cls, value: str) -> str:
        parse_periods(value)
        return value

    @field_validator("app_id", "prefix")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _weights_sum_to_one(self) -> Settings:
        total = self.weight_views + self.weight_likes + self.weight_fans + self.weight_uploads
        if abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"RANKFLOW_WEIGHT_VIEWS + _LIKES + _FANS + _UPLOADS must sum to 1 "
                f"(the index stays on 0-1000), got {total:g}")
        return self

    @model_validator(mode="after")
    def _milestone_rules(self) -> Settings:
        try:
            self.milestone_rules  # noqa: B018 (parsed to be checked)
        except ValueError as exc:
            raise ValueError(f"RANKFLOW_MILESTONES: {exc}") from None
        return self

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> Settings:
        factor, insync = self.replication_factor, self.min_insync_replicas
        if factor is not None and insync is not None and insync > factor:
            raise ValueError(f"RANKFLOW_MIN_INSYNC_REPLICAS={insync} exceeds "
                             f"RANKFLOW_REPLICATION_FACTOR={factor}: no write could succeed")
        return self

    @model_validator(mode="after")
    def _redis_security(self) -> Settings:
        if self.redis_password is not None and _url_password(self.redis):
            raise ValueError("RANKFLOW_REDIS_PASSWORD is set and RANKFLOW_REDIS carries a "
                             "password too: give it in one place")
        tls = {"RANKFLOW_REDIS_TLS_CA_FILE": self.redis_tls_ca_file,
               "RANKFLOW_REDIS_TLS_CERT_FILE": self.redis_tls_cert_file,
               "RANKFLOW_REDIS_TLS_KEY_FILE": self.redis_tls_key_file}
        given = [name for name, path in tls.items() if path is not None]
        if given and not self.redis.startswith("rediss://"):
            raise ValueError(f"{', '.join(given)} need(s) a rediss:// RANKFLOW_REDIS (TLS), "
                             f"got {redacted_url(self.redis)!r}")
        if self.redis_tls_key_file and not self.redis_tls_cert_file:
            raise ValueError("RANKFLOW_REDIS_TLS_KEY_FILE needs RANKFLOW_REDIS_TLS_CERT_FILE")
        return self

    @model_validator(mode="after")
    def _redis_sentinel(self) -> Settings:
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            given, missing = (("RANKFLOW_REDIS_SENTINELS", "RANKFLOW_REDIS_SENTINEL_MASTER")
                              if self.redis_sentinels else
                              ("RANKFLOW_REDIS_SENTINEL_MASTER", "RANKFLOW_REDIS_SENTINELS"))
            raise ValueError(f"{given} needs {missing} (Sentinel: the sentinels' addresses "
                             f"and the primary's service name)")
        if self.redis_sentinels and self.redis.startswith("unix://"):
            raise ValueError("RANKFLOW_REDIS_SENTINELS needs a redis:// or rediss:// "
                             "RANKFLOW_REDIS (its database, password and TLS; the sentinels "
                             f"give the address), got {redacted_url(self.redis)!r}")
        return self

    @model_validator(mode="after")
    def _redis_cluster_mode(self) -> Settings:
        if not self.redis_cluster:
            return self
        if self.redis_sentinels:
            raise ValueError("RANKFLOW_REDIS_CLUSTER and RANKFLOW_REDIS_SENTINELS exclude "
                             "each other: a cluster fails over by itself")
        url = redacted_url(self.redis)
        if self.redis.startswith("unix://"):
            raise ValueError("RANKFLOW_REDIS_CLUSTER needs a redis:// or rediss:// "
                             f"RANKFLOW_REDIS (a node's address), got {url!r}")
        if urlsplit(self.redis).path.strip("/") not in ("", "0"):
            raise ValueError("RANKFLOW_REDIS_CLUSTER: a cluster has database 0 only, "
                             f"RANKFLOW_REDIS names another: {url!r}")
        if "{" in self.prefix or "}" in self.prefix:
            # the keys rankflow adds take a hash tag after the prefix (streams/sink/keys.py)
            raise ValueError("RANKFLOW_PREFIX must not contain '{' or '}' with "
                             f"RANKFLOW_REDIS_CLUSTER (got {self.prefix!r})")
        if self.milestones:
            # the rank recorder's scripts span slots (streams/api/recorder.py): not yet
            raise ValueError("RANKFLOW_MILESTONES: milestones are not available with "
                             "RANKFLOW_REDIS_CLUSTER yet (the rank recorder does not run "
                             "on a cluster)")
        return self

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        if sasl:
            for name, value in (("RANKFLOW_KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                                ("RANKFLOW_KAFKA_SASL_PASSWORD", self.kafka_sasl_password)):
                if value is None:
                    raise ValueError(f"{name} is needed with "
                                     f"RANKFLOW_KAFKA_SECURITY_PROTOCOL={protocol}")
        else:
            unused = [name for name, given in (
                ("RANKFLOW_KAFKA_SASL_USERNAME", self.kafka_sasl_username is not None),
                ("RANKFLOW_KAFKA_SASL_PASSWORD", self.kafka_sasl_password is not None),
                ("RANKFLOW_KAFKA_SASL_MECHANISM",
                 "kafka_sasl_mechanism" in self.model_fields_set)) if given]
            if unused:
                raise ValueError(f"{', '.join(unused)} need(s) RANKFLOW_KAFKA_SECURITY_PROTOCOL="
                                 f"SASL_PLAINTEXT or SASL_SSL, got {protocol}")
        files = {"RANKFLOW_KAFKA_SSL_CA_FILE": self.kafka_ssl_ca_file,
                 "RANKFLOW_KAFKA_SSL_CERT_FILE": self.kafka_ssl_cert_file,
                 "RANKFLOW_KAFKA_SSL_KEY_FILE": self.kafka_ssl_key_file}
        given = [name for name, path in files.items() if path is not None]
        if given and not protocol.endswith("SSL"):
            raise ValueError(f"{', '.join(given)} need(s) RANKFLOW_KAFKA_SECURITY_PROTOCOL="
                             f"SSL or SASL_SSL, got {protocol}")
        if self.kafka_ssl_key_file and not self.kafka_ssl_cert_file:
            raise ValueError("RANKFLOW_KAFKA_SSL_KEY_FILE needs RANKFLOW_KAFKA_SSL_CERT_FILE")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redacted_url(value) if name == "redis" else value

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret the settings hold, for `redact` (passwords, also in the Redis URL)."""
        values = [s.get_secret_value() for s in (self.redis_password, self.kafka_sasl_password)
                  if s is not None]
        in_url = _url_password(self.redis)
        if in_url:
            values += [in_url, unquote(in_url)]
        return tuple(dict.fromkeys(values))

    @property
    def cors_origins(self) -> list[str]:
        return self.api_cors_origins.split(",") if self.api_cors_origins else []

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """RANKFLOW_REDIS_SENTINELS as (host, port) pairs; empty without Sentinel."""
        pairs = [s.rpartition(":") for s in self.redis_sentinels.split(",") if s]
        return [(host.strip("[]"), int(port)) for host, _, port in pairs]

    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka.split(",")

    @property
    def named_periods(self) -> tuple[Period, ...]:
        return parse_periods(self.periods)

    @property
    def milestone_rules(self) -> tuple[Rule, ...]:
        windows = (*ROLLING_IDS, "all", *(p.name for p in self.named_periods))
        return parse_rules(self.milestones, windows)


class SettingsError(SystemExit):
    """A bad setting: stops the program with a message naming the variable."""


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        if not err["loc"]:  # a rule across settings: its message names them
            lines.append(err["msg"].removeprefix("Value error, "))
            continue
        field = str(err["loc"][0])
        given = err.get("input")
        if field in SECRET_FIELDS:
            shown = "(a secret, not shown)"
        elif field == "redis" and isinstance(given, str):
            shown = f"(got {redacted_url(given)!r})"
        else:
            shown = f"(got {given!r})"
        lines.append(f"RANKFLOW_{field.upper()}: {err['msg']} {shown}")
    return "bad setting: " + "; ".join(lines)


def load_settings() -> Settings:
    """Read the settings; a bad value raises SettingsError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
