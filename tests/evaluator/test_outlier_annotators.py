"""The leave-one-out likelihood test that flags annotators who do not vote like the others (no database)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from evaluator.stats.statistics import (
    RATING_SCALE,
    annotator_outliers,
    campaign_statistics,
    leaderboard,
    synthetic_votes,
)
from tests import factories

RANDOM, ADVERSARY = 1, 2


def campaign_with_two_bad_annotators(seed: int = 0) -> pd.DataFrame:
    """Twelve annotators on a Bradley-Terry campaign; number 1 clicks at random, number 2 votes against the others."""
    votes = synthetic_votes(
        6000, n_variants=4, strengths=[-0.8, -0.3, 0.3, 0.8], n_annotators=12, tie_rate=0.05, seed=seed
    )
    votes["outcome"] = votes["outcome"].astype(str)
    rng = np.random.default_rng(seed + 100)
    random = votes["annotator_id"] == RANDOM
    votes.loc[random, "outcome"] = rng.choice(["a", "b"], int(random.sum()))
    adversary = votes["annotator_id"] == ADVERSARY
    votes.loc[adversary, "outcome"] = votes.loc[adversary, "outcome"].map({"a": "b", "b": "a", "tie": "tie"})
    return votes


def test_a_random_and_an_adversarial_annotator_are_flagged_and_nobody_else() -> None:
    outliers = annotator_outliers(campaign_with_two_bad_annotators()).set_index("annotator_id")

    assert sorted(outliers.index[outliers["outlier"]]) == [RANDOM, ADVERSARY]
    assert outliers.loc[ADVERSARY, "z"] < outliers.loc[RANDOM, "z"] < -5
    honest = outliers.drop(index=[RANDOM, ADVERSARY])
    assert (honest["z"].abs() < 3).all()
    assert (honest["mean_log_likelihood"] > outliers.loc[RANDOM, "mean_log_likelihood"]).all()


def test_the_statistic_is_the_likelihood_of_the_votes_under_the_fit_of_everyone_else() -> None:
    votes = campaign_with_two_bad_annotators(seed=3)
    row = annotator_outliers(votes).set_index("annotator_id").loc[5]

    # By hand: Bradley-Terry on the others (the two flagged left out of the reference), then the Bernoulli
    # log-likelihood of annotator 5's decisive choices.
    reference = votes[~votes["annotator_id"].isin([5, RANDOM, ADVERSARY])]
    others = leaderboard(reference, n_boot=0).set_index("variant")["rating"]
    own = votes[(votes["annotator_id"] == 5) & (votes["outcome"] != "tie")]
    gap = (others[own["variant_a"]].to_numpy() - others[own["variant_b"]].to_numpy()) / RATING_SCALE
    p = 1.0 / (1.0 + np.exp(-gap))
    chosen = np.where(own["outcome"] == "a", p, 1.0 - p)
    observed = np.log(chosen).sum()
    expected = (p * np.log(p) + (1 - p) * np.log(1 - p)).sum()
    variance = (p * (1 - p) * np.log(p / (1 - p)) ** 2).sum()
    z = (observed - expected) / math.sqrt(variance)

    assert row["n_decisive"] == len(own)
    assert row["mean_log_likelihood"] == pytest.approx(observed / len(own), abs=1e-8)
    assert row["expected_mean_log_likelihood"] == pytest.approx(expected / len(own), abs=1e-8)
    assert row["z"] == pytest.approx(z, abs=1e-6)
    assert row["p_value"] == pytest.approx(norm.cdf(z), abs=1e-8)


def test_an_annotator_with_too_few_decisive_votes_is_not_tested() -> None:
    votes = campaign_with_two_bad_annotators()
    few = votes[votes["annotator_id"] == RANDOM].index[5:]
    outliers = annotator_outliers(votes.drop(index=few)).set_index("annotator_id")
    assert outliers.loc[RANDOM, "n_decisive"] <= 5
    assert math.isnan(outliers.loc[RANDOM, "z"]) and not outliers.loc[RANDOM, "outlier"]


def test_excluding_outliers_drops_their_votes_from_every_statistic() -> None:
    votes = campaign_with_two_bad_annotators()
    kept = campaign_statistics(votes, n_boot=20)
    cleaned = campaign_statistics(votes, n_boot=20, exclude_outliers=True)

    assert kept.excluded_annotators == [] and cleaned.excluded_annotators == [RANDOM, ADVERSARY]
    assert cleaned.n_votes == votes[~votes["annotator_id"].isin([RANDOM, ADVERSARY])]["judgement_id"].nunique()
    # The test itself still reports everybody, so the page can say who was left out and why.
    assert len(cleaned.annotator_outliers) == 12
    spread = {
        name: stats.leaderboard["rating"].max() - stats.leaderboard["rating"].min()
        for name, stats in (("kept", kept), ("cleaned", cleaned))
    }
    assert spread["cleaned"] > spread["kept"]  # the adversary had been pulling the ratings together
    assert campaign_statistics(votes, n_boot=0).to_json()["annotator_outliers"][0].keys() >= {"z", "outlier"}


@pytest.mark.django_db
def test_the_statistics_page_flags_an_adversarial_annotator_and_can_leave_them_out(client, researcher) -> None:
    honest = [factories.user(f"honest{number}", "annotator") for number in range(3)]
    adversary = factories.user("contrarian", "annotator")
    campaign = factories.campaign(name="Outliers", overlap=4)
    base, tuned = factories.variant(name="base"), factories.variant(name="tuned")
    for _ in range(12):
        comparison = factories.comparison(campaign, variants=(base, tuned))
        for annotator in honest:
            factories.judgement(comparison, annotator, "b")
        factories.judgement(comparison, adversary, "a")
    client.force_login(researcher)

    report = client.get(f"/stats/{campaign.pk}/").context["report"]
    assert report.arena.flagged == ["contrarian"] and report.arena.excluded == []
    assert report.n_votes == 48
    page = client.get(f"/stats/{campaign.pk}/").content.decode()
    assert "Outlier annotators" in page and "exclude_outliers=on" in page

    cleaned = client.get(f"/stats/{campaign.pk}/", {"exclude_outliers": "on"})
    assert cleaned.status_code == 200
    assert cleaned.context["report"].arena.excluded == ["contrarian"]
    assert cleaned.context["report"].n_votes == 36
    assert "Left out of every statistic on this page" in cleaned.content.decode()
