"""The live feed's fan-out rules, without Redis."""

import asyncio

from streams.api.feed import Client, Notice, _change


def notice(i, *boards):
    return Notice(f"{i}-0", i, boards)


def test_a_slow_client_drops_its_oldest_notices_and_is_told_to_refetch():
    async def run():
        client = Client(None, None)
        for i in range(client.queue.maxsize + 10):
            client.offer(notice(i, "24h:all"))
        assert client.lagged
        assert client.queue.qsize() == client.queue.maxsize
        assert (await client.queue.get()).clock == 10  # the oldest ten went
    asyncio.run(run())


def test_filters_by_window_and_board():
    n = notice(1, "24h:all", "24h:cat:police", "1h:all", "all:campaign:c1")
    assert n.for_filter("24h", None) == ["24h:all", "24h:cat:police"]
    assert n.for_filter(None, "all") == ["24h:all", "1h:all"]
    assert n.for_filter("all", "campaign:c1") == ["all:campaign:c1"]
    assert _change(n, "7d", None) is None
    chunk = _change(n, "1h", "all")
    assert chunk == b'id: 1-0\nevent: change\ndata: {"clock":1,"boards":["1h:all"]}\n\n'
