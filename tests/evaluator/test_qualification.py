"""Qualification: gold comparisons an annotator must answer well enough before a campaign serves them its pairs."""

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from evaluator.errors import QualificationDue, ServiceError
from evaluator.models import (
    Assignment,
    Campaign,
    Judgement,
    QualificationAnswer,
    QualificationAttempt,
    QualificationItem,
)
from evaluator.services.campaigns import campaign_update
from evaluator.services.qualification import (
    _needed,
    qualification_answer_submit,
    qualification_attempt_start,
    qualification_pair_next,
)
from evaluator.services.rating import assignment_next, judgement_submit
from tests import factories
from tests.evaluator.test_assignment_concurrency import run_in_threads

GOLD = ("a", "b", "tie")


def qualifying_campaign(*, items: int = 3, attempts: int = 2, threshold: float = 0.6, pairs: int = 2) -> Campaign:
    """An active campaign (the annotator role assigned) with `pairs` ordinary comparisons and `items` gold ones,
    the latter its qualification set."""
    campaign = factories.campaign(
        qualification_required=True, qualification_attempts=attempts, qualification_threshold=threshold
    )
    for i in range(pairs):
        factories.comparison(campaign, texts=(f"plain a{i}", f"plain b{i}"))
    for i in range(items):
        gold = factories.comparison(campaign, texts=(f"known a{i}", f"known b{i}"))
        gold.gold_outcome = GOLD[i % 3]
        gold.save(update_fields=["gold_outcome"])
        QualificationItem.objects.create(campaign=campaign, comparison=gold)
    return campaign


def side_for(answer: QualificationAnswer, *, right: bool) -> str:
    """The screen side that matches the item's gold outcome (right) or does not (wrong)."""
    gold = answer.comparison.gold_outcome
    correct = "tie" if gold == "tie" else "left" if (gold == "a") == answer.left_is_a else "right"
    return correct if right else ("left" if correct != "left" else "right")


def answer_all(campaign: Campaign, annotator, *, right: int) -> QualificationAttempt:
    """Answer the attempt under way: the first `right` items like the gold outcome, the rest not."""
    attempt = None
    for position in range(100):
        answer = qualification_pair_next(campaign=campaign, annotator=annotator)
        if answer is None:
            break
        side = side_for(answer, right=position < right)
        attempt = qualification_answer_submit(token=str(answer.token), annotator=annotator, side=side)
    assert attempt is not None
    return attempt


@pytest.mark.django_db
def test_an_annotator_who_has_not_qualified_is_served_no_ordinary_pair(annotator) -> None:
    campaign = qualifying_campaign()

    with pytest.raises(QualificationDue) as due:
        assignment_next(annotator=annotator)

    assert due.value.campaign == campaign
    assert not Assignment.objects.exists()


@pytest.mark.django_db
def test_the_first_attempt_starts_with_each_item_once_and_shows_no_gold_outcome(client, annotator) -> None:
    campaign = qualifying_campaign(items=3)
    client.force_login(annotator)

    page = client.get(reverse("rate")).content.decode()

    attempt = QualificationAttempt.objects.get()
    assert (attempt.number, attempt.allowed, attempt.total, attempt.passed) == (1, 2, 3, None)
    assert sorted(attempt.answers.values_list("comparison_id", flat=True)) == sorted(
        QualificationItem.objects.filter(campaign=campaign).values_list("comparison_id", flat=True)
    )
    assert "Qualification: item 1 of 3 · attempt 1 of 2" in page
    first = attempt.answers.get(position=0)
    assert str(first.token) in page
    shown = first.comparison
    assert "gold" not in page.lower() and shown.variant_a.name not in page and shown.variant_b.name not in page
    assert not Assignment.objects.exists()


@pytest.mark.django_db
def test_passing_unlocks_the_ordinary_pairs(annotator) -> None:
    campaign = qualifying_campaign(items=3, threshold=0.6)

    attempt = answer_all(campaign, annotator, right=2)

    assert (attempt.correct, attempt.passed) == (2, True) and attempt.finished_at is not None
    stored = QualificationAttempt.objects.get()
    assert (stored.correct, stored.passed) == (2, True)
    assignment = assignment_next(annotator=annotator)
    assert assignment is not None and assignment.comparison.gold_outcome is None


@pytest.mark.django_db
def test_a_failed_attempt_keeps_the_annotator_in_qualification_until_a_retry_asks_the_same_items(annotator) -> None:
    campaign = qualifying_campaign(items=3, threshold=0.6)

    first = answer_all(campaign, annotator, right=1)

    assert (first.correct, first.passed) == (1, False)
    with pytest.raises(QualificationDue):
        assignment_next(annotator=annotator)
    assert qualification_pair_next(campaign=campaign, annotator=annotator) is None  # a retry is asked for
    second = qualification_attempt_start(campaign=campaign, annotator=annotator)
    assert second.number == 2
    assert set(second.answers.values_list("comparison_id", flat=True)) == set(
        first.answers.values_list("comparison_id", flat=True)
    )


@pytest.mark.django_db
def test_after_the_last_failed_attempt_the_campaign_serves_nothing_and_another_start_is_refused(annotator) -> None:
    campaign = qualifying_campaign(items=2, attempts=1, threshold=1.0)
    other = factories.campaign(priority=-1)
    plain = factories.comparison(other)

    answer_all(campaign, annotator, right=1)

    with pytest.raises(ServiceError, match="used all 1 attempt at the qualification"):
        qualification_attempt_start(campaign=campaign, annotator=annotator)
    with pytest.raises(ServiceError, match="did not pass the qualification"):
        assignment_next(annotator=annotator, campaign=campaign)
    assert assignment_next(annotator=annotator).comparison == plain  # the next campaign with work
    assert QualificationAttempt.objects.count() == 1 and QualificationAnswer.objects.count() == 2


@pytest.mark.django_db
def test_a_start_past_the_limit_is_refused_by_the_database_too(annotator) -> None:
    campaign = qualifying_campaign(attempts=1)
    fields = {"campaign": campaign, "annotator": annotator, "threshold": 0.6, "total": 3, "allowed": 1}

    with pytest.raises(IntegrityError), transaction.atomic():
        QualificationAttempt.objects.create(number=2, **fields)
    QualificationAttempt.objects.create(number=1, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        QualificationAttempt.objects.create(number=1, **fields)

    assert QualificationAttempt.objects.count() == 1


@pytest.mark.parametrize(("threshold", "total", "needed"), [(0.8, 5, 4), (0.7, 10, 7), (0.6, 3, 2), (1.0, 4, 4)])
def test_the_items_needed_are_the_threshold_share_rounded_up(threshold, total, needed) -> None:
    assert _needed(threshold, total) == needed


@pytest.mark.django_db
def test_a_repeated_answer_changes_nothing_and_a_bad_side_is_refused(annotator) -> None:
    campaign = qualifying_campaign(items=3)
    answer = qualification_pair_next(campaign=campaign, annotator=annotator)
    assert answer is not None

    with pytest.raises(ServiceError, match="Choose left, right or tie"):
        qualification_answer_submit(token=str(answer.token), annotator=annotator, side="both")
    qualification_answer_submit(token=str(answer.token), annotator=annotator, side=side_for(answer, right=True))
    qualification_answer_submit(token=str(answer.token), annotator=annotator, side=side_for(answer, right=False))

    answer.refresh_from_db()
    assert answer.correct is True
    assert QualificationAttempt.objects.get().correct == 1
    assert QualificationAnswer.objects.filter(answered_at__isnull=False).count() == 1


@pytest.mark.django_db
def test_another_annotators_item_is_refused_and_writes_nothing(annotator, second_annotator) -> None:
    campaign = qualifying_campaign()
    answer = qualification_pair_next(campaign=campaign, annotator=annotator)
    assert answer is not None

    with pytest.raises(PermissionDenied):
        qualification_answer_submit(token=str(answer.token), annotator=second_annotator, side="left")

    assert not QualificationAnswer.objects.filter(answered_at__isnull=False).exists()


@pytest.mark.django_db
def test_an_open_lease_counts_only_after_qualifying_when_a_campaign_starts_asking(annotator) -> None:
    campaign = qualifying_campaign()
    campaign.qualification_required = False
    campaign.save(update_fields=["qualification_required"])
    lease = assignment_next(annotator=annotator)
    assert lease is not None
    Campaign.objects.filter(pk=campaign.pk).update(qualification_required=True)

    with pytest.raises(QualificationDue):
        assignment_next(annotator=annotator)
    choices = {slug: "left" for slug in campaign.criterion_slugs}
    with pytest.raises(ServiceError, match="pass its qualification first"):
        judgement_submit(token=str(lease.token), annotator=annotator, choices=choices)

    assert not Judgement.objects.exists()
    assert Assignment.objects.get().completed_at is None


@pytest.mark.django_db
def test_a_paused_campaign_takes_no_qualification_answer(annotator) -> None:
    campaign = qualifying_campaign()
    answer = qualification_pair_next(campaign=campaign, annotator=annotator)
    assert answer is not None
    Campaign.objects.filter(pk=campaign.pk).update(state="paused")

    with pytest.raises(ServiceError, match="is paused, so your answer was not stored"):
        qualification_answer_submit(token=str(answer.token), annotator=annotator, side="left")
    with pytest.raises(ServiceError, match="is paused, so no attempt was started"):
        qualification_attempt_start(campaign=campaign, annotator=annotator)

    assert not QualificationAnswer.objects.filter(answered_at__isnull=False).exists()


# Settings -------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_asking_for_a_qualification_without_items_is_refused_and_nothing_changes() -> None:
    campaign = factories.campaign()

    with pytest.raises(ServiceError, match="needs at least one gold comparison"):
        campaign_update(campaign=campaign, qualification_required=True, qualification_items=[], priority=5)

    campaign.refresh_from_db()
    assert (campaign.qualification_required, campaign.priority) == (False, 0)


@pytest.mark.django_db
def test_only_gold_comparisons_of_the_campaign_can_be_qualification_items() -> None:
    campaign = qualifying_campaign(items=1)
    plain = campaign.comparisons.filter(gold_outcome__isnull=True).first()
    elsewhere = factories.comparison(factories.campaign())

    with pytest.raises(ServiceError, match=f"#{elsewhere.pk}") as refused:
        campaign_update(campaign=campaign, qualification_items=[plain, elsewhere])

    assert f"#{plain.pk}" in str(refused.value)
    assert QualificationItem.objects.count() == 1


@pytest.mark.django_db
def test_an_admin_picks_the_qualification_on_the_campaign_settings_page(client, admin_user) -> None:
    campaign = qualifying_campaign(items=2)
    QualificationItem.objects.all().delete()
    Campaign.objects.filter(pk=campaign.pk).update(qualification_required=False)
    golds = list(campaign.comparisons.filter(gold_outcome__isnull=False))
    client.force_login(admin_user)

    page = client.get(reverse("campaign_detail", args=[campaign.pk])).content.decode()
    assert "Ask for a qualification" in page and f"pair #{golds[0].pk}, gold: Variant a" in page
    response = client.post(
        reverse("campaign_update", args=[campaign.pk]),
        {
            "name": campaign.name,
            "overlap": 2,
            "qualification_required": "on",
            "qualification_threshold": "0.75",
            "qualification_attempts": "3",
            "qualification_items": [golds[1].pk],
        },
    )

    assert response.status_code == 302
    campaign.refresh_from_db()
    assert (campaign.qualification_required, campaign.qualification_threshold, campaign.qualification_attempts) == (
        True,
        0.75,
        3,
    )
    assert list(QualificationItem.objects.values_list("comparison_id", flat=True)) == [golds[1].pk]


@pytest.mark.django_db
def test_the_settings_form_refuses_a_qualification_without_items(client, admin_user) -> None:
    campaign = qualifying_campaign(items=1)
    client.force_login(admin_user)

    client.post(
        reverse("campaign_update", args=[campaign.pk]),
        {"name": campaign.name, "overlap": 2, "qualification_required": "on"},
        follow=True,
    )

    assert QualificationItem.objects.count() == 1  # nothing changed


# Pages ----------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_rating_page_says_the_result_at_the_end_and_offers_a_retry(client, annotator) -> None:
    campaign = qualifying_campaign(items=2, threshold=1.0)
    client.force_login(annotator)
    client.get(reverse("rate"))
    first, second = QualificationAnswer.objects.order_by("position")

    client.post(reverse("rate_qualification_submit", args=[first.token]), {"overall": side_for(first, right=True)})
    page = client.post(
        reverse("rate_qualification_submit", args=[second.token]),
        {"overall": side_for(second, right=False)},
        follow=True,
    ).content.decode()

    assert f"You did not pass the qualification of “{campaign.name}” this time: 1 of 2 right (50%; 100% needed)" in page
    assert "Start attempt 2 of 2" in page
    retried = client.post(reverse("rate_qualification_retry", args=[campaign.pk]), follow=True).content.decode()
    assert "Qualification: item 1 of 2 · attempt 2 of 2" in retried


@pytest.mark.django_db
def test_an_empty_answer_shows_the_item_again_with_the_error(client, annotator) -> None:
    qualifying_campaign()
    client.force_login(annotator)
    client.get(reverse("rate"))
    answer = QualificationAnswer.objects.order_by("position").first()

    response = client.post(reverse("rate_qualification_submit", args=[answer.token]), {})

    assert response.status_code == 400 and "Choose left, tie or right." in response.content.decode()
    assert not QualificationAnswer.objects.filter(answered_at__isnull=False).exists()


@pytest.mark.django_db
def test_the_quality_page_lists_each_annotators_attempts(client, admin_user, annotator, second_annotator) -> None:
    campaign = qualifying_campaign(items=2, threshold=1.0)
    answer_all(campaign, annotator, right=2)
    answer_all(campaign, second_annotator, right=0)
    client.force_login(admin_user)

    page = client.get(reverse("campaign_quality", args=[campaign.pk])).content.decode()

    assert 'id="qualification-results"' in page
    assert "ann" in page and "2 of 2 (100%)" in page and "passed" in page
    assert "bea" in page and "0 of 2 (0%)" in page and "1 of 2 attempts used" in page


# Concurrency ------------------------------------------------------------------------------------------------------

pg_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL (SQLite serializes)")


@pg_only
@pytest.mark.django_db(transaction=True)
def test_two_submissions_of_the_last_item_of_the_last_attempt_at_once_store_one_answer(annotator) -> None:
    campaign = qualifying_campaign(items=2, attempts=1, threshold=1.0)
    first = qualification_pair_next(campaign=campaign, annotator=annotator)
    assert first is not None
    qualification_answer_submit(token=str(first.token), annotator=annotator, side=side_for(first, right=True))
    last = qualification_pair_next(campaign=campaign, annotator=annotator)
    assert last is not None

    def submit(right: bool):
        return lambda: qualification_answer_submit(
            token=str(last.token), annotator=annotator, side=side_for(last, right=right)
        )

    results = run_in_threads([submit(True), submit(False)])

    attempt = QualificationAttempt.objects.get()
    assert attempt.finished_at is not None and attempt.passed is not None
    last.refresh_from_db()
    assert attempt.correct == 1 + int(bool(last.correct))  # exactly one of the two answers counted
    assert attempt.passed == bool(last.correct)
    assert QualificationAnswer.objects.filter(answered_at__isnull=False).count() == 2
    assert all(result.pk == attempt.pk for result in results)


@pg_only
@pytest.mark.django_db(transaction=True)
def test_two_starts_of_the_last_attempt_at_once_make_one(annotator) -> None:
    campaign = qualifying_campaign(items=2, attempts=2, threshold=1.0)
    answer_all(campaign, annotator, right=0)

    started = run_in_threads([lambda: qualification_attempt_start(campaign=campaign, annotator=annotator)] * 2)

    assert started[0].pk == started[1].pk
    assert list(QualificationAttempt.objects.order_by("number").values_list("number", flat=True)) == [1, 2]
    assert QualificationAnswer.objects.filter(attempt=started[0]).count() == 2
    answer_all(campaign, annotator, right=0)
    with pytest.raises(ServiceError, match="used all 2 attempts"):
        qualification_attempt_start(campaign=campaign, annotator=annotator)
    assert QualificationAttempt.objects.count() == 2


@pytest.mark.django_db
def test_the_campaign_list_says_where_the_annotator_stands_in_each_qualification(client, annotator) -> None:
    due = qualifying_campaign(items=1)
    failed = qualifying_campaign(items=1, attempts=1, threshold=1.0)
    answer_all(failed, annotator, right=0)
    Campaign.objects.filter(pk=due.pk).update(name="Alpha study")
    Campaign.objects.filter(pk=failed.pk).update(name="Beta study")
    client.force_login(annotator)

    page = client.get(reverse("rate_campaigns")).content.decode()

    due_row = page[page.index("Alpha study") :].split("</tr>")[0]
    failed_row = page[page.index("Beta study") :].split("</tr>")[0]
    assert "qualification first" in due_row and "qualification not passed" in failed_row
