"""lua/sum_parts.lua on the real Redis: each total is the sum (or max) of the partitions'
shares after any sequence of share writes, without reading the other partitions' shares,
and a lost total hash is summed again from the shares."""

import random
import uuid

import pytest
import redis

from streams.sink.writer import script


@pytest.fixture
def keys(stack):
    client = redis.Redis.from_url(stack.redis, decode_responses=True)
    tag = f"sumparts-{uuid.uuid4().hex[:8]}"
    names = [f"{tag}:parts", f"{tag}:total", f"{tag}:owners"]
    yield client, client.register_script(script("sum_parts")), names
    client.delete(*names)


def test_totals_are_the_sums_and_maxima_of_the_shares_after_any_writes(keys):
    client, sum_parts, names = keys
    rng = random.Random(7)
    shares: dict[int, dict[str, int]] = {}
    for _ in range(600):
        partition = rng.randrange(16)
        values = {"views": rng.randrange(10**12), "accounts": rng.randrange(50),
                  "max:clock": rng.randrange(10**13)}
        if rng.random() < 0.2:
            values = {"views": values["views"]}  # a write of some fields only
        shares.setdefault(partition, {}).update(values)
        args = [partition, ""] + [x for kv in values.items() for x in kv]
        assert sum_parts(keys=names, args=args) == 0
        total = client.hgetall(names[1])
        written = {f.removeprefix("max:") for f in values}
        assert written <= total.keys()  # each total written is up to date at once
        for field, value in total.items():
            found = [s[f] for s in shares.values() for f in (field, f"max:{field}") if f in s]
            assert int(value) == (max(found) if field == "clock" else sum(found)), field
        if rng.random() < 0.03:
            client.delete(names[1])  # the total lost, its shares kept

def test_a_write_for_an_older_owner_is_refused(keys):
    client, sum_parts, names = keys
    client.hset(names[2], "3.epoch", 5)
    assert sum_parts(keys=names, args=[3, 4, "views", 10]) == -1
    assert client.hgetall(names[0]) == {}
    assert sum_parts(keys=names, args=[3, 5, "views", 10]) == 0
    assert client.hget(names[1], "views") == "10"
