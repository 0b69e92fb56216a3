"""The statistics core on plain DataFrames: no database, hand-computed or reference-package values."""

import json
import math

import krippendorff
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from evaluator.stats.statistics import (
    RATING_SCALE,
    agreement,
    annotator_left_rates,
    campaign_statistics,
    holm,
    leaderboard,
    length_bias,
    pairwise_table,
    position_bias,
    prompt_majority,
    sign_test_p_value,
    strengths_to_ratings,
    synthetic_votes,
)

VOTE_KEYS = ["criterion", "variant_a", "variant_b", "outcome"]
CODE_TO_OUTCOME = {0: "a", 1: "tie", 2: "b"}


def votes_of(rows: list[tuple], columns: list[str] = VOTE_KEYS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------------------------------
# Sign test, Holm, effect size and power
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wins_a", "wins_b", "expected"),
    [
        (8, 2, 112 / 1024),  # 2 · (C(10,8) + C(10,9) + C(10,10)) / 2^10
        (3, 7, 352 / 1024),  # 2 · (C(10,7) + … + C(10,10)) / 2^10
        (10, 0, 2 / 1024),
        (5, 5, 1.0),
        (1, 0, 1.0),
        (0, 0, 1.0),  # no decisive votes: no evidence either way
    ],
)
def test_the_sign_test_matches_hand_computed_binomial_p_values(wins_a: int, wins_b: int, expected: float) -> None:
    assert sign_test_p_value(wins_a, wins_b) == pytest.approx(expected, abs=1e-12)


def test_holm_multiplies_the_sorted_p_values_by_the_remaining_family_size_and_keeps_their_order() -> None:
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → raised to 0.06 to stay monotone.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_leaves_missing_p_values_out_of_the_family() -> None:
    # Family of three: 0.01·3 = 0.03, 0.6·2 = 1.2 → 1, 0.7·1 raised to 1 to stay monotone.
    adjusted = holm([0.7, np.nan, 0.6, 0.01])
    assert list(adjusted[[0, 2, 3]]) == pytest.approx([1.0, 1.0, 0.03])
    assert math.isnan(adjusted[1])


# ---------------------------------------------------------------------------------------------------------------
# Pairwise table
# ---------------------------------------------------------------------------------------------------------------


def test_the_pairwise_table_counts_wins_and_ties_and_excludes_ties_from_the_test() -> None:
    votes = votes_of(
        [("overall", 1, 2, "a")] * 8
        + [("overall", 1, 2, "b")] * 2
        + [("overall", 1, 2, "tie")] * 5
        + [("safety", 1, 2, "tie")] * 3
    )
    table = pairwise_table(votes, n_boot=50).set_index("criterion")

    overall = table.loc["overall"]
    assert (overall.wins_a, overall.wins_b, overall.ties, overall.n) == (8, 2, 5, 15)
    assert overall.win_rate_a == pytest.approx((8 + 2.5) / 15)
    assert overall.tie_rate == pytest.approx(5 / 15)
    assert overall.p_value == pytest.approx(112 / 1024)
    safety = table.loc["safety"]
    assert (safety.wins_a, safety.wins_b, safety.ties) == (0, 0, 3)
    assert safety.p_value == 1.0
    # Holm over the family of both criteria: 2 · 112/1024 for the smaller, then max(that, 1 · 1.0).
    assert overall.p_holm == pytest.approx(2 * 112 / 1024)
    assert safety.p_holm == 1.0


def test_the_pairwise_table_reports_cohens_h_and_the_judgements_still_needed_for_80_percent_power() -> None:
    votes = votes_of([("overall", 1, 2, "a")] * 8 + [("overall", 1, 2, "b")] * 2)
    row = pairwise_table(votes, n_boot=0).iloc[0]
    # h = 2·asin(√0.8) − 2·asin(√0.5) = 0.643501; n = ((1.959964 + 0.841621) / h)² = 18.95 → 19, 10 already there.
    assert row.cohens_h == pytest.approx(0.6435011, abs=1e-6)
    assert row.n_for_80_power == 9


def test_the_power_column_is_empty_when_the_observed_effect_is_zero() -> None:
    votes = votes_of([("overall", 1, 2, "a")] * 5 + [("overall", 1, 2, "b")] * 5)
    row = pairwise_table(votes, n_boot=0).iloc[0]
    assert row.cohens_h == 0.0
    assert math.isnan(row.n_for_80_power)


def test_the_pairwise_table_of_no_votes_is_empty_with_its_columns() -> None:
    table = pairwise_table(pd.DataFrame(columns=VOTE_KEYS))
    assert table.empty
    assert {"p_value", "p_holm", "ci_low", "n_for_80_power"} <= set(table.columns)


def clustered_votes(*, prompts_for_a: int, prompts_for_b: int, votes_per_prompt: int) -> pd.DataFrame:
    """Every prompt's votes agree (a hard prompt sinks a variant every time): the case the clustering is for."""
    rows = []
    for prompt in range(prompts_for_a + prompts_for_b):
        outcome = "a" if prompt < prompts_for_a else "b"
        rows += [("overall", 1, 2, outcome, prompt)] * votes_per_prompt
    return votes_of(rows, [*VOTE_KEYS, "prompt_id"])


def test_the_prompt_clustered_ci_contains_the_win_rate_and_widens_when_the_votes_come_from_few_prompts() -> None:
    many_prompts = clustered_votes(prompts_for_a=120, prompts_for_b=80, votes_per_prompt=1)
    few_prompts = clustered_votes(prompts_for_a=6, prompts_for_b=4, votes_per_prompt=20)

    wide = pairwise_table(few_prompts, n_boot=2000, seed=1).iloc[0]
    narrow = pairwise_table(many_prompts, n_boot=2000, seed=1).iloc[0]

    for row in (wide, narrow):
        assert row.win_rate_a == pytest.approx(0.6)
        assert row.ci_low < row.win_rate_a < row.ci_high
    # 200 independent votes: ±1.96·√(0.24/200) ≈ ±0.068; 10 clusters of 20: ±1.96·√(0.24/10) ≈ ±0.30.
    assert narrow.ci_high - narrow.ci_low == pytest.approx(0.136, abs=0.03)
    assert wide.ci_high - wide.ci_low > 3 * (narrow.ci_high - narrow.ci_low)


# ---------------------------------------------------------------------------------------------------------------
# Bradley-Terry leaderboard
# ---------------------------------------------------------------------------------------------------------------


def small_tournament() -> pd.DataFrame:
    # (a, b, wins_a, ties, wins_b): every pair played, with ties, no variant unbeaten.
    games = [(1, 2, 7, 3, 5), (1, 3, 4, 2, 9), (1, 4, 2, 1, 6), (2, 3, 6, 4, 6), (2, 4, 3, 0, 8), (3, 4, 5, 5, 7)]
    rows = []
    for a, b, wins_a, ties, wins_b in games:
        rows += (
            [("overall", a, b, "a")] * wins_a + [("overall", a, b, "tie")] * ties + [("overall", a, b, "b")] * wins_b
        )
    return votes_of(rows)


def statsmodels_ratings(votes: pd.DataFrame) -> np.ndarray:
    """The same model the textbook way: every battle twice, a tie once as a win and once as a loss, a Logit fit."""
    variants = np.unique(votes[["variant_a", "variant_b"]])
    design = np.zeros((2 * len(votes), variants.size))
    rows = np.arange(2 * len(votes))
    design[rows, np.searchsorted(variants, np.tile(votes["variant_a"], 2))] = 1.0
    design[rows, np.searchsorted(variants, np.tile(votes["variant_b"], 2))] = -1.0
    outcome = np.tile(votes["outcome"].to_numpy(), 2)
    target = (outcome == "a").astype(float)
    target[: len(votes)][votes["outcome"].to_numpy() == "tie"] = 1.0
    # Without an intercept the ±1 columns sum to zero; dropping the first pins its strength at 0, as ours does.
    fit = sm.Logit(target, design[:, 1:]).fit(method="newton", tol=1e-14, maxiter=100, disp=0)
    return strengths_to_ratings(np.concatenate([[0.0], fit.params]))


def test_bradley_terry_ratings_equal_a_statsmodels_logit_fit_on_the_expanded_battles() -> None:
    votes = small_tournament()
    board = leaderboard(votes, n_boot=0).sort_values("variant")
    assert board["rating"].to_numpy() == pytest.approx(statsmodels_ratings(votes), abs=1e-6)
    assert board["rating"].mean() == pytest.approx(1000.0)


def test_a_synthetic_campaign_recovers_the_planted_order_and_its_intervals_cover_the_truth() -> None:
    planted = np.array([-0.6, -0.2, 0.3, 0.5])
    votes = synthetic_votes(20_000, n_variants=4, strengths=planted, tie_rate=0.0, seed=3)
    board = leaderboard(votes, n_boot=400, seed=0).sort_values("variant")
    truth = 1000.0 + RATING_SCALE * (planted - planted.mean())

    assert list(board.sort_values("rating")["variant"]) == [1, 2, 3, 4]
    assert (board["ci_low"].to_numpy() < truth).all() and (truth < board["ci_high"].to_numpy()).all()
    assert list(board.sort_values("variant")["rank"]) == [4, 3, 2, 1]


def test_variants_whose_intervals_overlap_share_a_rank() -> None:
    votes = synthetic_votes(300, n_variants=3, strengths=[0.0, 0.0, 0.0], seed=2)
    assert set(leaderboard(votes, n_boot=200)["rank"]) == {1}


def test_an_unbeaten_variant_gets_a_finite_top_rating_rather_than_breaking_the_fit() -> None:
    votes = votes_of([("overall", 1, 2, "a")] * 5 + [("overall", 2, 3, "a")] * 3 + [("overall", 2, 3, "b")] * 2)
    board = leaderboard(votes, n_boot=100).set_index("variant")
    assert np.isfinite(board["rating"]).all()
    assert board["rating"].idxmax() == 1


def test_a_disconnected_comparison_graph_still_yields_finite_ratings_per_component() -> None:
    votes = votes_of([("overall", 1, 2, "a")] * 6 + [("overall", 1, 2, "b")] * 3 + [("overall", 3, 4, "b")] * 4)
    votes = pd.concat([votes, votes_of([("overall", 3, 4, "a")] * 2)], ignore_index=True)
    board = leaderboard(votes, n_boot=50).set_index("variant")
    assert np.isfinite(board["rating"]).all()
    assert board.loc[1, "rating"] > board.loc[2, "rating"] and board.loc[4, "rating"] > board.loc[3, "rating"]
    # Nothing relates {1, 2} to {3, 4}: each component is centred at 1000 on its own.
    assert board.loc[[1, 2], "rating"].mean() == pytest.approx(1000.0)
    assert board.loc[[3, 4], "rating"].mean() == pytest.approx(1000.0)


# ---------------------------------------------------------------------------------------------------------------
# Agreement
# ---------------------------------------------------------------------------------------------------------------

# The `krippendorff` package's documented example (its README and `alpha` docstring): coders × units.
DOCUMENTED_RELIABILITY = [
    [np.nan, np.nan, np.nan, np.nan, np.nan, 3, 4, 1, 2, 1, 1, 3, 3, np.nan, 3],
    [1, np.nan, 2, 1, 3, 3, 4, 3, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
    [np.nan, np.nan, 2, 1, 3, 4, 4, np.nan, 2, 1, 1, 3, 3, np.nan, 4],
]


def votes_from_reliability_matrix(matrix: np.ndarray) -> pd.DataFrame:
    """Coders become annotators, units comparisons, codes 0/1/2 the outcomes a/tie/b."""
    rows = [
        ("overall", 1, 2, CODE_TO_OUTCOME[int(matrix[coder, unit])], unit, coder)
        for coder in range(matrix.shape[0])
        for unit in range(matrix.shape[1])
        if not np.isnan(matrix[coder, unit])
    ]
    return votes_of(rows, [*VOTE_KEYS, "comparison_id", "annotator_id"])


def test_the_krippendorff_package_reproduces_its_documented_example() -> None:
    nominal = krippendorff.alpha(reliability_data=DOCUMENTED_RELIABILITY, level_of_measurement="nominal")
    interval = krippendorff.alpha(reliability_data=DOCUMENTED_RELIABILITY, level_of_measurement="interval")
    assert (round(nominal, 6), round(interval, 6)) == (0.691358, 0.810845)


def test_ordinal_alpha_of_a_votes_frame_equals_the_package_on_its_reliability_matrix() -> None:
    # The documented example folded onto three ordered values: 1 → a, 2 → tie, 3 and 4 → b.
    matrix = np.minimum(np.array(DOCUMENTED_RELIABILITY), 3) - 1
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")

    row = agreement(votes_from_reliability_matrix(matrix)).iloc[0]

    assert row.krippendorff_alpha == pytest.approx(expected, abs=1e-12)
    assert row.n_units == 12  # units judged at least twice
    assert math.isnan(row.fleiss_kappa)  # units have two or three raters


def test_alpha_is_undefined_when_no_comparison_was_judged_twice() -> None:
    votes = votes_of([("overall", 1, 2, "a", 1), ("overall", 1, 2, "b", 2)], [*VOTE_KEYS, "comparison_id"])
    row = agreement(votes).iloc[0]
    assert math.isnan(row.krippendorff_alpha) and row.n_units == 0


def test_fleiss_kappa_matches_a_hand_computed_example_with_three_raters_per_unit() -> None:
    # Units × (a, tie, b): P̄ = (1 + 1 + 0 + 1/3) / 4 = 7/12; p = (6, 5, 1)/12, Pₑ = 62/144; κ = 22/82 = 11/41.
    counts = [(3, 0, 0), (0, 3, 0), (1, 1, 1), (2, 1, 0)]
    rows = [
        ("overall", 1, 2, outcome, unit)
        for unit, unit_counts in enumerate(counts)
        for outcome, count in zip(("a", "tie", "b"), unit_counts, strict=True)
        for _ in range(count)
    ]
    row = agreement(votes_of(rows, [*VOTE_KEYS, "comparison_id"])).iloc[0]
    assert row.fleiss_kappa == pytest.approx(11 / 41)


# ---------------------------------------------------------------------------------------------------------------
# Bias checks
# ---------------------------------------------------------------------------------------------------------------


def test_position_bias_detects_a_planted_preference_for_the_left_answer() -> None:
    # No ties: a tie is half a win either side, which would dilute the planted log-odds.
    bias = position_bias(synthetic_votes(6000, n_variants=4, left_bias=0.4, tie_rate=0.0, seed=5))
    assert bias["left_share"] > 0.55
    assert bias["p_value"] < 1e-6
    assert bias["left_advantage_ci_low"] < 0.4 < bias["left_advantage_ci_high"]


def test_position_bias_finds_nothing_when_none_is_planted() -> None:
    bias = position_bias(synthetic_votes(6000, n_variants=4, left_bias=0.0, seed=5))
    assert bias["p_value"] > 0.05
    assert bias["left_advantage_ci_low"] < 0.0 < bias["left_advantage_ci_high"]


def test_position_bias_counts_the_left_answer_from_the_side_it_was_shown_on() -> None:
    columns = [*VOTE_KEYS, "left_is_a"]
    # a wins shown left, b wins shown left (a on the right), a wins shown right, a tie (not decisive).
    rows = [("overall", 1, 2, "a", True), ("overall", 1, 2, "b", False), ("overall", 1, 2, "a", False)]
    rows += [("overall", 1, 2, "tie", True), ("safety", 1, 2, "a", True)]
    votes = votes_of(rows, columns)
    bias = position_bias(votes)
    assert (bias["n"], bias["left_share"]) == (3, pytest.approx(2 / 3))


def test_the_length_controlled_slope_recovers_a_planted_preference_for_longer_answers() -> None:
    result = length_bias(synthetic_votes(8000, n_variants=4, length_bias=0.5, tie_rate=0.0, seed=7))
    assert result["slope_ci_low"] < 0.5 < result["slope_ci_high"]
    assert result["slope_p_value"] < 1e-6
    assert result["longer_share"] > 0.5 and result["point_biserial_r"] > 0


def test_annotator_left_rates_count_each_annotators_decisive_overall_votes() -> None:
    columns = ["criterion", "outcome", "left_is_a", "annotator_id"]
    votes = votes_of(
        [("overall", "a", True, 7)] * 9
        + [("overall", "b", True, 7), ("overall", "tie", True, 7)]
        + [("overall", "a", True, 8), ("overall", "a", False, 8), ("safety", "a", True, 8)],
        columns,
    )
    rates = annotator_left_rates(votes).set_index("annotator_id")
    assert (rates.loc[7, "decisive"], rates.loc[7, "left_share"]) == (10, 0.9)
    assert rates.loc[7, "p_value"] == pytest.approx(22 / 1024)  # 2 · (10 + 1) / 2^10
    assert (rates.loc[8, "decisive"], rates.loc[8, "left_share"]) == (2, 0.5)


# ---------------------------------------------------------------------------------------------------------------
# Prompt-level view and the bundle
# ---------------------------------------------------------------------------------------------------------------


def test_the_prompt_majority_takes_the_outcome_with_the_most_votes_and_calls_a_split_a_tie() -> None:
    columns = ["prompt_id", *VOTE_KEYS]
    votes = votes_of(
        [(1, "overall", 1, 2, "a")] * 2
        + [(1, "overall", 1, 2, "b")]
        + [(2, "overall", 1, 2, "a"), (2, "overall", 1, 2, "b")]
        + [(3, "overall", 1, 2, "b"), (3, "overall", 1, 2, "tie"), (3, "overall", 1, 2, "tie")],
        columns,
    )
    majority = prompt_majority(votes).set_index("prompt_id")
    assert list(majority["outcome"]) == ["a", "tie", "tie"]


def test_every_statistic_runs_on_the_prompt_level_view() -> None:
    prompts = prompt_majority(synthetic_votes(1500, n_variants=3, criteria=("overall", "safety"), seed=4))
    stats = campaign_statistics(prompts, n_boot=50)
    assert len(stats.pairs) == 6 and len(stats.leaderboard) == 6
    assert stats.agreement["n_units"].eq(0).all()  # one majority per unit: no agreement to measure


def test_campaign_statistics_round_trip_through_json_with_exactly_the_export_keys() -> None:
    votes = synthetic_votes(900, n_variants=3, criteria=("overall", "safety"), seed=6)
    report = json.loads(json.dumps(campaign_statistics(votes, n_boot=50).to_json(), allow_nan=False))

    assert set(report) == {
        "pairs",
        "leaderboard",
        "agreement",
        "position_bias",
        "style_control",
        "annotator_outliers",
        "excluded_annotators",
        "category_leaderboards",
    }
    assert set(report["pairs"][0]) == {
        "criterion",
        "variant_a",
        "variant_b",
        "wins_a",
        "wins_b",
        "ties",
        "win_rate_a",
        "ci_low",
        "ci_high",
        "p_value",
        "p_holm",
        "cohens_h",
    }
    assert set(report["leaderboard"][0]) == {"criterion", "variant", "rating", "ci_low", "ci_high", "rank"}
    assert set(report["agreement"][0]) == {"criterion", "krippendorff_alpha", "n_units"}
    assert {"left_share", "p_value"} <= set(report["position_bias"])
    assert len(report["pairs"]) == 6 and len(report["leaderboard"]) == 6


def test_to_json_writes_missing_values_as_null() -> None:
    votes = votes_of(
        [("overall", 1, 2, "tie", 1, 1, True)] * 2, [*VOTE_KEYS, "comparison_id", "annotator_id", "left_is_a"]
    )
    votes = votes.assign(length_a=100, length_b=100, prompt_id=1, judgement_id=[1, 2])
    report = campaign_statistics(votes, n_boot=10).to_json()
    assert report["position_bias"]["left_share"] is None
    assert report["pairs"][0]["cohens_h"] is None
    json.dumps(report, allow_nan=False)
