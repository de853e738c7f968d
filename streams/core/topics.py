"""Topic names of contract §1 (Input topics), behind RANKFLOW_TOPIC_PREFIX, and the state
tables' names.

Pure naming: which topic a record came from decides its slot in the state records.
Creating the topics is the Kafka side's job (streams/kafka/admin.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import EVENT_KINDS, EventKind
from streams.core.state import KIND_SLOTS, SLOT_ACCOUNTS, SLOT_REKEYED

#: the worker's state tables; faust names their changelog topics `{app_id}-{table}-changelog`
ACCOUNT_TABLE = "account-state"
PARTITION_TABLE = "partition-state"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names a worker reads and writes: contract §1 (Input topics), with the
    topic prefix."""

    prefix: str = ""
    app_id: str = "rankflow"

    def event(self, kind: EventKind) -> str:
        return f"{self.prefix}events.{kind}"

    @property
    def accounts(self) -> str:
        return f"{self.prefix}accounts"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}events.dlq"

    @property
    def rekeyed(self) -> str:
        return f"{self.prefix}{self.app_id}-events-rekeyed"

    def changelog(self, table: str) -> str:
        return f"{self.app_id}-{table}-changelog"

    @property
    def sources(self) -> tuple[str, ...]:
        return (*(self.event(k) for k in EVENT_KINDS), self.accounts, self.rekeyed)

    def slot_of(self) -> dict[str, tuple[int, EventKind | None]]:
        slots: dict[str, tuple[int, EventKind | None]] = {
            self.event(kind): (KIND_SLOTS[kind], kind) for kind in EVENT_KINDS
        }
        slots[self.accounts] = (SLOT_ACCOUNTS, None)
        slots[self.rekeyed] = (SLOT_REKEYED, None)
        return slots
