"""Account detail reads its own boards only, however many campaigns exist (no Redis)."""

import asyncio

from streams.api.reader import BoardReader
from streams.core.windows import Windows
from streams.sink.keys import RedisKeys

KEYS = RedisKeys("t:")


class Pipeline:
    def __init__(self, fake):
        self.fake, self.calls = fake, []

    def zscore(self, key, member):
        self.calls.append(("zscore", key))
        self.fake.reads.append(key)
        return self

    def zcount(self, key, low, high):
        self.calls.append(("zcount", key))
        return self

    async def execute(self):
        return [self.fake.boards.get(key, {}).get("a") if kind == "zscore" else 0
                for kind, key in self.calls]


class FakeRedis:
    """The commands account detail uses, recording the boards it reads."""

    def __init__(self):
        self.reads = []
        self.sets = {KEYS.campaigns: {f"c{i}" for i in range(5000)},
                     KEYS.account_campaigns("a"): {"c7"}}
        self.boards = {KEYS.board("24h", "all"): {"a": 3.0},
                       KEYS.board("24h", "cat:police"): {"a": 3.0},
                       KEYS.board("24h", "campaign:c7"): {"a": 12.0}}

    def register_script(self, source):
        return None

    async def hgetall(self, key):
        return {"name": "A", "category": "police", "fans": "1"} if key == KEYS.account("a") \
            else {}

    async def smembers(self, key):
        return self.sets.get(key, set())

    def pipeline(self, transaction):
        return Pipeline(self)


def test_account_detail_reads_only_the_boards_of_its_own_campaigns():
    fake = FakeRedis()
    windows = Windows()
    account = asyncio.run(BoardReader(fake, KEYS, windows).account("a"))
    assert len(fake.reads) == 3 * len(windows.ids)  # all, its category, its one campaign
    assert {(r.window, r.board) for r in account.ranks} == {
        ("24h", "all"), ("24h", "cat:police"), ("24h", "campaign:c7")}
