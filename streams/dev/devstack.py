"""`rankflow dev up|down|status`: a real Apache Kafka (KRaft) and Redis on loopback.

Kafka's jars come from Maven Central through Maven (`org.apache.kafka:kafka_2.13`),
resolved once into `<cache>/kafka-<version>/`; storage is formatted once; the broker
runs as `java kafka.Kafka` in combined broker+controller mode. Redis is Debian's
`redis-server` (installed with apt-get when missing and we are root). Data and logs
live under the cache folder; each process is stopped by the id it was started with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
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
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=5000
"""
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


async def _kafka_answers(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
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


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:  # a zombie (exited, not reaped) is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        if state == "Z":
            return None
    except OSError:
        pass
    return pid


def _running(name: str, pid_file: Path, endpoint: Endpoint, setting: str) -> str | None:
    """A line saying it runs already, None when free to start; an error if a stranger
    holds its port."""
    pid = _pid_alive(pid_file)
    if pid is not None:
        return f"{name}: already running (pid {pid}) on {endpoint.port}"
    if endpoint.answers():
        raise DevStackError(f"port {endpoint.port} is taken by a process rankflow did not "
                            f"start; stop it or set {setting}")
    return None


def _stop_pid(pid_file: Path, name: str, timeout: float = 30.0) -> str:
    pid = _pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return f"{name}: not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid_file) is not None:
        time.sleep(0.2)
    if _pid_alive(pid_file) is not None:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return f"{name}: stopped (pid {pid})"


class DevStack:
    """The local Kafka + Redis for development, tests and the demo."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.cache_dir)
        self.kafka_dir = self.root / f"kafka-{settings.kafka_version}"
        self.redis_dir = self.root / "redis"
        host, _, port = settings.bootstrap_servers[0].rpartition(":")
        self.kafka = Endpoint(host, int(port))
        self.controller = Endpoint(host, int(port) + 1)
        url = urlparse(settings.redis)
        self.redis = Endpoint(url.hostname or "127.0.0.1", url.port or 6379)

    @property
    def _log4j2(self) -> bool:
        return int(self.settings.kafka_version.split(".")[0]) >= 4

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

    def _java(self, classpath: str, *args: str) -> list[str]:
        logs = self.kafka_dir / "logs"
        if self._log4j2:
            logging_opt = f"-Dlog4j2.configurationFile={self.kafka_dir / 'log4j2.properties'}"
        else:
            logging_opt = f"-Dlog4j.configuration=file:{self.kafka_dir / 'log4j.properties'}"
        return ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dkafka.logs.dir={logs}", logging_opt, "-cp", classpath, *args]

    def _configure_kafka(self) -> Path:
        data = self.kafka_dir / "data"
        logs = self.kafka_dir / "logs"
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        config = self.kafka_dir / "server.properties"
        config.write_text(SERVER_PROPERTIES.format(
            host=self.kafka.host, port=self.kafka.port,
            controller_port=self.controller.port, data=data))
        (self.kafka_dir / "log4j.properties").write_text(
            LOG4J1_PROPERTIES.format(log=logs / "server.log"))
        (self.kafka_dir / "log4j2.properties").write_text(
            LOG4J2_PROPERTIES.format(log=logs / "server.log"))
        return config

    def _format_storage(self, classpath: str, config: Path) -> None:
        data = self.kafka_dir / "data"
        if (data / "meta.properties").exists():
            return
        uuid = subprocess.run(self._java(classpath, "kafka.tools.StorageTool", "random-uuid"),
                              capture_output=True, text=True, check=True).stdout.split()[-1]
        done = subprocess.run(
            self._java(classpath, "kafka.tools.StorageTool", "format", "-t", uuid,
                       "-c", str(config)), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DevStackError(f"formatting Kafka storage failed:\n{done.stdout}{done.stderr}")

    def start_kafka(self) -> str:
        pid_file = self.kafka_dir / "kafka.pid"
        running = _running("kafka", pid_file, self.kafka, "RANKFLOW_KAFKA")
        if running:
            return running
        classpath = self._classpath()
        config = self._configure_kafka()
        self._format_storage(classpath, config)
        out = (self.kafka_dir / "logs" / "stdout.log").open("ab")
        proc = subprocess.Popen(self._java(classpath, "kafka.Kafka", str(config)),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        pid_file.write_text(str(proc.pid))
        return f"kafka: started (pid {proc.pid}) on {self.kafka.host}:{self.kafka.port}"

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

    def start_redis(self) -> str:
        pid_file = self.redis_dir / "redis.pid"
        running = _running("redis", pid_file, self.redis, "RANKFLOW_REDIS")
        if running:
            return running
        binary = self._redis_binary()
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        out = (self.redis_dir / "redis.log").open("ab")
        proc = subprocess.Popen(
            [binary, "--bind", self.redis.host, "--port", str(self.redis.port),
             "--dir", str(self.redis_dir), "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--protected-mode", "no"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        pid_file.write_text(str(proc.pid))
        return f"redis: started (pid {proc.pid}) on {self.redis.host}:{self.redis.port}"

    # Both --------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> list[str]:
        lines = [self.start_redis(), self.start_kafka()]
        self.wait_ready(timeout)
        return lines

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.wait_redis(timeout)
        self.wait_kafka(max(1.0, deadline - time.monotonic()))

    def _kafka_ready(self) -> bool:
        """The broker answers a metadata request (an open port is not enough)."""
        if not self.kafka.answers():
            return False
        return asyncio.run(_kafka_answers(f"{self.kafka.host}:{self.kafka.port}"))

    def down(self) -> list[str]:
        return [self.stop_kafka(), self.stop_redis()]

    def reset(self) -> list[str]:
        """Stop both and delete Kafka's data (every topic); the jars stay. For a dev broker
        grown slow to start by the topics of many test runs
        (tests/test_devstack.py::test_reset_deletes_the_brokers_data_and_keeps_the_jars)."""
        lines = self.down()
        data = self.kafka_dir / "data"
        if data.exists():
            shutil.rmtree(data)
            lines.append(f"kafka: deleted {data}")
        return lines

    def stop_kafka(self, timeout: float = 30.0) -> str:
        """SIGTERM (a controlled shutdown), SIGKILL after `timeout` seconds."""
        return _stop_pid(self.kafka_dir / "kafka.pid", "kafka", timeout)

    def stop_redis(self, timeout: float = 30.0) -> str:
        return _stop_pid(self.redis_dir / "redis.pid", "redis", timeout)

    def wait_kafka(self, timeout: float) -> None:
        """Until the broker answers a metadata request; an error if it exited."""
        self._wait_for("kafka", self._kafka_ready, self.kafka_dir / "kafka.pid",
                       self.kafka_dir / "logs" / "server.log", timeout)

    def wait_redis(self, timeout: float) -> None:
        self._wait_for("redis", self.redis.answers, self.redis_dir / "redis.pid",
                       self.redis_dir / "redis.log", timeout)

    def _wait_for(self, name: str, ready: Callable[[], bool], pid_file: Path, logfile: Path,
                  timeout: float) -> None:
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
            if pid_file.exists() and _pid_alive(pid_file) is None:
                raise DevStackError(f"{name} exited during start-up; see {logfile}")
            time.sleep(0.5)
            grown = _size(logfile)
            if grown != size:
                size = grown
                deadline = min(max(deadline, time.monotonic() + timeout),
                               start + max(timeout, STARTUP_LIMIT))
        raise DevStackError(f"{name} did not answer within {time.monotonic() - start:.0f}s; "
                            f"see {logfile}")

    def status(self) -> list[str]:
        lines = []
        for name, pid_file, endpoint in (
            ("kafka", self.kafka_dir / "kafka.pid", self.kafka),
            ("redis", self.redis_dir / "redis.pid", self.redis),
        ):
            pid = _pid_alive(pid_file)
            answering = "answering" if endpoint.answers() else "not answering"
            state = f"running (pid {pid})" if pid else "stopped"
            lines.append(f"{name}: {state}, {endpoint.host}:{endpoint.port} {answering}")
        return lines
