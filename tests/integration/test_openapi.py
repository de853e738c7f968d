"""Property-based check of the OpenAPI document (schemathesis): no input gives a 5xx."""

import uuid

import redis
import schemathesis
from hypothesis import HealthCheck, settings

from streams.api.app import create_api
from streams.ops.settings import load_settings

PREFIX = f"oas{uuid.uuid4().hex[:8]}:"
_settings = load_settings().model_copy(update={"prefix": PREFIX})
_r = redis.Redis.from_url(_settings.redis, decode_responses=True)
for window in ("24h", "all"):
    _r.zadd(f"{PREFIX}lb:{window}:all", {"a": 3.5, "b": 3.5, "c": 1})
    _r.zadd(f"{PREFIX}lb:{window}:campaign:c1", {"a": 10})
_r.hset(f"{PREFIX}acct:a", mapping={"name": "A", "category": "police", "fans": 1,
                                    "24h.views": 10, "24h.index": 3.5})
_r.hset(f"{PREFIX}campaign:c1", mapping={"24h.views": 10, "24h.accounts": 1})
_r.sadd(f"{PREFIX}campaigns", "c1")
_r.hset(f"{PREFIX}meta", mapping={"events": 1, "dlq": 0, "clock": 1, "updated_at": 1})

schema = schemathesis.openapi.from_asgi("/openapi.json", create_api(_settings)).exclude(
    path="/api/stream")  # an endless event stream: tested in test_live.py


@schema.parametrize()
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_input_gets_a_server_error(case):
    case.call_and_validate()
