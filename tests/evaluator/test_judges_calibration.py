"""Calibration figures of a judge on a planted example, each equal to its value worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from evaluator.stats import judges as calibration_stats
from evaluator.stats.statistics import leaderboard

# Five pairs of variants 10 and 20; the judge's two orders per pair, and the human votes.
VERDICTS = [
    (1, "ab", "left"), (1, "ba", "right"),  # a both times: consistent a
    (2, "ab", "left"), (2, "ba", "left"),  # the first answer both times: inconsistent, counts as a tie
    (3, "ab", "tie"), (3, "ba", "tie"),  # tie
    (4, "ab", "right"), (4, "ba", None),  # an unparseable order: no judge outcome
    (5, "ab", "right"), (5, "ba", "left"),  # b both times
]  # fmt: skip
HUMAN = {1: ["a", "a", "b"], 2: ["b", "b"], 3: ["tie", "a"], 4: ["a"], 5: ["a", "a", "tie"]}
LENGTHS = {1: (100, 50), 2: (10, 10), 3: (5, 9), 4: (30, 20), 5: (40, 80)}


def verdicts_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [{"comparison_id": c, "criterion": "overall", "order": o, "choice": choice} for c, o, choice in VERDICTS]
    )


def pairs_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"comparison_id": c, "prompt_id": c, "variant_a": 10, "variant_b": 20, "length_a": a, "length_b": b}
            for c, (a, b) in LENGTHS.items()
        ]
    )


def votes_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [{"comparison_id": c, "criterion": "overall", "outcome": o} for c, outcomes in HUMAN.items() for o in outcomes]
    )


def test_the_judge_outcome_of_each_pair_follows_both_orders() -> None:
    pairs = calibration_stats.judge_pairs(verdicts_frame()).set_index("comparison_id")
    assert pairs["judge"].to_dict() == {1: "a", 2: "tie", 3: "tie", 4: None, 5: "b"}
    assert pairs["consistent"].to_dict() == {1: True, 2: False, 3: True, 4: False, 5: True}
    assert pairs["parsed"].to_dict() == {1: True, 2: True, 3: True, 4: False, 5: True}


def test_a_pair_with_one_order_stored_is_no_pair() -> None:
    only_one = verdicts_frame()[lambda f: ~((f["comparison_id"] == 1) & (f["order"] == "ba"))]
    assert 1 not in set(calibration_stats.judge_pairs(only_one)["comparison_id"])


def test_the_human_majority_is_a_tie_when_two_outcomes_share_the_top_count() -> None:
    majorities = calibration_stats.human_majorities(votes_frame()).set_index("comparison_id")
    assert majorities["human"].to_dict() == {1: "a", 2: "b", 3: "tie", 4: "a", 5: "a"}
    assert majorities.loc[5, ["votes_a", "votes_tie", "votes_b", "n_votes"]].tolist() == [2, 1, 0, 3]


def test_the_calibration_figures_equal_the_hand_computed_values() -> None:
    result = calibration_stats.calibration(verdicts_frame(), pairs_frame(), votes_frame(), n_boot=200)
    [row] = result.summary.to_dict("records")
    assert row["pairs"] == 5 and row["unparseable"] == 1
    assert row["consistency"] == pytest.approx(3 / 4)  # pairs 1, 3, 5 of the four parsed ones
    # Matched pairs 1, 2, 3, 5: judge a/tie/tie/b against humans a/b/tie/a.
    assert row["n_agreement"] == 4 and row["agreement"] == pytest.approx(2 / 4)
    # p_o = 1/2; judge marginals a 1, tie 2, b 1; human a 2, tie 1, b 1: p_e = (2 + 2 + 1) / 16; κ = 3/11.
    assert row["kappa"] == pytest.approx((0.5 - 5 / 16) / (1 - 5 / 16)) == pytest.approx(3 / 11)
    # Decisive parsed verdicts: the first answer named 4 times of 7.
    assert row["first_share"] == pytest.approx(4 / 7)
    # Decisive verdicts on unequal lengths (pair 2 is equal): the longer answer won 4 of 5.
    assert row["longer_share"] == pytest.approx(4 / 5)
    assert row["longer_p_value"] == pytest.approx(0.375)  # two-sided binomial, 4 of 5
    assert row["kappa_ci_low"] <= row["kappa"] <= row["kappa_ci_high"]
    confusion = result.confusion["overall"]
    assert confusion.to_numpy().tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    worst = result.disagreements["overall"]
    assert worst["comparison_id"].tolist() == [5, 2]  # both wholly against the judge; pair 5 has more votes
    assert worst["against"].tolist() == [1.0, 1.0]


def test_the_kappa_interval_is_the_percentile_bootstrap_over_pairs() -> None:
    judge = np.array(["a", "tie", "tie", "b", "a", "b", "a", "tie"], dtype=object)
    human = np.array(["a", "b", "tie", "a", "a", "b", "b", "tie"], dtype=object)
    low, high = calibration_stats.kappa_interval(judge, human, n_boot=300, seed=7)
    draws = np.random.default_rng(7).integers(0, judge.size, size=(300, judge.size))
    kappas = [calibration_stats.cohens_kappa(judge[d], human[d]) for d in draws]
    kappas = [k for k in kappas if not math.isnan(k)]
    assert (low, high) == pytest.approx(tuple(np.percentile(kappas, [2.5, 97.5])))


def test_kappa_is_one_on_perfect_agreement_and_nan_when_chance_is_certain() -> None:
    assert calibration_stats.cohens_kappa(["a", "b", "tie"], ["a", "b", "tie"]) == pytest.approx(1.0)
    assert math.isnan(calibration_stats.cohens_kappa(["a", "a"], ["a", "a"]))
    assert math.isnan(calibration_stats.cohens_kappa([], []))


def test_the_judge_leaderboard_is_the_human_code_on_the_judge_votes() -> None:
    votes = calibration_stats.judge_votes(verdicts_frame(), pairs_frame())
    assert sorted(votes["outcome"]) == sorted(["a", "a", "a", "b", "tie", "tie", "b", "b", "b"])
    result = calibration_stats.calibration(verdicts_frame(), pairs_frame(), votes_frame(), n_boot=50)
    pd.testing.assert_frame_equal(result.leaderboard, leaderboard(votes, n_boot=50, seed=0))


def test_nothing_judged_gives_empty_figures() -> None:
    empty = pd.DataFrame(columns=["comparison_id", "criterion", "order", "choice"])
    result = calibration_stats.calibration(empty, pairs_frame(), votes_frame(), criteria=["overall"], n_boot=10)
    [row] = result.summary.to_dict("records")
    assert row["pairs"] == 0 and row["n_agreement"] == 0 and math.isnan(row["agreement"])
    assert result.leaderboard.empty
