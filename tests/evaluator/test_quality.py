"""Annotator quality: the pure numbers and warnings on hand-made judgements, then the page built from the database."""

import math

import pandas as pd
import pytest
from django.urls import reverse
from django.utils import timezone
from scipy.stats import binomtest

from evaluator.errors import ServiceError
from evaluator.models import AnnotatorFlag, AnswerFlag, Comparison
from evaluator.selectors.campaigns import annotator_quality_rows
from evaluator.services.accounts import annotator_flag
from evaluator.stats.quality import (
    FAST,
    JUDGEMENT_COLUMNS,
    LOW_AGREEMENT,
    LOW_GOLD,
    QUALITY_COLUMNS,
    SAME_OUTCOME,
    SAME_SIDE,
    QualityThresholds,
    annotator_quality,
)
from tests import factories


def rows(*judgements: tuple) -> pd.DataFrame:
    """(annotator, comparison, seconds, outcome, left_is_a[, gold]) tuples as a judgements frame."""
    return pd.DataFrame.from_records(
        [
            (annotator, comparison, int(seconds * 1000), outcome, left_is_a, gold[0] if gold else None)
            for annotator, comparison, seconds, outcome, left_is_a, *gold in judgements
        ],
        columns=JUDGEMENT_COLUMNS,
    )


def row_of(result: pd.DataFrame, annotator: int) -> dict:
    return result.set_index("annotator_id").loc[annotator].to_dict()


def test_it_counts_judgements_and_takes_the_median_time_in_seconds() -> None:
    result = annotator_quality(rows((1, 10, 3, "a", True), (1, 11, 9, "b", True), (1, 12, 30, "tie", True)))
    one = row_of(result, 1)
    assert (one["judgements"], one["median_seconds"]) == (3, 9.0)


def test_the_left_rate_counts_a_shown_left_and_b_shown_left_and_leaves_ties_out() -> None:
    # left: a with left_is_a, b without; right: a shown right, b shown right; the tie is not decisive.
    result = annotator_quality(
        rows(
            (1, 10, 5, "a", True),
            (1, 11, 5, "b", False),
            (1, 12, 5, "a", False),
            (1, 13, 5, "tie", True),
        )
    )
    one = row_of(result, 1)
    assert (one["decisive"], one["left_rate"]) == (3, pytest.approx(2 / 3))
    assert one["left_p_value"] == pytest.approx(binomtest(2, 3, 0.5).pvalue)


def test_gold_accuracy_is_the_share_of_gold_items_matching_their_outcome_and_ignores_other_items() -> None:
    result = annotator_quality(
        rows(
            (1, 10, 5, "a", True, "a"),
            (1, 11, 5, "b", True, "a"),
            (1, 12, 5, "tie", True, "tie"),
            (1, 13, 5, "b", True, "b"),
            (1, 14, 5, "a", True),  # not gold
            (2, 14, 5, "a", True),
        )
    )
    assert (row_of(result, 1)["gold_judged"], row_of(result, 1)["gold_accuracy"]) == (4, 0.75)
    assert row_of(result, 2)["gold_judged"] == 0 and math.isnan(row_of(result, 2)["gold_accuracy"])


def test_agreement_compares_each_choice_with_the_majority_of_the_other_annotators_only() -> None:
    result = annotator_quality(
        rows(
            # comparison 10: 1 says a, 2 and 3 say b. Others of 1: b, b → b (1 disagrees); of 2 and 3: a, b → split.
            (1, 10, 5, "a", True),
            (2, 10, 5, "b", True),
            (3, 10, 5, "b", True),
            # comparison 11: 1 and 2 say tie, 3 says a. Others of 1 and 2: tie, a → split; of 3: tie, tie → tie.
            (1, 11, 5, "tie", True),
            (2, 11, 5, "tie", True),
            (3, 11, 5, "a", True),
            # comparison 12: everyone says b, so everyone matches the others.
            (1, 12, 5, "b", False),
            (2, 12, 5, "b", True),
            (3, 12, 5, "b", True),
            # comparison 13: only annotator 1, so no others.
            (1, 13, 5, "a", True),
        )
    )
    assert (row_of(result, 1)["agreement_n"], row_of(result, 1)["agreement"]) == (2, 0.5)
    assert (row_of(result, 2)["agreement_n"], row_of(result, 2)["agreement"]) == (1, 1.0)
    assert (row_of(result, 3)["agreement_n"], row_of(result, 3)["agreement"]) == (2, 0.5)


def test_a_careful_annotator_gets_no_warning() -> None:
    careful = [(1, index, 25, ("a", "b", "tie")[index % 3], index % 2 == 0) for index in range(30)]
    result = annotator_quality(rows(*careful))
    assert row_of(result, 1)["warnings"] == []


def test_a_median_under_four_seconds_over_five_judgements_is_implausibly_fast() -> None:
    outcomes = ("a", "b", "tie", "a", "b")
    fast = [(1, index, 3.9, outcomes[index], index % 2 == 0) for index in range(5)]
    too_few = [(2, index, 1, outcomes[index], True) for index in range(4)]
    just_enough_time = [(3, index, 4, outcomes[index], True) for index in range(5)]
    result = annotator_quality(rows(*fast, *too_few, *just_enough_time))
    assert row_of(result, 1)["warnings"] == [FAST]
    assert FAST not in row_of(result, 2)["warnings"]
    assert FAST not in row_of(result, 3)["warnings"]


def test_a_left_rate_of_nine_in_ten_decisive_votes_is_always_the_same_side() -> None:
    # 9 of 10 decisive votes on the left, alternating variants so that the outcome itself stays mixed.
    lefty = [(1, index, 20, "a" if index % 2 else "b", bool(index % 2)) for index in range(9)]
    lefty += [(1, 9, 20, "a", False), (1, 10, 20, "tie", True)]
    nine_of_nine = [(2, index, 20, "a" if index % 2 else "b", bool(index % 2)) for index in range(9)]
    result = annotator_quality(rows(*lefty, *nine_of_nine))
    assert row_of(result, 1)["left_rate"] == 0.9 and row_of(result, 1)["warnings"] == [SAME_SIDE]
    # 9 of 9 is under the 10-vote minimum of the rate rule, and p = 0.0039 is not below 0.001.
    assert row_of(result, 2)["left_rate"] == 1.0 and row_of(result, 2)["warnings"] == []


def test_a_binomial_p_below_one_in_a_thousand_is_always_the_same_side_even_below_the_share_limit() -> None:
    # 8 left of 60 decisive: rate 0.133 (not ≤ 0.1) but p ≈ 2e-9. Left means a shown left or b shown right.
    votes = []
    for index in range(60):
        outcome, went_left = ("a" if index % 2 else "b"), index < 8
        votes.append((1, index, 20, outcome, (outcome == "a") == went_left))
    result = annotator_quality(rows(*votes))
    one = row_of(result, 1)
    assert one["left_rate"] == pytest.approx(8 / 60)
    assert one["left_p_value"] < 0.001 and one["warnings"] == [SAME_SIDE]


def test_nine_ties_in_ten_choices_is_always_the_same_outcome() -> None:
    ties = [(1, index, 20, "tie", True) for index in range(9)] + [(1, 9, 20, "a", True)]
    result = annotator_quality(rows(*ties))
    one = row_of(result, 1)
    assert (one["top_outcome"], one["top_outcome_share"]) == ("tie", 0.9)
    assert one["warnings"] == [SAME_OUTCOME]


def test_under_sixty_percent_of_five_gold_items_is_low_gold_accuracy() -> None:
    five = [(1, index, 20, outcome, True, "a") for index, outcome in enumerate(["a", "a", "b", "tie", "b"])]
    three = [(2, index, 20, outcome, True, "a") for index, outcome in enumerate(["b", "tie", "b"])]
    result = annotator_quality(rows(*five, *three))
    assert row_of(result, 1)["gold_accuracy"] == 0.4 and row_of(result, 1)["warnings"] == [LOW_GOLD]
    assert row_of(result, 2)["gold_accuracy"] == 0.0 and row_of(result, 2)["warnings"] == []  # 3 < 5 gold items


def test_matching_the_others_majority_on_fewer_than_four_in_ten_pairs_is_low_agreement() -> None:
    judgements = []
    for comparison in range(10):
        majority = ("a", "b")[comparison % 2]
        judgements += [(2, comparison, 20, majority, True), (3, comparison, 20, majority, False)]
        contrarian = majority if comparison < 3 else "tie" if comparison % 3 else ("b" if majority == "a" else "a")
        judgements.append((1, comparison, 20, contrarian, comparison % 2 == 0))
    result = annotator_quality(rows(*judgements))
    one = row_of(result, 1)
    assert (one["agreement_n"], one["agreement"]) == (10, 0.3)
    assert one["warnings"] == [LOW_AGREEMENT]


def test_the_thresholds_can_be_set() -> None:
    outcomes = ("a", "b", "tie", "a", "b")
    judgements = rows(*[(1, index, 10, outcomes[index], index % 2 == 0) for index in range(5)])
    assert annotator_quality(judgements)["warnings"].tolist() == [[]]
    strict = QualityThresholds(fast_median_seconds=12.0)
    assert annotator_quality(judgements, strict)["warnings"].tolist() == [[FAST]]


def test_a_judgement_without_an_overall_choice_counts_as_a_judgement_only() -> None:
    result = annotator_quality(rows((1, 10, 5, None, True), (1, 11, 7, "a", True)))
    one = row_of(result, 1)
    assert (one["judgements"], one["decisive"], one["overall_choices"], one["median_seconds"]) == (2, 1, 1, 6.0)


def test_no_judgements_give_an_empty_table_with_every_column() -> None:
    result = annotator_quality(rows())
    assert result.empty and list(result.columns) == QUALITY_COLUMNS


# The page, from the database ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_selector_builds_every_row_from_the_database_in_two_queries(
    annotator, second_annotator, django_assert_num_queries
) -> None:
    campaign = factories.campaign(overlap=3)
    third = factories.user("cid", "annotator")
    gold = factories.comparison(campaign)
    Comparison.objects.filter(pk=gold.pk).update(gold_outcome="a")
    plain = factories.comparison(campaign)
    factories.judgement(gold, annotator, "a", left_is_a=True, time_on_task_ms=2000)
    factories.judgement(plain, annotator, "b", left_is_a=True, time_on_task_ms=6000)
    factories.judgement(gold, second_annotator, "b", left_is_a=False, time_on_task_ms=10_000)
    factories.judgement(plain, second_annotator, "b", left_is_a=False, time_on_task_ms=12_000)
    factories.judgement(plain, third, "b", left_is_a=True, time_on_task_ms=12_000)
    skipped = factories.assignment(
        factories.comparison(campaign), annotator, skipped_at=timezone.now(), skip_reason="unreadable", released=True
    )
    AnswerFlag.objects.create(assignment=skipped, candidate=skipped.comparison.candidate_a, reason="broken")
    AnswerFlag.objects.create(assignment=skipped, candidate=skipped.comparison.candidate_b, reason="unsafe")
    annotator_flag(annotator=third, reason="clicks without reading", by=annotator)
    factories.judgement(factories.comparison(factories.campaign()), annotator)  # another campaign: not counted

    with django_assert_num_queries(2):
        rows = {row["username"]: row for row in annotator_quality_rows(campaign=campaign)}

    assert list(rows) == ["ann", "bea", "cid"]
    ann, bea = rows["ann"], rows["bea"]
    assert (ann["judgements"], ann["median_seconds"], ann["skips"], ann["answer_flags"]) == (2, 4.0, 1, 2)
    assert (ann["decisive"], ann["left_rate"]) == (2, 0.5)  # a shown left; b shown right
    assert (ann["gold_judged"], ann["gold_accuracy"]) == (1, 1.0)
    assert (bea["decisive"], bea["left_rate"], bea["gold_accuracy"]) == (2, 1.0, 0.0)  # b shown left, twice
    # plain: the others of ann (b, b) agree with ann; gold: the other of ann is bea alone (b), a majority of one.
    assert (ann["agreement_n"], ann["agreement"]) == (2, 0.5)
    assert (rows["cid"]["flag_reason"], ann["flag_reason"]) == ("clicks without reading", None)
    assert ann["warnings"] == [] and rows["cid"]["left_rate"] == 0.0


@pytest.mark.django_db
def test_the_quality_page_lists_each_annotator_with_numbers_and_warnings(client, admin_user, annotator) -> None:
    campaign = factories.campaign(overlap=1)
    for _ in range(10):
        factories.judgement(factories.comparison(campaign), annotator, "tie", time_on_task_ms=1500)
    client.force_login(admin_user)
    html = client.get(reverse("campaign_quality", args=[campaign.pk])).content.decode()
    assert "ann" in html and "1.5 s" in html
    assert "implausibly fast" in html and "always the same outcome" in html
    assert "Flag ann" in html
    detail = client.get(reverse("campaign_detail", args=[campaign.pk])).content.decode()
    assert reverse("campaign_quality", args=[campaign.pk]) in detail


@pytest.mark.django_db
def test_an_admin_flags_and_unflags_an_annotator_from_the_quality_page(client, admin_user, annotator) -> None:
    campaign = factories.campaign()
    factories.judgement(factories.comparison(campaign), annotator)
    client.force_login(admin_user)
    page = reverse("campaign_quality", args=[campaign.pk])

    response = client.post(reverse("annotator_flag", args=[campaign.pk, annotator.pk]), {"reason": "all ties"})
    assert response.status_code == 302 and response["Location"] == page
    flag = AnnotatorFlag.objects.get(annotator=annotator)
    assert (flag.reason, flag.flagged_by) == ("all ties", admin_user)
    assert "Unflag ann" in client.get(page).content.decode()

    client.post(reverse("annotator_flag", args=[campaign.pk, annotator.pk]), {"reason": "too fast"})
    assert AnnotatorFlag.objects.get(annotator=annotator).reason == "too fast"  # replaced, still one flag

    response = client.post(reverse("annotator_unflag", args=[campaign.pk, annotator.pk]))
    assert response.status_code == 302 and not AnnotatorFlag.objects.exists()


@pytest.mark.django_db
def test_a_flag_without_a_reason_is_refused_and_stores_nothing(client, admin_user, annotator) -> None:
    campaign = factories.campaign()
    client.force_login(admin_user)
    response = client.post(reverse("annotator_flag", args=[campaign.pk, annotator.pk]), {"reason": "  "}, follow=True)
    assert "Reason: This field is required." in response.content.decode()
    assert not AnnotatorFlag.objects.exists()
    with pytest.raises(ServiceError, match="at most 1000"):
        annotator_flag(annotator=annotator, reason="x" * 1001, by=admin_user)
    assert not AnnotatorFlag.objects.exists()


@pytest.mark.django_db
def test_flagging_takes_a_post_and_an_admin(client, admin_user, researcher, annotator) -> None:
    campaign = factories.campaign()
    url = reverse("annotator_flag", args=[campaign.pk, annotator.pk])
    client.force_login(admin_user)
    assert client.get(url).status_code == 405
    assert client.post(reverse("annotator_flag", args=[campaign.pk, 999_999]), {"reason": "x"}).status_code == 404
    client.force_login(researcher)
    assert client.post(url, {"reason": "x"}).status_code == 403
    assert not AnnotatorFlag.objects.exists()


@pytest.mark.django_db
def test_simulated_judgements_count_in_no_figure_and_scripted_accounts_are_listed_apart(
    client, admin_user, annotator, second_annotator, django_assert_num_queries
) -> None:
    campaign = factories.campaign(overlap=3)
    oracle = factories.user("oracle-0", "annotator")
    comparisons = [factories.comparison(campaign) for _ in range(4)]
    for comparison in comparisons:
        factories.judgement(comparison, annotator, "a", time_on_task_ms=9000)
        factories.judgement(comparison, second_annotator, "a", time_on_task_ms=9000)
        # The script always disagrees with the people, quickly: were it counted, it would skew their agreement.
        factories.judgement(comparison, oracle, "b", time_on_task_ms=10, simulated=True)
    # A person's simulated judgement elsewhere does not make them a scripted account here.
    factories.judgement(factories.comparison(factories.campaign()), second_annotator, simulated=True)

    with django_assert_num_queries(2):
        rows = {row["username"]: row for row in annotator_quality_rows(campaign=campaign)}

    ann, bea, script = rows["ann"], rows["bea"], rows["oracle-0"]
    assert (ann["judgements"], ann["simulated"], ann["scripted"]) == (4, 0, False)
    assert (ann["agreement_n"], ann["agreement"]) == (4, 1.0)  # only bea is the others' majority
    assert not bea["scripted"]
    assert (script["judgements"], script["simulated"], script["scripted"]) == (0, 4, True)
    assert script.get("median_seconds") is None and script["warnings"] == []

    client.force_login(admin_user)
    response = client.get(reverse("campaign_quality", args=[campaign.pk]))
    assert [row["username"] for row in response.context["rows"]] == ["ann", "bea"]
    assert [row["username"] for row in response.context["scripted"]] == ["oracle-0"]
    html = response.content.decode()
    assert "Scripted annotators" in html and "Flag oracle-0" not in html
