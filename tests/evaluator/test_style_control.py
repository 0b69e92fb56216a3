"""Bradley-Terry with style control (answer length and markdown), on plain DataFrames: no database."""

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.special import expit

from evaluator.stats import statistics
from evaluator.stats.statistics import (
    RATING_SCALE,
    STYLE_FEATURES,
    campaign_statistics,
    markdown_style_counts,
    prompt_majority,
    strengths_to_ratings,
    style_controlled_leaderboard,
    style_features,
    synthetic_votes,
)


def test_markdown_counts_headers_list_items_and_bold_outside_code_blocks() -> None:
    text = (
        "# Title\n\nSome **bold** and __also bold__ text.\n\n## Steps\n1. first\n2. second\n- a\n  * nested\n"
        "+ plus\n\n```python\n# not a header\n- not a list\n**not bold**\n```\n#hashtag is no header\n"
    )
    assert markdown_style_counts(text) == {"length": len(text), "headers": 2, "lists": 5, "bold": 2}
    assert markdown_style_counts("") == {"length": 0, "headers": 0, "lists": 0, "bold": 0}


def test_style_features_are_relative_differences_standardized_and_a_constant_feature_is_not_identified() -> None:
    votes = pd.DataFrame(
        {
            "length_a": [100, 300, 50],
            "length_b": [100, 100, 150],
            "headers_a": [0, 0, 0],
            "headers_b": [0, 0, 0],
            "lists_a": [3, 0, 1],
            "lists_b": [1, 0, 0],
            "bold_a": [0, 2, 0],
            "bold_b": [1, 0, 0],
        }
    )
    matrix, identified = style_features(votes)
    assert list(identified) == [True, False, True, True]
    ratio = np.array([0.0, 200 / 401, -100 / 201])
    assert matrix[:, 0] == pytest.approx((ratio - ratio.mean()) / ratio.std())
    assert matrix[:, 1] == pytest.approx([0.0, 0.0, 0.0])
    assert matrix[:, 2].mean() == pytest.approx(0.0) and matrix[:, 2].std() == pytest.approx(1.0)


def expanded_logit_fit(votes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The style-controlled model the textbook way: every vote twice (a tie once a win, once a loss), covariates
    standardized over the votes by hand, a statsmodels Logit without intercept, variant 1's column dropped."""
    variants = np.unique(votes[["variant_a", "variant_b"]])
    n = len(votes)
    design = np.zeros((2 * n, variants.size))
    rows = np.arange(2 * n)
    design[rows, np.searchsorted(variants, np.tile(votes["variant_a"], 2))] = 1.0
    design[rows, np.searchsorted(variants, np.tile(votes["variant_b"], 2))] = -1.0
    columns = []
    for feature in STYLE_FEATURES:
        a, b = votes[f"{feature}_a"].to_numpy(float), votes[f"{feature}_b"].to_numpy(float)
        ratio = (a - b) / (a + b + 1.0)
        columns.append((ratio - ratio.mean()) / ratio.std())
    covariates = np.tile(np.column_stack(columns), (2, 1))
    outcome = votes["outcome"].to_numpy()
    target = np.tile(outcome == "a", 2).astype(float)
    target[:n][outcome == "tie"] = 1.0
    fit = sm.Logit(target, np.hstack([design[:, 1:], covariates])).fit(method="newton", tol=1e-14, disp=0)
    n_free = variants.size - 1
    return strengths_to_ratings(np.concatenate([[0.0], fit.params[:n_free]])), fit.params[n_free:]


def test_the_style_controlled_fit_equals_a_statsmodels_logistic_regression_within_1e_6() -> None:
    votes = synthetic_votes(
        3000, n_variants=4, criteria=("overall", "safety"), style_effects={"length": 0.5, "bold": -0.3}, seed=11
    )
    control = style_controlled_leaderboard(votes, n_boot=0)
    for criterion in ("overall", "safety"):
        rows = votes[votes["criterion"] == criterion]
        ratings, coefficients = expanded_logit_fit(rows)
        board = control.leaderboard[control.leaderboard["criterion"] == criterion].sort_values("variant")
        ours = control.coefficients[control.coefficients["criterion"] == criterion]
        assert board["rating"].to_numpy() == pytest.approx(ratings, abs=1e-6)
        assert ours["estimate"].to_numpy() == pytest.approx(coefficients, abs=1e-6)
    assert control.bootstrap == {"overall": "none", "safety": "none"}


def confounded_campaign(n_comparisons: int, *, seed: int) -> tuple[pd.DataFrame, np.ndarray, dict[str, float]]:
    """Variant 4 writes three times longer answers; raters like length (planted γ_length) and dislike bold."""
    rng = np.random.default_rng(seed)
    strengths = np.array([-0.4, 0.0, 0.2, 0.2])
    effects = {"length": 0.6, "headers": 0.0, "lists": 0.0, "bold": -0.4}
    first = rng.integers(0, 4, n_comparisons)
    second = (first + rng.integers(1, 4, n_comparisons)) % 4
    low, high = np.minimum(first, second), np.maximum(first, second)
    mean_length = np.where(np.arange(4) == 3, 1500, 500)
    votes = pd.DataFrame(
        {
            "comparison_id": np.arange(n_comparisons) + 1,
            "prompt_id": rng.integers(1, 301, n_comparisons),
            "criterion": "overall",
            "variant_a": low + 1,
            "variant_b": high + 1,
            "length_a": rng.poisson(mean_length[low]),
            "length_b": rng.poisson(mean_length[high]),
            **{f"{feature}_{side}": rng.poisson(2.0, n_comparisons) for feature in STYLE_FEATURES[1:] for side in "ab"},
        }
    )
    covariates, _ = style_features(votes)
    logit = strengths[low] - strengths[high] + covariates @ np.array([effects[f] for f in STYLE_FEATURES])
    votes["outcome"] = np.where(rng.random(n_comparisons) < expit(logit), "a", "b")
    return votes, strengths, effects


def test_style_control_recovers_planted_style_effects_and_the_strengths_length_had_inflated() -> None:
    votes, strengths, effects = confounded_campaign(8000, seed=5)
    control = style_controlled_leaderboard(votes, n_boot=200, seed=0)
    coefficients = control.coefficients.set_index("feature")
    for feature, planted in effects.items():
        row = coefficients.loc[feature]
        assert row["ci_low"] < planted < row["ci_high"], feature
    board = control.leaderboard.sort_values("variant")
    truth = 1000.0 + RATING_SCALE * (strengths - strengths.mean())
    assert (board["ci_low"].to_numpy() < truth).all() and (truth < board["ci_high"].to_numpy()).all()
    # Without control the long-winded variant 4 is rated far above its true strength, beyond the interval.
    raw_long = board["raw_rating"].to_numpy()[3]
    assert raw_long > board["ci_high"].to_numpy()[3] + 20
    assert control.bootstrap == {"overall": "refit"}


def test_the_score_bootstrap_on_large_data_agrees_with_refitting_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    votes, _, _ = confounded_campaign(5000, seed=8)
    refit = style_controlled_leaderboard(votes, n_boot=200, seed=1)
    monkeypatch.setattr(statistics, "STYLE_EXACT_BOOTSTRAP_ENTRIES", 0)
    score = style_controlled_leaderboard(votes, n_boot=200, seed=1)
    assert score.bootstrap == {"overall": "score"}
    for table in ("leaderboard", "coefficients"):
        key = "feature" if table == "coefficients" else "variant"
        exact, approximate = (getattr(result, table).sort_values(key) for result in (refit, score))
        width = (exact["ci_high"] - exact["ci_low"]).to_numpy()
        for end in ("ci_low", "ci_high"):
            assert (np.abs(approximate[end].to_numpy() - exact[end].to_numpy()) < 0.1 * width).all(), (table, end)
        point = "estimate" if table == "coefficients" else "rating"
        assert approximate[point].to_numpy() == pytest.approx(exact[point].to_numpy())


def test_campaign_statistics_report_style_control_in_json_and_on_prompt_level_majorities() -> None:
    votes = synthetic_votes(1500, n_variants=3, criteria=("overall", "safety"), style_effects={"length": 0.5}, seed=4)
    report = json.loads(json.dumps(campaign_statistics(votes, n_boot=50).to_json(), allow_nan=False))
    style = report["style_control"]
    assert {row["criterion"] for row in style["leaderboard"]} == {"overall", "safety"}
    assert {(row["criterion"], row["feature"]) for row in style["coefficients"]} == {
        (criterion, feature) for criterion in ("overall", "safety") for feature in STYLE_FEATURES
    }
    assert set(style["leaderboard"][0]) == {"criterion", "variant", "raw_rating", "rating", "ci_low", "ci_high", "rank"}

    majorities = prompt_majority(votes)
    assert statistics.has_style_columns(majorities)
    assert campaign_statistics(majorities, n_boot=20).style_control is not None


def test_votes_without_style_columns_have_no_style_control() -> None:
    votes = synthetic_votes(300, n_variants=3, seed=2).drop(columns=["headers_a", "headers_b"])
    assert campaign_statistics(votes, n_boot=10).style_control is None
