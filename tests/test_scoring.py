"""The index of contract §3 against values worked out by hand."""

import math

import pytest

from streams.core.scoring import ScoringConfig, dimension_score, influence_index


def test_nothing_scores_zero():
    assert influence_index(0, 0, 0, 0, days=1) == 0.0


def test_fans_at_the_ceiling_give_their_full_weight():
    # S_fans = 1000 * ln(1 + 5e7) / ln(1 + 5e7) = 1000, weight 0.25
    assert influence_index(0, 0, 0, 50_000_000, days=365) == 250.0


def test_every_dimension_at_its_ceiling_is_1000():
    # d = 1: C_views = 1e7, C_likes = 5e5, C_uploads = 20
    assert influence_index(10_000_000, 500_000, 20, 50_000_000, days=1) == 1000.0


def test_values_above_the_ceiling_are_capped():
    assert influence_index(10**12, 10**12, 10**6, 10**12, days=1) == 1000.0


def test_negative_sums_score_zero():
    # net unlikes: max(x, 0) = 0
    assert influence_index(0, -50, 0, -3, days=1) == 0.0


def test_views_999_in_a_day():
    # ln(1000) / ln(10,000,001) ~= 3/7, so S_views ~= 428.5714; 0.40 * that = 171.43
    assert influence_index(999, 0, 0, 0, days=1) == 171.43


def test_fans_at_the_square_root_of_the_ceiling():
    # 1 + 7070 = 7071 ~= sqrt(5e7 + 1): S_fans ~= 500, weighted 0.25 -> 125.0
    assert influence_index(0, 0, 0, 7070, days=7) == 125.0


def test_one_hour_window_scales_the_ceiling():
    # d = 1/24: C_views = 416,666.67; 416,666 views is just under it -> 0.40 * ~1000
    assert influence_index(416_666, 0, 0, 0, days=1 / 24) == 400.0
    # the same views over `all` (d = 365) score far less
    assert influence_index(416_666, 0, 0, 0, days=365) < 300


def test_uploads_weight():
    # 20 uploads in a day hit C_uploads = 20: 0.10 * 1000
    assert influence_index(0, 0, 20, 0, days=1) == 100.0


def test_dimension_score_formula():
    assert dimension_score(0, 100) == 0.0
    assert dimension_score(-5, 100) == 0.0
    assert dimension_score(100, 100) == 1000.0
    assert dimension_score(10, 100) == pytest.approx(1000 * math.log(11) / math.log(101))


def test_custom_weights():
    config = ScoringConfig(weight_views=1.0, weight_likes=0.0, weight_fans=0.0,
                           weight_uploads=0.0)
    assert influence_index(10_000_000, 0, 0, 0, days=1, config=config) == 1000.0
