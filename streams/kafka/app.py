"""The faust app: broker, tables and topics, wired from settings. Wiring only.

* The broker URL uses the `rankflow://` scheme: faust's aiokafka transport with batch
  delivery (streams/kafka/transport.py; tests/test_app.py::test_the_app_uses_the_batch_transport).
* Two changelog-backed tables hold the state: `account-state` (one record per account)
  and `partition-state` (dedup segments, each carrying the partition's counters and
  watermarks, and the chunks of its campaign series). Records are written with an
  explicit partition, the partition of the source records, so state partitions exactly
  like the input topics.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import faust
from faust.serializers import codecs
from faust.tables import TableManager
from faust.types import TP
from mode.utils.queues import ThrowableQueue

from streams.core.aggregate import Topics
from streams.core.series import ChunkRecord, decode_partition_record
from streams.core.state import (
    AccountRecord,
    AccountState,
    Overtaken,
    PartsAhead,
    StatePart,
    decode_record,
    epoch_of,
    is_part_key,
)
from streams.core.topics import ACCOUNT_TABLE, PARTITION_TABLE
from streams.kafka.admin import DEAD_LETTER_MAX_BYTES, SINGLE_REPLICA, Replication
from streams.kafka.transport import BatchTopic
from streams.ops.connections import faust_credentials
from streams.ops.settings import Settings

log = logging.getLogger(__name__)


class Utf8Codec(codecs.Codec):
    """Keys as text: bytes <-> str, nothing else (no JSON quoting)."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.encode() if isinstance(obj, str) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return s.decode()


class AccountStateCodec(codecs.Codec):
    """Account records and part records (AccountTable assembles them)."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.encode() if isinstance(obj, AccountState) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_record(s)


def release(store: Any, kept: set[TP], partition_of: Callable[[Any], int],
            changed: Counter[int]) -> int:
    """Drop a table's values of the partitions it no longer holds, when recovery ends.

    faust's in-memory store drops only the keys it read from the changelog; the values
    this worker wrote itself stayed, their partition long gone to another worker
    (tests/test_app.py::test_the_tables_free_the_partitions_they_no_longer_hold)."""
    partitions = {tp.partition for tp in kept}
    data = store.data
    gone = [(key, p) for key, value in data.items()
            if (p := partition_of(value)) not in partitions]
    for key, p in gone:
        del data[key]
        changed[p] += 1
    if gone:
        log.info("%d values of partitions moved away freed", len(gone))
    return len(gone)


def report_read(table: str, read: Counter[int], active: set[TP]) -> None:
    """Log the changelog records read for each partition this recovery held, and start
    counting anew (a partition kept through a rebalance reads only what others wrote
    since: streams/kafka/written.py; tests/integration/test_concurrent_start.py)."""
    log.info("%s: changelog records read per partition: %s", table,
             {p: read[p] for p in sorted(tp.partition for tp in active)})
    read.clear()


class AccountTable(faust.Table):
    """The account-state table: each account whole, assembled from its record and the
    part records read before it (streams/core/state.py; tests/test_app.py).

    A record of an older owner epoch than the account's state is not applied: a stalled
    worker sent it after the new owner's; its account is marked `overtaken`, for the
    owner to write again (streams/worker/ownership.py; tests/integration/test_fencing.py).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ahead = PartsAhead()
        self.overtaken = Overtaken()
        #: changelog records read per partition since the last recovery ended
        self.read: Counter[int] = Counter()
        #: records applied and values freed per partition, ever: a runtime kept through
        #: a rebalance still matches the table while this stays (ownership.py)
        self.changed: Counter[int] = Counter()

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        self.data.apply_changelog_batch(self._accounts(batch), to_key=self._to_key,
                                        to_value=self._whole)

    def _accounts(self, batch: Iterable[Any]) -> Iterator[Any]:
        read, changed = self.read, self.changed
        for event in batch:
            read[event.message.partition] += 1
            changed[event.message.partition] += 1
            value = event.value
            account_id = value.account_id if isinstance(value, StatePart) else (
                value.state.account_id if isinstance(value, AccountRecord) else None)
            if account_id is not None:
                current = self.data.get(account_id)
                if not self.overtaken.admits(account_id, current and current.epoch,
                                             epoch_of(value)):
                    continue
            if is_part_key(event.key):
                self.ahead.hold(event.key, value)
            else:
                yield event

    def _whole(self, value: Any) -> Any:
        return self.ahead.account(value) if isinstance(value, AccountRecord) else value

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        release(self.data, active_tps | standby_tps, lambda state: state.partition,
                self.changed)
        report_read(self.name, self.read, active_tps)
        await super().on_recovery_completed(active_tps, standby_tps)

    def take_overtaken(self, partitions: set[int]) -> list[AccountState]:
        """The overtaken accounts of these partitions, no longer marked."""
        found = [state for account_id in self.overtaken.keys
                 if (state := self.data.get(account_id)) is not None
                 and state.partition in partitions]
        self.overtaken.keys.difference_update(state.account_id for state in found)
        return found


class PartitionTable(faust.Table):
    """The partition-state table: dedup segments, and campaign-series chunks: a chunk
    record of an older owner epoch than the chunk's state is not applied, and the chunk
    is marked `overtaken` (as in AccountTable)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.overtaken = Overtaken()
        #: changelog records read per partition since the last recovery ended
        self.read: Counter[int] = Counter()
        #: records applied and values freed per partition, ever: a runtime kept through
        #: a rebalance still matches the table while this stays (ownership.py)
        self.changed: Counter[int] = Counter()

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        self.data.apply_changelog_batch(self._current(batch), to_key=self._to_key,
                                        to_value=self._to_value)

    def _current(self, batch: Iterable[Any]) -> Iterator[Any]:
        read, changed = self.read, self.changed
        for event in batch:
            read[event.message.partition] += 1
            changed[event.message.partition] += 1
            if isinstance(event.value, ChunkRecord):
                current = self.data.get(event.key)
                if not self.overtaken.admits(
                        event.key, current.epoch if isinstance(current, ChunkRecord) else None,
                        event.value.epoch):
                    continue
            yield event

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        release(self.data, active_tps | standby_tps,
                lambda v: v.partition if isinstance(v, ChunkRecord) else v[0], self.changed)
        report_read(self.name, self.read, active_tps)
        await super().on_recovery_completed(active_tps, standby_tps)

    def take_overtaken(self, partitions: set[int]) -> list[ChunkRecord]:
        """The overtaken chunks of these partitions, no longer marked."""
        found = {key: chunk for key in self.overtaken.keys
                 if isinstance(chunk := self.data.get(key), ChunkRecord)
                 and chunk.partition in partitions}
        self.overtaken.keys.difference_update(found)
        return list(found.values())


class SegmentCodec(codecs.Codec):
    """Dedup segments with their partition progress, (partition, Segment, progress), and
    campaign-series chunks (ChunkRecord)."""

    def _dumps(self, obj: Any) -> bytes:
        return bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_partition_record(s)


codecs.register("rankflow-utf8", Utf8Codec())
codecs.register("rankflow-account", AccountStateCodec())
codecs.register("rankflow-segment", SegmentCodec())


class CodecType:
    """A table key/value type that only names its codec.

    faust tables take their changelog codec from `type._options.serializer` and build
    values with `type.from_data`; this is that, and nothing else. (A plain `str` key
    type would be JSON-encoded: `b'"acct"'`, which partitions unlike the source key.)
    """

    _options: ClassVar[SimpleNamespace]

    @classmethod
    def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
        return data


def codec_type(codec: str) -> type[CodecType]:
    return type(f"Codec[{codec}]", (CodecType,), {"_options": SimpleNamespace(serializer=codec)})


class RankflowTopic(BatchTopic, faust.Topic):
    """An input topic whose records reach the worker as batches."""


@dataclass(frozen=True)
class Wiring:
    app: faust.App
    topics: Topics
    sources: RankflowTopic
    accounts: AccountTable
    partitions: PartitionTable


class ReadChangelogQueue(ThrowableQueue):
    """faust's queue of changelog records, handing recovery only the records it reads
    now: fetched in this consumer generation, of a partition it reads (`reading`).

    The record whose put waited while a rebalance stopped the flow enters the queue
    after it (the consumer delivers no more: transport.BatchConsumer._split); recovery
    seeks its partitions anew at each rebalance, so the record is read again if it is
    still wanted. faust would take it, were its partition no longer assigned, as the
    previous record's table's, and count its offset as read there
    (tests/test_app.py::test_recovery_gets_only_records_it_reads_now;
    tests/integration/test_concurrent_start.py).
    """

    def __init__(self, *args: Any, reading: Callable[[Any], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading = reading
        self.dropped = 0
        #: is recovery waiting for its next record (so done with every one before)?
        self.idle = False

    async def get(self) -> Any:
        self.idle = True
        try:
            while True:
                event = await super().get()
                if self.reading(event.message):
                    return event
                self.dropped += 1
        finally:
            self.idle = False

    def settled(self) -> bool:
        """Has recovery taken and handled every record handed to it? (It asks for the
        next only once it is done with the last: streams/kafka/bulk_read.py.)"""
        return self.empty() and self.idle


class PromptTableManager(TableManager):
    """faust's table manager without its start-up pause, and with a changelog queue that
    holds no records of partitions recovery no longer reads (`ReadChangelogQueue`).

    Stock faust sleeps a second before it collects the tables' changelog topics, so
    that tables declared late still register. rankflow declares every table in
    `create_app`, before the app starts: the pause would only delay each start.
    """

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    @property
    def changelog_queue(self) -> ThrowableQueue:
        if self._changelog_queue is None:
            self._changelog_queue = ReadChangelogQueue(
                maxsize=self.app.conf.stream_buffer_maxsize,
                flow_control=self.app.flow_control, clear_on_resume=True,
                reading=self._reading)
        return self._changelog_queue

    def _reading(self, message: Any) -> bool:
        """Was this changelog record fetched in this generation, for a partition that
        recovery reads?"""
        if message.generation_id != self.app.consumer_generation_id:
            return False
        recovery = self.recovery
        return message.tp in recovery.active_tps or message.tp in recovery.standby_tps


def create_app(settings: Settings, replication: Replication = SINGLE_REPLICA) -> Wiring:
    """Build the faust app for these settings (nothing connects until it starts).

    `replication`: the cluster's (admin.ensure_topics), for the topics faust declares
    and the changelogs' min.insync.replicas.
    """
    # acks=all (-1) makes the producer idempotent too (transport.IdempotentProducer)
    acks = -1 if settings.kafka_acks == "all" else 1
    changelog_configs = {"min.insync.replicas": str(replication.min_insync)}
    app = faust.App(
        settings.app_id,
        broker=[f"rankflow://{server}" for server in settings.bootstrap_servers],
        broker_credentials=faust_credentials(settings),
        store="memory://",
        TableManager=PromptTableManager,
        web_enabled=False,
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=replication.factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        broker_commit_every=settings.batch_max_records,
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.batch_max_records,
        consumer_max_fetch_size=4 * 1024 * 1024,
        table_standby_replicas=0,
        producer_acks=acks,
        producer_linger_ms=2,
        producer_max_request_size=DEAD_LETTER_MAX_BYTES,
        producer_request_timeout=15.0,
        stream_wait_empty=True,
        logging_config=None,
    )
    topics = Topics(settings.topic_prefix, settings.app_id)
    sources = RankflowTopic(
        app,
        topics=list(topics.sources),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    app.topics.add(sources)
    accounts = AccountTable(
        app,
        name=ACCOUNT_TABLE,
        beacon=app.tables.beacon,
        key_type=codec_type("rankflow-utf8"),
        value_type=codec_type("rankflow-account"),
        partitions=settings.partitions,
        recovery_buffer_size=10_000,
        extra_topic_configs=changelog_configs,
    )
    app.tables.add(accounts)
    partitions = PartitionTable(
        app,
        name=PARTITION_TABLE,
        beacon=app.tables.beacon,
        key_type=codec_type("rankflow-utf8"),
        value_type=codec_type("rankflow-segment"),
        partitions=settings.partitions,
        extra_topic_configs=changelog_configs,
    )
    app.tables.add(partitions)
    logging.getLogger("faust").setLevel(logging.WARNING if settings.log_level == "info"
                                        else settings.log_level.upper())
    return Wiring(app, topics, sources, accounts, partitions)
