"""Each annotator's rated pairs per campaign are a row (models.Participation), kept where an assignment is
completed: it always equals the count of their completed assignments, and the pair page and the quota read it."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from evaluator.models import Assignment, Participation
from evaluator.services.imports import judgements_import
from evaluator.services.rating import assignment_next, judgement_submit
from tests import factories
from tests.evaluator.test_judgement_import import jsonl, prefloop_line

pytestmark = pytest.mark.django_db


def counted() -> list[tuple[int, int, int]]:
    """(annotator, campaign, completed assignments), recounted from the rows."""
    rows = (
        Assignment.objects.filter(completed_at__isnull=False)
        .values_list("annotator_id", "comparison__campaign_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return sorted(rows)


def kept() -> list[tuple[int, int, int]]:
    return sorted(Participation.objects.values_list("annotator_id", "campaign_id", "rated"))


def overall_left(campaign) -> dict[str, str]:
    return {slug: "left" for slug in campaign.criterion_slugs}


def test_every_way_a_pair_gets_rated_adds_one_and_a_repeat_adds_nothing(annotator, second_annotator) -> None:
    campaign = factories.campaign(overlap=2)
    for i in range(4):
        factories.comparison(campaign, texts=(f"a{i}", f"b{i}"))
    now = timezone.now()
    for _ in range(2):
        lease = assignment_next(annotator=annotator, now=now)
        judgement_submit(token=str(lease.token), annotator=annotator, choices=overall_left(campaign), now=now)
        judgement_submit(token=str(lease.token), annotator=annotator, choices=overall_left(campaign), now=now)
    # A late submission on an expired lease that still has room counts too.
    late = assignment_next(annotator=second_annotator, now=now)
    later = now + timedelta(hours=2)
    judgement_submit(token=str(late.token), annotator=second_annotator, choices=overall_left(campaign), now=later)

    assert kept() == counted() == sorted([(annotator.pk, campaign.pk, 2), (second_annotator.pk, campaign.pk, 1)])


def test_an_import_adds_each_annotators_judgements(annotator) -> None:
    campaign = factories.campaign(name="Imported")
    factories.judgement(factories.comparison(campaign), annotator)
    lines = [prefloop_line(annotator="ann"), prefloop_line(annotator="zoe", prompt_id="q2", prompt="Why?")]

    judgements_import(campaign=campaign, data=jsonl(*lines))

    assert kept() == counted()
    assert Participation.objects.get(annotator=annotator, campaign=campaign).rated == 2


def test_the_pair_page_and_the_quota_read_the_row(client, annotator) -> None:
    campaign = factories.campaign(overlap=1, quota_per_annotator=3)
    for i in range(5):
        factories.comparison(campaign, texts=(f"a{i}", f"b{i}"))
    client.force_login(annotator)
    for _ in range(2):
        token = assignment_next(annotator=annotator).token
        client.post(reverse("rate_submit", args=[token]), overall_left(campaign))

    page = client.get(reverse("rate")).content.decode()  # claims the third pair
    token = Assignment.objects.get(annotator=annotator, completed_at__isnull=True).token
    client.post(reverse("rate_submit", args=[token]), overall_left(campaign))

    assert "2 of your 3" in page
    assert assignment_next(annotator=annotator) is None  # 3 rated: the quota
    assert kept() == [(annotator.pk, campaign.pk, 3)]


def test_deleting_judged_comparisons_in_the_django_admin_recounts_the_rated_pairs(client, annotator) -> None:
    client.force_login(get_user_model().objects.create_superuser("root", password=factories.PASSWORD))
    campaign = factories.campaign()
    pairs = [factories.comparison(campaign) for _ in range(4)]
    for pair in pairs:
        factories.judgement(pair, annotator)
    done = Assignment.objects.get(comparison=pairs[2])

    client.post(reverse("admin:evaluator_comparison_delete", args=[pairs[0].pk]), {"post": "yes"})
    client.post(
        reverse("admin:evaluator_prompt_changelist"),
        {"action": "delete_selected", "_selected_action": [pairs[1].prompt_id], "post": "yes"},
    )
    client.post(reverse("admin:evaluator_assignment_delete", args=[done.pk]), {"post": "yes"})

    assert kept() == counted() == [(annotator.pk, campaign.pk, 1)]
