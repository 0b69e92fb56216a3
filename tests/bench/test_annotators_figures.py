"""The figures `bench/annotators.py` reports from its side-by-side rounds and long-run windows (pure helpers)."""

import math

import pytest

from bench.annotators import median, ratio_summary, round_orders, slope, window_trend


def test_the_side_measured_first_alternates_from_round_to_round() -> None:
    assert round_orders(4) == [("new", "old"), ("old", "new"), ("new", "old"), ("old", "new")]
    assert round_orders(1) == [("new", "old")]


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert math.isnan(median([]))


def test_the_ratio_is_taken_within_each_round_then_summarised() -> None:
    summary = ratio_summary([200.0, 180.0, 190.0], [100.0, 120.0, 95.0])

    assert summary == {
        "per_round": [2.0, 1.5, 2.0],
        "median": 2.0,
        "lowest": 1.5,
        "highest": 2.0,
        "ratio_of_medians": 1.9,
    }


def test_a_ratio_without_one_figure_per_round_and_side_is_refused() -> None:
    with pytest.raises(ValueError, match="one figure per round and side"):
        ratio_summary([200.0, 180.0], [100.0])


def test_the_slope_is_the_least_squares_line_through_the_points() -> None:
    assert slope([0.0, 1.0, 2.0, 3.0], [5.0, 7.0, 9.0, 11.0]) == pytest.approx(2.0)
    assert slope([0.0, 1.0, 2.0], [4.0, 4.0, 4.0]) == 0.0
    assert slope([1.0], [4.0]) == 0.0


def test_a_long_run_whose_database_cpu_grows_is_seen_growing() -> None:
    windows = [
        {"ends_at_s": 30.0 * (index + 1), "database_cpu_ms_per_request": cpu, "judgements": 100}
        for index, cpu in enumerate([5.0, 6.0, 7.0, 8.0])
    ]

    trend = window_trend(windows)

    assert trend["database_cpu_last_to_first"] == 1.6
    assert trend["database_cpu_slope_ms_per_request_per_minute"] == pytest.approx(2.0)
    assert trend["database_cpu_slope_share_of_first_per_10_minutes"] == 4.0
    assert trend["judgements"] == 400
