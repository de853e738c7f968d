"""docker-compose.yml cannot run here (no Docker engine); check what it declares."""

from pathlib import Path

import yaml

from streams.ops.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_health_checks():
    services = compose()["services"]
    assert {"kafka", "redis", "worker", "api"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:3.9")
    for name in ("kafka", "redis", "api", "worker"):
        assert "healthcheck" in services[name], name
    assert services["worker"]["command"] == ["worker"]
    assert services["api"]["command"] == ["api"]
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_kafka_runs_kraft_with_single_replica_internal_topics():
    env = compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_ports():
    services = compose()["services"]
    assert "6379:6379" in services["redis"]["ports"]
    assert "8080:8080" in services["api"]["ports"]
    assert "9094:9094" in services["kafka"]["ports"]


def test_rankflow_services_share_every_contract_setting():
    services = compose()["services"]
    contract = {f"RANKFLOW_{name.upper()}" for name in (
        "kafka", "redis", "prefix", "topic_prefix", "app_id", "clock", "periods", "partitions",
        "api_port")}
    for name in ("worker", "api", "topics"):
        env = services[name]["environment"]
        assert contract <= set(env), name
        assert env["RANKFLOW_KAFKA"] == "kafka:9092"
        assert env["RANKFLOW_REDIS"] == "redis://redis:6379/0"
        assert Settings(**{k[9:].lower(): v for k, v in env.items()}).partitions == 8


def test_the_worker_healthcheck_probes_its_health_endpoint():
    worker = compose()["services"]["worker"]
    port = Settings(**{k[9:].lower(): v for k, v in worker["environment"].items()}).health_port
    assert port == 8081
    probe = " ".join(worker["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/" in probe and "'live', 'ready'" in probe
