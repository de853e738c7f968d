"""The simulator's Zipf popularity (bench/million.py's replay)."""

import random
from collections import Counter

import orjson

from streams.dev.simulate import SimulatedPlatform


def test_zipf_weights_are_the_ranks_powers_in_a_seeded_order():
    a = SimulatedPlatform(seed=3, accounts=1000, zipf=1.0)
    b = SimulatedPlatform(seed=3, accounts=1000, zipf=1.0)
    assert a.weights == b.weights
    assert sorted(a.weights, reverse=True) == [1 / r for r in range(1, 1001)]
    assert a.weights != sorted(a.weights, reverse=True)  # not in id order


def test_zipf_draws_follow_the_weights():
    platform = SimulatedPlatform(seed=3, accounts=1000, zipf=1.0)
    drawn = Counter(orjson.loads(m.value)["account_id"] for m in platform.events(20_000))
    top = platform.ids[platform.weights.index(1.0)]
    share = drawn[top] / 20_000
    harmonic = sum(1 / r for r in range(1, 1001))
    assert abs(share - 1 / harmonic) < 0.02  # ~0.134


def test_the_default_popularity_is_still_log_normal_with_a_pareto_tail():
    rng = random.Random(3)  # the draws before the option, in their order
    weights = [rng.lognormvariate(0.0, 1.2) for _ in range(200)]
    cutoff = sorted(weights)[int(len(weights) * 0.99)]
    expected = [w if w < cutoff else cutoff * rng.paretovariate(1.0) for w in weights]
    assert SimulatedPlatform(seed=3, accounts=200).weights == expected
