"""Settings: defaults of contract §6, and bad values stop start-up naming the variable."""

import pytest

from streams.core.periods import parse_periods
from streams.ops.settings import Settings, SettingsError, load_settings


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("KAFKA", "REDIS", "PREFIX", "TOPIC_PREFIX", "APP_ID", "CLOCK", "PERIODS",
                 "PARTITIONS", "API_PORT"):
        monkeypatch.delenv(f"RANKFLOW_{name}", raising=False)
    s = Settings()
    assert (s.kafka, s.redis, s.prefix, s.topic_prefix, s.app_id, s.clock, s.periods,
            s.partitions, s.api_port) == ("127.0.0.1:9092", "redis://127.0.0.1:6379/0", "rf:",
                                          "", "rankflow", "wall", "", 8, 8080)


@pytest.mark.parametrize("name,value", [
    ("RANKFLOW_PARTITIONS", "zero"), ("RANKFLOW_PARTITIONS", "0"), ("RANKFLOW_CLOCK", "sun"),
    ("RANKFLOW_KAFKA", "nohost"), ("RANKFLOW_REDIS", "http://x"),
    ("RANKFLOW_PERIODS", "q1=2018-01-01"), ("RANKFLOW_PERIODS", "all=2018-01-01/2018-02-01"),
    ("RANKFLOW_PERIODS", "q=2018-02-01/2018-01-01"), ("RANKFLOW_API_PORT", "70000"),
    ("RANKFLOW_DEDUP_MAX_IDS", "0"), ("RANKFLOW_DEDUP_MAX_IDS", "many"),
])
def test_bad_settings_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert name in str(info.value)


@pytest.mark.parametrize("value", ["0", "0.5", "601", "soon"])
def test_a_bad_recorder_lease_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("RANKFLOW_API_RECORDER_LEASE", value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "RANKFLOW_API_RECORDER_LEASE" in str(info.value)


def test_periods_parse():
    (q,) = parse_periods("2018q1q3=2018-01-01/2018-10-01")
    assert q.name == "2018q1q3" and q.start_ms == 1514764800000 and q.end_ms == 1538352000000
    assert q.days == 273


def test_scoring_defaults_and_overrides(monkeypatch):
    from streams.core.scoring import DEFAULT_SCORING, scoring_config

    assert scoring_config(Settings()) == DEFAULT_SCORING
    monkeypatch.setenv("RANKFLOW_WEIGHT_VIEWS", "0.5")
    monkeypatch.setenv("RANKFLOW_WEIGHT_UPLOADS", "0.0")
    monkeypatch.setenv("RANKFLOW_CAP_FANS", "1000")
    config = scoring_config(load_settings())
    assert (config.weight_views, config.weight_uploads, config.cap_fans) == (0.5, 0.0, 1000)


@pytest.mark.parametrize("env,named", [
    ({"RANKFLOW_WEIGHT_VIEWS": "0.9"}, "RANKFLOW_WEIGHT_VIEWS"),
    ({"RANKFLOW_WEIGHT_LIKES": "-0.1"}, "RANKFLOW_WEIGHT_LIKES"),
    ({"RANKFLOW_CAP_VIEWS_PER_DAY": "0"}, "RANKFLOW_CAP_VIEWS_PER_DAY"),
    ({"RANKFLOW_CAP_FANS": "lots"}, "RANKFLOW_CAP_FANS"),
])
def test_bad_scoring_settings_stop_start_up(monkeypatch, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)


def test_kafka_durability_defaults_leave_replication_to_the_cluster():
    s = Settings()
    assert (s.replication_factor, s.min_insync_replicas, s.kafka_acks) == (None, None, "all")


@pytest.mark.parametrize("env,named", [
    ({"RANKFLOW_REPLICATION_FACTOR": "0"}, "RANKFLOW_REPLICATION_FACTOR"),
    ({"RANKFLOW_MIN_INSYNC_REPLICAS": "many"}, "RANKFLOW_MIN_INSYNC_REPLICAS"),
    ({"RANKFLOW_KAFKA_ACKS": "0"}, "RANKFLOW_KAFKA_ACKS"),
    ({"RANKFLOW_REPLICATION_FACTOR": "2", "RANKFLOW_MIN_INSYNC_REPLICAS": "3"},
     "RANKFLOW_MIN_INSYNC_REPLICAS=3 exceeds RANKFLOW_REPLICATION_FACTOR=2"),
])
def test_bad_kafka_durability_settings_stop_start_up(monkeypatch, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)


@pytest.mark.parametrize("env,named", [
    ({"RANKFLOW_REDIS_SENTINELS": "10.0.0.1:26379", "RANKFLOW_REDIS_SENTINEL_MASTER": "m"},
     "RANKFLOW_REDIS_SENTINELS"),
    ({"RANKFLOW_REDIS": "unix:///tmp/redis.sock"}, "RANKFLOW_REDIS"),
    ({"RANKFLOW_REDIS": "redis://127.0.0.1:7000/3"}, "database 0"),
    ({"RANKFLOW_PREFIX": "{rf}:"}, "RANKFLOW_PREFIX"),
    ({"RANKFLOW_MILESTONES": "podium=top:3:24h:all"}, "RANKFLOW_MILESTONES"),
])
def test_bad_cluster_settings_stop_start_up(monkeypatch, tmp_path, env, named):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RANKFLOW_REDIS_CLUSTER", "true")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value) and "RANKFLOW_REDIS_CLUSTER" in str(info.value)


def test_a_cluster_node_url_is_accepted(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RANKFLOW_REDIS_CLUSTER", "true")
    monkeypatch.setenv("RANKFLOW_REDIS", "redis://127.0.0.1:7000/0")
    assert load_settings().redis_cluster is True
