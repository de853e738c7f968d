"""The topic layout rankflow creates and the layouts it refuses (no broker: small fakes)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from streams.core.topics import ACCOUNT_TABLE, PARTITION_TABLE, Topics
from streams.kafka import admin
from streams.kafka.admin import (
    FoundTopic,
    Replication,
    TopicLayoutError,
    declarations,
    layout_problems,
    replication_for,
    under_replicated,
)

TOPICS = Topics("t.", "app")
CHANGELOGS = [TOPICS.changelog(ACCOUNT_TABLE), TOPICS.changelog(PARTITION_TABLE)]


@pytest.mark.parametrize(("brokers", "want"), [(1, Replication(1, 1)), (2, Replication(1, 1)),
                                               (3, Replication(3, 2)), (5, Replication(3, 2))])
def test_the_default_replication_follows_the_clusters_size(brokers, want):
    assert replication_for(brokers) == want


def test_given_settings_win_over_the_defaults():
    assert replication_for(3, factor=2) == Replication(2, 1)
    assert replication_for(5, factor=5, min_insync=3) == Replication(5, 3)
    assert replication_for(3, min_insync=1) == Replication(3, 1)


def test_a_replication_factor_beyond_the_cluster_stops_start_up_naming_the_setting():
    with pytest.raises(TopicLayoutError, match="RANKFLOW_REPLICATION_FACTOR=3 needs 3 brokers; "
                                               "the cluster has 1"):
        replication_for(1, factor=3)
    with pytest.raises(TopicLayoutError, match="RANKFLOW_MIN_INSYNC_REPLICAS=2 exceeds"):
        replication_for(1, min_insync=2)


def test_every_topic_is_declared_with_the_replication_and_min_insync():
    declared = {t.name: t for t in declarations(TOPICS, 8, Replication(3, 2))}
    assert set(declared) == {*TOPICS.sources, TOPICS.dlq, *CHANGELOGS}
    for topic in declared.values():
        assert (topic.num_partitions, topic.replication_factor) == (8, 3)
        assert topic.topic_configs["min.insync.replicas"] == "2"
    for name in (*CHANGELOGS, TOPICS.accounts):
        assert declared[name].topic_configs["cleanup.policy"] == "compact"
    for name in CHANGELOGS:  # compacted while they grow, not only past 1 GiB
        assert declared[name].topic_configs["segment.bytes"] == str(64 * 1024 * 1024)
    assert "segment.bytes" not in declared[TOPICS.accounts].topic_configs


def good_layout(partitions: int = 8) -> dict[str, FoundTopic]:
    found = {name: FoundTopic(partitions, 3) for name in (*TOPICS.sources, TOPICS.dlq)}
    found.update({name: FoundTopic(partitions, 3, "compact") for name in CHANGELOGS})
    return found


def test_a_co_partitioned_layout_with_compacted_changelogs_has_no_problem():
    assert layout_problems(good_layout(), TOPICS, 8) == []
    found = good_layout()
    found[CHANGELOGS[0]] = FoundTopic(8, 3, "compact,delete")
    assert layout_problems(found, TOPICS, 8) == []


def test_a_changelog_that_is_not_compacted_is_named():
    found = good_layout()
    found[CHANGELOGS[1]] = FoundTopic(8, 3, "delete")
    assert layout_problems(found, TOPICS, 8) == [
        f"{CHANGELOGS[1]}: cleanup.policy=delete, a changelog must be compacted "
        f"(cleanup.policy=compact) or the state in its old segments is deleted"]


def test_a_changelog_partitioned_unlike_the_input_topics_is_named():
    found = good_layout()
    found[CHANGELOGS[0]] = FoundTopic(4, 3, "compact")
    assert layout_problems(found, TOPICS, 8) == [
        f"{CHANGELOGS[0]}: 4 partitions, the input topics have 8: a partition's state must "
        f"live on the partition of its events"]


def test_state_made_for_other_input_topics_is_named_against_them():
    """Input topics of 8 partitions, RANKFLOW_PARTITIONS=4: the inputs are named against
    the setting, the (new) 4-partition changelogs against the inputs."""
    found = good_layout(8)
    found.update({name: FoundTopic(4, 3, "compact") for name in CHANGELOGS})
    problems = layout_problems(found, TOPICS, 4)
    assert f"{TOPICS.event('view')}: 8 partitions, RANKFLOW_PARTITIONS=4 (the topics are " \
           f"co-partitioned by account_id)" in problems
    assert [p for p in problems if p.startswith(CHANGELOGS[0])] == [
        f"{CHANGELOGS[0]}: 4 partitions, the input topics have 8: a partition's state must "
        f"live on the partition of its events"]
    assert len(problems) == len(TOPICS.sources) + 1 + len(CHANGELOGS)  # + the dead letters


def test_under_replicated_topics_are_listed():
    found = good_layout()
    found[TOPICS.dlq] = FoundTopic(8, 1)
    assert under_replicated(found, Replication(3, 2)) == [
        f"{TOPICS.dlq}: 1 replica(s), RANKFLOW_REPLICATION_FACTOR=3"]
    assert under_replicated(found, Replication(1, 1)) == []


class FakeAdmin:
    """The admin client's calls `ensure_topics` makes, on an in-memory cluster."""

    def __init__(self, brokers: int, existing: dict[str, FoundTopic]) -> None:
        self.brokers = brokers
        self.topics = dict(existing)
        self.created: list[Any] = []

    def __call__(self, **_: Any) -> FakeAdmin:
        return self

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": n} for n in range(1, self.brokers + 1)]}

    async def list_topics(self) -> list[str]:
        return list(self.topics)

    async def create_topics(self, new: list[Any]) -> None:
        self.created += new
        for t in new:
            self.topics[t.name] = FoundTopic(t.num_partitions, t.replication_factor,
                                             t.topic_configs.get("cleanup.policy", "delete"))

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"topic": n, "partitions": [{"partition": p, "replicas": list(
            range(self.topics[n].replicas))} for p in range(self.topics[n].partitions)]}
                for n in names if n in self.topics]

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        return [SimpleNamespace(resources=[
            (0, None, 2, r.name, [("cleanup.policy", self.topics[r.name].cleanup_policy,
                                   False, False, False)]) for r in resources])]


def ensure(fake: FakeAdmin, monkeypatch, **kwargs: Any) -> admin.EnsuredTopics:
    monkeypatch.setattr(admin, "AIOKafkaAdminClient", fake)
    return asyncio.run(admin.ensure_topics(["fake:9092"], TOPICS, 8, **kwargs))


def test_topics_are_created_with_rf_3_on_a_three_broker_cluster(monkeypatch):
    fake = FakeAdmin(3, {})
    ensured = ensure(fake, monkeypatch)
    assert ensured.replication == Replication(3, 2)
    assert {t.replication_factor for t in fake.created} == {3}
    assert sorted(ensured.created) == sorted([*TOPICS.sources, TOPICS.dlq, *CHANGELOGS])


def test_an_uncompacted_changelog_stops_start_up_naming_topic_and_problem(monkeypatch):
    fake = FakeAdmin(1, {CHANGELOGS[0]: FoundTopic(8, 1, "delete")})
    with pytest.raises(TopicLayoutError, match=rf"{CHANGELOGS[0]}: cleanup.policy=delete, "
                                               r"a changelog must be compacted"):
        ensure(fake, monkeypatch)


def test_a_changelog_with_other_partitions_stops_start_up(monkeypatch):
    fake = FakeAdmin(1, {CHANGELOGS[1]: FoundTopic(3, 1, "compact")})
    with pytest.raises(TopicLayoutError, match=rf"{CHANGELOGS[1]}: 3 partitions, the input "
                                               r"topics have 8"):
        ensure(fake, monkeypatch)


class LaggingAdmin(FakeAdmin):
    """A cluster whose broker asked first does not know the new topics' configs yet."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.unknown_for = 2  # describes

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        if self.unknown_for:
            self.unknown_for -= 1
            return [SimpleNamespace(resources=[(3, "unknown topic", 2, r.name, [])
                                               for r in resources])]
        return await super().describe_configs(resources)


def test_a_broker_that_does_not_know_new_topics_yet_is_asked_again(monkeypatch):
    monkeypatch.setattr(admin, "DESCRIBE_PAUSE", 0.0)
    fake = LaggingAdmin(3, {})
    assert ensure(fake, monkeypatch).replication == Replication(3, 2)
    assert fake.unknown_for == 0
    lagging = LaggingAdmin(3, {CHANGELOGS[0]: FoundTopic(8, 3, "delete")})
    with pytest.raises(TopicLayoutError, match=r"cleanup\.policy=delete"):
        ensure(lagging, monkeypatch)
