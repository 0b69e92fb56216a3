"""The shortcuts that keep the statistics page fast give the same numbers as the plain computations."""

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from evaluator.stats import statistics
from evaluator.stats.statistics import (
    agreement,
    fit_weighted_logistic,
    ordinal_alpha,
    sign_test_p_values,
    synthetic_votes,
)


def test_the_vectorised_sign_test_equals_scipys_binomial_test_on_every_split() -> None:
    wins_a, wins_b = np.meshgrid(np.arange(0, 41), np.arange(0, 41))
    wins_a, wins_b = wins_a.ravel(), wins_b.ravel()
    expected = [
        binomtest(int(a), int(a + b), 0.5).pvalue if a + b else 1.0 for a, b in zip(wins_a, wins_b, strict=True)
    ]
    assert sign_test_p_values(wins_a, wins_b) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert sign_test_p_values([5000, 4800], [4700, 5000]) == pytest.approx(
        [binomtest(5000, 9700).pvalue, binomtest(4800, 9800).pvalue], rel=1e-9
    )


def test_ordinal_alpha_on_distinct_count_rows_equals_the_krippendorff_package() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        n_units = int(rng.integers(2, 80))
        counts = rng.integers(0, 4, (n_units, 3)) * (rng.random((n_units, 3)) < 0.6)
        pairable = counts[counts.sum(axis=1) >= 2]
        if pairable.shape[0] == 0 or np.count_nonzero(pairable.sum(axis=0)) < 2:
            continue  # α undefined: covered by the NaN tests
        expected = krippendorff.alpha(value_counts=pairable, value_domain=[0, 1, 2], level_of_measurement="ordinal")
        assert ordinal_alpha(counts) == pytest.approx(expected, abs=1e-12)


def test_agreement_is_the_same_whether_a_comparison_has_few_votes_or_very_many() -> None:
    votes = synthetic_votes(900, n_variants=3, criteria=("overall", "safety"), seed=6)
    crowded = votes.assign(comparison_id=np.where(votes["judgement_id"] <= 150, 1, votes["comparison_id"]))
    for frame in (votes, crowded):  # the second takes the sorted-rows path: 150 votes on one comparison
        table = agreement(frame).set_index("criterion")
        for criterion, rows in frame.groupby("criterion", observed=True):
            table_of_counts = pd.crosstab(rows["comparison_id"], rows["outcome"])
            counts = table_of_counts.reindex(columns=["a", "tie", "b"], fill_value=0).to_numpy()
            pairable = counts[counts.sum(axis=1) >= 2]
            expected = krippendorff.alpha(value_counts=pairable, value_domain=[0, 1, 2], level_of_measurement="ordinal")
            assert table.loc[criterion, "krippendorff_alpha"] == pytest.approx(expected, abs=1e-12)
            assert table.loc[criterion, "n_units"] == pairable.shape[0]


def test_integer_and_categorical_codes_equal_pandas_factorize() -> None:
    for values in (
        pd.Series([7, 3, 7, 12, 3]),
        pd.Series([10**12, 1, 1]),
        pd.Series(pd.Categorical(["b", "b", "c"], categories=["c", "a", "b"])),
        pd.Series(["safety", "overall", "safety"]).astype("category"),
    ):
        codes, uniques = statistics._factorize(values)
        expected_codes, expected_uniques = pd.factorize(values, sort=True)
        assert codes.tolist() == expected_codes.tolist()
        assert list(uniques) == list(expected_uniques)


def test_newton_stopped_in_its_quadratic_phase_is_as_exact_as_one_run_to_the_tolerance() -> None:
    rng = np.random.default_rng(2)
    design = rng.normal(size=(400, 5))
    trials = rng.integers(1, 30, (3, 400)).astype(float)
    successes = rng.binomial(trials.astype(int), 1.0 / (1.0 + np.exp(-design @ rng.normal(size=5)))).astype(float)
    beta, information = fit_weighted_logistic(design, successes, trials)
    # Polish with plain Newton steps from the returned estimate: they must not move it.
    polished, _ = fit_weighted_logistic(design, successes, trials, start=beta, tolerance=1e-15, max_iterations=3)
    assert np.max(np.abs(polished - beta)) < 1e-11
    probability = 1.0 / (1.0 + np.exp(-beta @ design.T))
    exact = np.einsum("kp,rk,kq->rpq", design, trials * probability * (1.0 - probability), design)
    assert information == pytest.approx(exact + statistics.RIDGE * np.eye(5), rel=1e-6)
