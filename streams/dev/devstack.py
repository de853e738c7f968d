"""`rankflow dev up|down|status`: a real Apache Kafka (KRaft) and Redis on loopback.

Kafka's jars come from Maven Central through Maven (`org.apache.kafka:kafka_2.13`),
resolved once into `<cache>/kafka-<version>/`; storage is formatted once; each broker
runs as `java kafka.Kafka` in combined broker+controller mode. One broker by default;
`--brokers N` runs N of them as one KRaft quorum, on the first bootstrap port and every
100th after it (9092, 9192, 9292), each in `<cache>/kafka-<version>/cluster-N/node-<id>/`.
Redis is Debian's `redis-server` (installed with apt-get when missing and we are root).
`--redis-cluster` runs, in place of the one Redis, a Redis Cluster of three primaries and
three replicas on ports 7000-7005 (`redis-cli --cluster create`, a node timeout of 2 s so a
failover takes seconds), each in `<cache>/redis/cluster/node-<port>/`; a single Redis that
already runs is left alone.

Every process started is recorded in `<cache>/processes.json` (role, id, port, pid):
`dev status --json` prints it, `dev up` starts again what is not running, `dev down`
stops all of it, whatever options started it (tests/test_devstack.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from streams.ops.settings import Settings

log = logging.getLogger(__name__)

#: the default RANKFLOW_CACHE_DIR, whose resolved jars other cache folders reuse
DEFAULT_CACHE = Path(os.path.expanduser("~/.cache/rankflow"))
# The most `dev up` waits for a broker whose log keeps growing (loading many partitions).
STARTUP_LIMIT = 900.0

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.rankflow</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{version}</version></dependency>
    {logging}
  </dependencies>
</project>
"""
LOG4J1 = """<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>1.7.36</version></dependency>"""
LOG4J2 = """<dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>"""

SERVER_PROPERTIES = """process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor={internal_replicas}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={internal_replicas}
transaction.state.log.min.isr={internal_min_isr}
transaction.state.log.num.partitions=8
default.replication.factor={internal_replicas}
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=5000
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
"""
SENTINEL_CONF = """port {port}
bind {host}
dir {dir}
protected-mode no
sentinel monitor {master} {redis_host} {redis_port} {quorum}
sentinel down-after-milliseconds {master} 5000
sentinel failover-timeout {master} 20000
"""
#: `dev up --sentinel`: the primary's service name the sentinels monitor, their number,
#: how many must agree that it is down, and their ports' distance from Redis's
SENTINEL_MASTER = "rankflow"
SENTINELS = 3
SENTINEL_QUORUM = 2
SENTINEL_PORT_OFFSET = 20_000
#: `dev up --redis-cluster`: the first node's port, primaries and replicas per primary,
#: and the node timeout (ms) after which a replica takes over a primary that is down
CLUSTER_PORT = 7000
CLUSTER_PRIMARIES = 3
CLUSTER_REPLICAS = 1
CLUSTER_NODE_TIMEOUT_MS = 2000
#: ports between one broker's and the next's (its controller listens on its port + 1)
BROKER_PORT_STEP = 100
LOG4J1_PROPERTIES = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""
LOG4J2_PROPERTIES = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
"""


async def _kafka_answers(bootstrap: str, brokers: int = 1) -> bool:
    """The broker answers a metadata request naming at least `brokers` brokers."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return len(cluster["brokers"]) >= brokers
    except Exception:
        return False
    finally:
        await admin.close()


class DevStackError(SystemExit):
    """The local stack cannot be brought up; the message says what to do."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def answers(self, timeout: float = 0.5) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not reaped) is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        if state == "Z":
            return False
    except OSError:
        pass
    return True


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


@dataclass(frozen=True)
class StackProcess:
    """One process the dev stack started, as `dev status --json` prints it."""

    role: str  # kafka, redis (and redis-replica, sentinel, redis-cluster where started)
    id: int    # a broker's node id; 0 for the one Redis
    port: int
    pid: int

    @property
    def name(self) -> str:
        return (f"{self.role} {self.id}" if self.role in ("kafka", "sentinel", "redis-cluster")
                else self.role)

    def alive(self) -> bool:
        return _alive(self.pid)


def read_record(path: Path) -> tuple[int, list[StackProcess]]:
    """The brokers option and the processes recorded in a processes.json (none if absent)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return 1, []
    return int(data.get("brokers", 1)), [StackProcess(**p) for p in data.get("processes", [])]


def write_record(path: Path, brokers: int, processes: list[StackProcess]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"brokers": brokers, "processes": [
        {"role": p.role, "id": p.id, "port": p.port, "pid": p.pid} for p in processes]},
        indent=2) + "\n")
    temporary.replace(path)


def _stop_all(processes: list[StackProcess], timeout: float) -> list[str]:
    """SIGTERM to all at once (brokers of one quorum shut down together: the last one
    alone would wait for a controller majority), SIGKILL what is left after `timeout`."""
    alive = [p for p in processes if p.alive()]
    for process in alive:
        os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.alive() for p in alive):
        time.sleep(0.2)
    for process in alive:
        if process.alive():
            os.kill(process.pid, signal.SIGKILL)
    stopped = [f"{p.name}: stopped (pid {p.pid})" for p in alive]
    return stopped or ["nothing was running"]


@dataclass(frozen=True)
class Broker:
    """One KRaft node (broker and controller) of the dev cluster, and its folders."""

    node_id: int
    endpoint: Endpoint
    controller: Endpoint
    home: Path  # server.properties, data/, logs/

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def logfile(self) -> Path:
        return self.home / "logs" / "server.log"


class DevStack:
    """The local Kafka + Redis for development, tests and the demo."""

    def __init__(self, settings: Settings, brokers: int = 1, sentinel: bool = False,
                 redis_cluster: bool = False) -> None:
        if not 1 <= brokers <= 9:
            raise DevStackError(f"--brokers {brokers}: give 1 to 9")
        if sentinel and redis_cluster:
            raise DevStackError("--sentinel and --redis-cluster exclude each other")
        self.sentinel = sentinel
        self.redis_cluster = redis_cluster
        self.settings = settings
        self.root = Path(settings.cache_dir)
        self.record = self.root / "processes.json"
        self.kafka_dir = self.root / f"kafka-{settings.kafka_version}"
        self.redis_dir = self.root / "redis"
        host, _, port = settings.bootstrap_servers[0].rpartition(":")
        self.kafka = Endpoint(host, int(port))
        self.controller = Endpoint(host, int(port) + 1)
        # one broker keeps the folders of before clusters (kafka-<version>/data, ...)
        homes = ([self.kafka_dir] if brokers == 1 else
                 [self.kafka_dir / f"cluster-{brokers}" / f"node-{n}"
                  for n in range(1, brokers + 1)])
        self.brokers = [
            Broker(n, Endpoint(host, int(port) + BROKER_PORT_STEP * (n - 1)),
                   Endpoint(host, int(port) + BROKER_PORT_STEP * (n - 1) + 1), home)
            for n, home in enumerate(homes, 1)]
        url = urlparse(settings.redis)
        self.redis = Endpoint(url.hostname or "127.0.0.1", url.port or 6379)
        # with --sentinel: a replica on the next port, three sentinels from port + 20000
        self.redis_replica = Endpoint(self.redis.host, self.redis.port + 1)
        self.sentinels = [Endpoint(self.redis.host, self.redis.port + SENTINEL_PORT_OFFSET + n)
                          for n in range(SENTINELS)]
        self.cluster_nodes = [Endpoint(self.redis.host, CLUSTER_PORT + n) for n in
                              range(CLUSTER_PRIMARIES * (1 + CLUSTER_REPLICAS))]
        if sentinel and self.sentinels[-1].port > 65535:
            raise DevStackError(f"--sentinel: the sentinels' ports (Redis's + "
                                f"{SENTINEL_PORT_OFFSET}) pass 65535; give RANKFLOW_REDIS a "
                                f"lower port")

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{b.endpoint.host}:{b.endpoint.port}" for b in self.brokers)

    @property
    def _log4j2(self) -> bool:
        return int(self.settings.kafka_version.split(".")[0]) >= 4

    # The record -----------------------------------------------------------------------
    def recorded(self) -> list[StackProcess]:
        """Every process recorded in processes.json, and those of the pid files an older
        rankflow wrote (kafka.pid, redis.pid) where they are not in it."""
        _, processes = read_record(self.record)
        legacy = [("kafka", 1, self.kafka.port, self.kafka_dir / "kafka.pid"),
                  ("redis", 0, self.redis.port, self.redis_dir / "redis.pid")]
        for role, ident, port, pid_file in legacy:
            pid = _pid_alive(pid_file)
            if pid is not None and all(p.pid != pid for p in processes):
                processes.append(StackProcess(role, ident, port, pid))
        return processes

    def _running(self, role: str, ident: int) -> StackProcess | None:
        return next((p for p in self.recorded() if (p.role, p.id) == (role, ident)
                     and p.alive()), None)

    def _remember(self, process: StackProcess) -> None:
        """Record a started process (replacing its dead namesake), under this stack's
        brokers option; an older rankflow's pid file too, in the one-broker layout."""
        _, processes = read_record(self.record)
        kept = [p for p in processes if (p.role, p.id) != (process.role, process.id)
                and p.alive()]
        write_record(self.record, len(self.brokers),
                     sorted([*kept, process], key=lambda p: (p.role, p.id)))
        if process.role == "redis":
            (self.redis_dir / "redis.pid").write_text(str(process.pid))
        elif process.role == "kafka" and len(self.brokers) == 1:
            (self.kafka_dir / "kafka.pid").write_text(str(process.pid))

    def _check_options(self) -> None:
        """`dev up` with other options than the running stack's: say so, start nothing."""
        brokers, processes = read_record(self.record)
        if brokers != len(self.brokers) and any(p.role == "kafka" and p.alive()
                                                for p in processes):
            raise DevStackError(f"the dev stack runs with --brokers {brokers}: "
                                f"`rankflow dev down` first, or give --brokers {brokers}")

    def _free(self, role: str, ident: int, endpoint: Endpoint, setting: str) -> str | None:
        """A line saying it runs already, None when free to start; an error if a stranger
        holds its port."""
        running = self._running(role, ident)
        if running is not None:
            return f"{running.name}: already running (pid {running.pid}) on {endpoint.port}"
        if endpoint.answers():
            raise DevStackError(f"port {endpoint.port} is taken by a process rankflow did "
                                f"not start; stop it or set {setting}")
        return None

    # Kafka -------------------------------------------------------------------------
    def _classpath(self) -> str:
        cp_file = self.kafka_dir / "classpath.txt"
        if cp_file.exists():
            return cp_file.read_text().strip()
        # Another cache folder (a second stack on other ports, e.g. for a test) shares the
        # jars Maven already resolved for the default one.
        shared = DEFAULT_CACHE / self.kafka_dir.name / "classpath.txt"
        if shared.exists() and all(Path(jar).exists()
                                   for jar in shared.read_text().strip().split(":")):
            self.kafka_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared, cp_file)
            return cp_file.read_text().strip()
        if shutil.which("mvn") is None:
            raise DevStackError("Maven (mvn) is needed to fetch Kafka's jars: "
                                "apt-get install maven")
        if shutil.which("java") is None:
            raise DevStackError("Java 17+ is needed to run Kafka: "
                                "apt-get install openjdk-17-jre-headless")
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        (self.kafka_dir / "pom.xml").write_text(POM.format(
            version=self.settings.kafka_version, logging=LOG4J2 if self._log4j2 else LOG4J1))
        log.info("resolving Apache Kafka %s from Maven Central", self.settings.kafka_version)
        done = subprocess.run(
            ["mvn", "-q", "-B", "dependency:build-classpath",
             f"-Dmdep.outputFile={cp_file}"],
            cwd=self.kafka_dir, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not cp_file.exists():
            raise DevStackError(
                f"Maven could not resolve org.apache.kafka:kafka_2.13:"
                f"{self.settings.kafka_version}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return cp_file.read_text().strip()

    def _java(self, classpath: str, *args: str, home: Path | None = None) -> list[str]:
        home = home or self.kafka_dir
        logs = home / "logs"
        if self._log4j2:
            logging_opt = f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}"
        else:
            logging_opt = f"-Dlog4j.configuration=file:{home / 'log4j.properties'}"
        return ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dkafka.logs.dir={logs}", logging_opt, "-cp", classpath, *args]

    def _configure_kafka(self, broker: Broker) -> Path:
        logs = broker.home / "logs"
        broker.data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        voters = ",".join(f"{b.node_id}@{b.controller.host}:{b.controller.port}"
                          for b in self.brokers)
        count = len(self.brokers)
        config = broker.home / "server.properties"
        config.write_text(SERVER_PROPERTIES.format(
            node_id=broker.node_id, voters=voters, host=broker.endpoint.host,
            port=broker.endpoint.port, controller_port=broker.controller.port,
            data=broker.data, internal_replicas=min(3, count),
            internal_min_isr=min(2, count)))
        (broker.home / "log4j.properties").write_text(
            LOG4J1_PROPERTIES.format(log=broker.logfile))
        (broker.home / "log4j2.properties").write_text(
            LOG4J2_PROPERTIES.format(log=broker.logfile))
        return config

    def _cluster_id(self, classpath: str) -> str:
        """One id for every node of a cluster (its storage is formatted with it)."""
        id_file = self.brokers[0].home.parent / "cluster.id" if len(self.brokers) > 1 \
            else None
        if id_file is not None and id_file.exists():
            return id_file.read_text().strip()
        uuid = subprocess.run(self._java(classpath, "kafka.tools.StorageTool", "random-uuid"),
                              capture_output=True, text=True, check=True).stdout.split()[-1]
        if id_file is not None:
            id_file.write_text(uuid)
        return uuid

    def _format_storage(self, classpath: str, broker: Broker, config: Path) -> None:
        if (broker.data / "meta.properties").exists():
            return
        done = subprocess.run(
            self._java(classpath, "kafka.tools.StorageTool", "format", "-t",
                       self._cluster_id(classpath), "-c", str(config), home=broker.home),
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DevStackError(f"formatting Kafka storage failed:\n{done.stdout}{done.stderr}")

    def start_broker(self, broker: Broker) -> str:
        running = self._free("kafka", broker.node_id, broker.endpoint, "RANKFLOW_KAFKA")
        if running:
            return running
        classpath = self._classpath()
        config = self._configure_kafka(broker)
        self._format_storage(classpath, broker, config)
        out = (broker.home / "logs" / "stdout.log").open("ab")
        proc = subprocess.Popen(self._java(classpath, "kafka.Kafka", str(config),
                                           home=broker.home),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self._remember(StackProcess("kafka", broker.node_id, broker.endpoint.port, proc.pid))
        return (f"kafka {broker.node_id}: started (pid {proc.pid}) on "
                f"{broker.endpoint.host}:{broker.endpoint.port}")

    def start_kafka(self) -> str:
        """Every broker that is not running (one line each)."""
        self._check_options()
        return "\n".join(self.start_broker(broker) for broker in self.brokers)

    # Redis -------------------------------------------------------------------------
    def _redis_binary(self) -> str:
        found = shutil.which("redis-server")
        if found:
            return found
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log.info("installing redis-server with apt-get")
            subprocess.run(["apt-get", "update", "-qq"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            found = shutil.which("redis-server")
            if found:
                return found
        raise DevStackError("redis-server is missing: install it (sudo apt-get install "
                            "redis-server) or point RANKFLOW_REDIS at a running Redis")

    def _start_redis_process(self, role: str, ident: int, endpoint: Endpoint,
                             args: list[str], logfile: Path) -> str:
        running = self._free(role, ident, endpoint, "RANKFLOW_REDIS")
        if running:
            return running
        binary = self._redis_binary()
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        out = logfile.open("ab")
        proc = subprocess.Popen([binary, *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        process = StackProcess(role, ident, endpoint.port, proc.pid)
        self._remember(process)
        return f"{process.name}: started (pid {proc.pid}) on {endpoint.host}:{endpoint.port}"

    def _server_args(self, endpoint: Endpoint, folder: Path) -> list[str]:
        folder.mkdir(parents=True, exist_ok=True)
        return ["--bind", endpoint.host, "--port", str(endpoint.port), "--dir", str(folder),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--protected-mode", "no"]

    def _cluster_home(self, endpoint: Endpoint) -> Path:
        return self.redis_dir / "cluster" / f"node-{endpoint.port}"

    def start_redis_cluster(self) -> str:
        """The cluster's nodes that are not running (one line each); `wait_redis` joins
        them into one cluster the first time."""
        lines = []
        for n, endpoint in enumerate(self.cluster_nodes):
            home = self._cluster_home(endpoint)
            lines.append(self._start_redis_process(
                "redis-cluster", n, endpoint,
                [*self._server_args(endpoint, home), "--cluster-enabled", "yes",
                 "--cluster-config-file", str(home / "nodes.conf"),
                 "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS)],
                home / "redis.log"))
        return "\n".join(lines)

    def _cluster_info(self, endpoint: Endpoint) -> dict[str, str]:
        done = subprocess.run(["redis-cli", "-h", endpoint.host, "-p", str(endpoint.port),
                               "cluster", "info"], capture_output=True, text=True, check=False)
        pairs = (line.strip().partition(":") for line in done.stdout.splitlines())
        return {k: v for k, _, v in pairs if k}

    def _cluster_ok(self) -> bool:
        """Every node sees the whole cluster, every slot served."""
        want = str(len(self.cluster_nodes))
        for endpoint in self.cluster_nodes:
            info = self._cluster_info(endpoint)
            if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != want:
                return False
        return True

    def _create_cluster(self) -> None:
        """`redis-cli --cluster create` once: nodes that know no other node yet."""
        if any(self._cluster_info(e).get("cluster_known_nodes", "1") != "1"
               for e in self.cluster_nodes):
            return  # formed before (nodes.conf): the nodes find each other again
        if shutil.which("redis-cli") is None:
            raise DevStackError("redis-cli is missing: apt-get install redis-tools")
        done = subprocess.run(
            ["redis-cli", "--cluster", "create",
             *(f"{e.host}:{e.port}" for e in self.cluster_nodes),
             "--cluster-replicas", str(CLUSTER_REPLICAS), "--cluster-yes"],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DevStackError(f"redis-cli --cluster create failed:\n{done.stdout[-2000:]}"
                                f"{done.stderr[-2000:]}")

    def start_redis(self) -> str:
        """Redis; with --sentinel also its replica and three sentinels; with
        --redis-cluster the cluster's nodes instead (one line each)."""
        if self.redis_cluster:
            return self.start_redis_cluster()
        lines = [self._start_redis_process(
            "redis", 0, self.redis, self._server_args(self.redis, self.redis_dir),
            self.redis_dir / "redis.log")]
        if not self.sentinel:
            return lines[0]
        replica_dir = self.redis_dir / "replica"
        lines.append(self._start_redis_process(
            "redis-replica", 1, self.redis_replica,
            [*self._server_args(self.redis_replica, replica_dir),
             "--replicaof", self.redis.host, str(self.redis.port)],
            replica_dir / "redis.log"))
        for n, endpoint in enumerate(self.sentinels, 1):
            folder = self.redis_dir / f"sentinel-{n}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"  # the sentinel rewrites it: written once
            if not conf.exists():
                conf.write_text(SENTINEL_CONF.format(
                    host=endpoint.host, port=endpoint.port, dir=folder,
                    master=SENTINEL_MASTER, redis_host=self.redis.host,
                    redis_port=self.redis.port, quorum=SENTINEL_QUORUM))
            lines.append(self._start_redis_process(
                "sentinel", n, endpoint, [str(conf), "--sentinel"], folder / "sentinel.log"))
        return "\n".join(lines)

    # Both --------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> list[str]:
        """Start whatever of this stack is not running, and wait until it answers."""
        self._check_options()
        lines = [*self.start_redis().splitlines(), *self.start_kafka().splitlines()]
        self.wait_ready(timeout)
        return lines

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.wait_redis(timeout)
        self.wait_kafka(max(1.0, deadline - time.monotonic()))

    def _broker_ready(self, broker: Broker) -> bool:
        """The broker answers a metadata request naming every broker of the cluster (an
        open port is not enough; topics of RF 3 need all three registered)."""
        if not broker.endpoint.answers():
            return False
        return asyncio.run(_kafka_answers(f"{broker.endpoint.host}:{broker.endpoint.port}",
                                          len(self.brokers)))

    def down(self) -> list[str]:
        """Stop every process the record (and an older rankflow's pid files) names:
        brokers first, then Redis."""
        processes = self.recorded()
        kafka = [p for p in processes if p.role == "kafka"]
        lines = _stop_all(kafka, 30.0) if kafka else []
        lines += _stop_all([p for p in processes if p.role != "kafka"], 30.0)
        for pid_file in (self.kafka_dir / "kafka.pid", self.redis_dir / "redis.pid"):
            pid_file.unlink(missing_ok=True)
        self.record.unlink(missing_ok=True)
        return lines

    def reset(self) -> list[str]:
        """Stop all and delete Kafka's data (every topic, of every cluster size); the jars
        stay. For a dev broker grown slow to start by the topics of many test runs
        (tests/test_devstack.py::test_reset_deletes_the_brokers_data_and_keeps_the_jars)."""
        lines = self.down()
        for data in [self.kafka_dir / "data", *sorted(self.kafka_dir.glob("cluster-*"))]:
            if data.exists():
                shutil.rmtree(data)
                lines.append(f"kafka: deleted {data}")
        return lines

    def stop_kafka(self, timeout: float = 30.0) -> str:
        """SIGTERM every broker (a controlled shutdown), SIGKILL after `timeout` seconds."""
        kafka = [p for p in self.recorded() if p.role == "kafka"]
        (self.kafka_dir / "kafka.pid").unlink(missing_ok=True)
        return "\n".join(_stop_all(kafka, timeout))

    def stop_redis(self, timeout: float = 30.0) -> str:
        redis = [p for p in self.recorded() if p.role == "redis"]
        (self.redis_dir / "redis.pid").unlink(missing_ok=True)
        return "\n".join(_stop_all(redis, timeout))

    def wait_kafka(self, timeout: float) -> None:
        """Until every broker answers (`_broker_ready`); an error if one exited."""
        deadline = time.monotonic() + timeout
        for broker in self.brokers:
            self._wait_for(f"kafka {broker.node_id}", partial(self._broker_ready, broker),
                           partial(self._exited, "kafka", broker.node_id),
                           broker.logfile, max(1.0, deadline - time.monotonic()))

    def wait_redis(self, timeout: float) -> None:
        if self.redis_cluster:
            self.wait_redis_cluster(timeout)
            return
        self._wait_for("redis", self.redis.answers, partial(self._exited, "redis", 0),
                       self.redis_dir / "redis.log", timeout)
        if not self.sentinel:
            return
        self._wait_for("redis-replica", self.redis_replica.answers,
                       partial(self._exited, "redis-replica", 1),
                       self.redis_dir / "replica" / "redis.log", timeout)
        for n, endpoint in enumerate(self.sentinels, 1):
            self._wait_for(f"sentinel {n}", endpoint.answers,
                           partial(self._exited, "sentinel", n),
                           self.redis_dir / f"sentinel-{n}" / "sentinel.log", timeout)

    def wait_redis_cluster(self, timeout: float) -> None:
        """Until every node answers, then (formed once) until the cluster is ok."""
        for n, endpoint in enumerate(self.cluster_nodes):
            self._wait_for(f"redis-cluster {n}", endpoint.answers,
                           partial(self._exited, "redis-cluster", n),
                           self._cluster_home(endpoint) / "redis.log", timeout)
        self._create_cluster()
        first = self.cluster_nodes[0]
        self._wait_for("redis cluster", self._cluster_ok,
                       partial(self._exited, "redis-cluster", 0),
                       self._cluster_home(first) / "redis.log", timeout)

    @property
    def cluster_url(self) -> str:
        first = self.cluster_nodes[0]
        return f"redis://{first.host}:{first.port}/0"

    def _exited(self, role: str, ident: int) -> bool:
        return self._running(role, ident) is None

    def _wait_for(self, name: str, ready: Callable[[], bool], exited: Callable[[], bool],
                  logfile: Path, timeout: float) -> None:
        """Until `ready()`; an error if the process exits, or after `timeout` seconds in
        which its log did not grow. A broker still loading thousands of partitions logs
        each one, so it is waited for (up to `STARTUP_LIMIT`); a stuck one is not
        (tests/test_devstack.py)."""
        start = time.monotonic()
        deadline = start + timeout
        size = _size(logfile)
        while time.monotonic() < deadline:
            if ready():
                return
            if exited():
                raise DevStackError(f"{name} exited during start-up; see {logfile}")
            time.sleep(0.5)
            grown = _size(logfile)
            if grown != size:
                size = grown
                deadline = min(max(deadline, time.monotonic() + timeout),
                               start + max(timeout, STARTUP_LIMIT))
        raise DevStackError(f"{name} did not answer within {time.monotonic() - start:.0f}s; "
                            f"see {logfile}")

    def processes(self) -> list[dict[str, int | str | None]]:
        """`dev status --json`: each recorded process, its pid None when not running."""
        return [{"role": p.role, "id": p.id, "port": p.port,
                 "pid": p.pid if p.alive() else None} for p in self.recorded()]

    def status(self) -> list[str]:
        lines = []
        for process in self.recorded():
            endpoint = Endpoint(self.kafka.host if process.role == "kafka" else self.redis.host,
                                process.port)
            answering = "answering" if endpoint.answers() else "not answering"
            state = f"running (pid {process.pid})" if process.alive() else "stopped"
            lines.append(f"{process.name}: {state}, {endpoint.host}:{endpoint.port} "
                         f"{answering}")
        return lines or ["nothing recorded: `rankflow dev up` starts the stack"]
