from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from evaluator import services
from evaluator.models import Assignment, CriterionChoice, Judgement
from tests import factories

pytestmark = pytest.mark.django_db


def all_sides(campaign, side: str) -> dict[str, str]:
    return {slug: side for slug in campaign.criterion_slugs}


@pytest.mark.parametrize(
    ("side", "left_is_a", "outcome"),
    [("left", True, "a"), ("left", False, "b"), ("right", True, "b"), ("right", False, "a"), ("tie", True, "tie")],
)
def test_a_screen_side_is_stored_as_the_variant_that_was_shown_there(side, left_is_a, outcome, annotator) -> None:
    campaign = factories.campaign()
    assignment = factories.assignment(factories.comparison(campaign), annotator, left_is_a=left_is_a)
    services.judgement_submit(token=str(assignment.token), annotator=annotator, choices=all_sides(campaign, side))
    assert set(CriterionChoice.objects.values_list("outcome", flat=True)) == {outcome}


def test_a_repeated_submission_stores_one_judgement_and_returns_it(annotator) -> None:
    campaign = factories.campaign()
    assignment = factories.assignment(factories.comparison(campaign), annotator)
    first = services.judgement_submit(
        token=str(assignment.token), annotator=annotator, choices=all_sides(campaign, "left")
    )
    second = services.judgement_submit(
        token=str(assignment.token), annotator=annotator, choices=all_sides(campaign, "right")
    )
    assert first.pk == second.pk
    assert Judgement.objects.count() == 1
    assert set(CriterionChoice.objects.values_list("outcome", flat=True)) == {"a"}


def test_another_annotators_token_is_refused_and_writes_nothing(annotator, second_annotator) -> None:
    campaign = factories.campaign()
    assignment = factories.assignment(factories.comparison(campaign), annotator)
    with pytest.raises(PermissionDenied):
        services.judgement_submit(
            token=str(assignment.token), annotator=second_annotator, choices=all_sides(campaign, "left")
        )
    assert not Judgement.objects.exists()


def test_a_judgement_missing_a_criterion_is_refused_whole(annotator) -> None:
    campaign = factories.campaign()
    assignment = factories.assignment(factories.comparison(campaign), annotator)
    choices = all_sides(campaign, "left")
    del choices["safety"]
    with pytest.raises(services.ServiceError, match="safety"):
        services.judgement_submit(token=str(assignment.token), annotator=annotator, choices=choices)
    assert not Judgement.objects.exists()
    assert not CriterionChoice.objects.exists()


def test_a_comparison_is_handed_out_at_most_k_times_and_never_twice_to_one_annotator(annotator) -> None:
    campaign = factories.campaign(overlap=2)
    factories.comparison(campaign)
    others = [factories.user(f"extra{i}", "annotator") for i in range(3)]

    first = services.assignment_next(annotator=annotator)
    assert services.assignment_next(annotator=annotator) == first  # the open lease is handed back, not a new one
    services.judgement_submit(token=str(first.token), annotator=annotator, choices=all_sides(campaign, "tie"))
    assert services.assignment_next(annotator=annotator) is None
    assert services.assignment_next(annotator=others[0]) is not None
    assert services.assignment_next(annotator=others[1]) is None  # k = 2 reached
    assert Assignment.objects.count() == 2


def test_an_expired_lease_returns_the_comparison_to_the_pool_and_cannot_push_it_past_k(annotator) -> None:
    campaign = factories.campaign(overlap=1)
    factories.comparison(campaign)
    late = services.assignment_next(annotator=annotator)
    Assignment.objects.filter(pk=late.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    newcomer = factories.user("newcomer", "annotator")
    fresh = services.assignment_next(annotator=newcomer)
    assert fresh is not None and fresh.comparison_id == late.comparison_id
    with pytest.raises(services.ServiceError, match="time ran out"):
        services.judgement_submit(token=str(late.token), annotator=annotator, choices=all_sides(campaign, "left"))
    services.judgement_submit(token=str(fresh.token), annotator=newcomer, choices=all_sides(campaign, "left"))
    assert Judgement.objects.count() == 1


@pytest.mark.parametrize(
    ("url", "allowed"),
    [("/rate/", {"annotator"}), ("/stats/", {"researcher", "admin"}), ("/manage/", {"admin"})],
)
def test_each_page_lets_in_only_its_roles(client, url, allowed, annotator, researcher, admin_user, outsider) -> None:
    assert client.get(url).status_code == 302  # anonymous: to the login page
    for user, role in ((annotator, "annotator"), (researcher, "researcher"), (admin_user, "admin"), (outsider, None)):
        client.force_login(user)
        assert client.get(url).status_code == (200 if role in allowed else 403), (url, role)
