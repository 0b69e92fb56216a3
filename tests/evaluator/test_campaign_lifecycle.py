"""Campaign lifecycle (draft → active ⇄ paused → closed), who is assigned, priority, and how the claim and the
submission enforce them; the admin's and the annotator's pages for them."""

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.db import IntegrityError, transaction
from django.urls import reverse

from evaluator.errors import ServiceError
from evaluator.models import Assignment, Campaign, CampaignMember, CampaignState, Comparison, CriterionChoice, Judgement
from evaluator.selectors.rating import answers_identical
from evaluator.services.campaigns import (
    campaign_create,
    campaign_member_add,
    campaign_member_remove,
    campaign_state_change,
)
from evaluator.services.generation import comparisons_create
from evaluator.services.rating import assignment_next, judgement_submit
from tests import factories

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def all_sides(campaign: Campaign, side: str) -> dict[str, str]:
    return dict.fromkeys(campaign.criterion_slugs, side)


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# Lifecycle -------------------------------------------------------------------------------------------------


def test_a_new_campaign_starts_as_a_draft_that_nobody_is_assigned_to_and_serves_nothing(annotator) -> None:
    campaign = campaign_create(name="Fresh")
    factories.comparison(campaign)
    assert campaign.state == CampaignState.DRAFT and not campaign.members.exists()
    assert assignment_next(annotator=annotator) is None
    campaign_member_add(campaign=campaign, group=Group.objects.get(name="annotator"))
    assert assignment_next(annotator=annotator) is None  # still a draft
    campaign_state_change(campaign=campaign, state=CampaignState.ACTIVE)
    assert assignment_next(annotator=annotator) is not None


@pytest.mark.parametrize(
    ("start", "target"),
    [
        ("draft", "active"),
        ("draft", "closed"),
        ("active", "paused"),
        ("paused", "active"),
        ("active", "closed"),
        ("paused", "closed"),
    ],
)
def test_the_state_moves_along_the_lifecycle(start: str, target: str) -> None:
    campaign = factories.campaign(state=start)
    campaign_state_change(campaign=campaign, state=target)
    campaign.refresh_from_db()
    assert campaign.state == target and campaign.state_changed_at is not None


@pytest.mark.parametrize(
    ("start", "target", "message"),
    [
        ("closed", "active", "“Old” is closed, so it cannot be activated."),
        ("closed", "paused", "“Old” is closed, so it cannot be paused."),
        ("draft", "paused", "“Old” is a draft, so it cannot be paused."),
        ("active", "active", "“Old” is active, so it cannot be activated."),
        ("active", "draft", "“Old” is active, so it cannot be made a draft again."),
    ],
)
def test_a_move_the_lifecycle_does_not_allow_is_refused_and_changes_nothing(start, target, message) -> None:
    campaign = factories.campaign(name="Old", state=start)
    with pytest.raises(ServiceError, match=message):
        campaign_state_change(campaign=campaign, state=target)
    assert Campaign.objects.get(pk=campaign.pk).state == start


def test_a_stale_copy_cannot_reopen_a_campaign_closed_meanwhile() -> None:
    campaign = factories.campaign(name="Raced", state="paused")
    stale = Campaign.objects.get(pk=campaign.pk)
    campaign_state_change(campaign=campaign, state=CampaignState.CLOSED)
    with pytest.raises(ServiceError, match="is closed"):
        campaign_state_change(campaign=stale, state=CampaignState.ACTIVE)  # conditional update: 0 rows
    assert Campaign.objects.get(pk=campaign.pk).state == CampaignState.CLOSED


def test_the_database_refuses_an_unknown_state_and_a_member_that_is_both_or_neither() -> None:
    campaign = factories.campaign()
    with pytest.raises(IntegrityError), transaction.atomic():
        Campaign.objects.filter(pk=campaign.pk).update(state="archived")
    user = factories.user("someone", "annotator")
    with pytest.raises(IntegrityError), transaction.atomic():
        CampaignMember.objects.create(campaign=campaign, user=user, group=Group.objects.get(name="annotator"))
    with pytest.raises(IntegrityError), transaction.atomic():
        CampaignMember.objects.create(campaign=campaign)
    CampaignMember.objects.create(campaign=campaign, user=user)
    with pytest.raises(IntegrityError), transaction.atomic():
        CampaignMember.objects.create(campaign=campaign, user=user)


# What the claim serves -------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["draft", "paused", "closed"])
def test_a_campaign_that_is_not_active_is_never_served(annotator, state: str) -> None:
    campaign = factories.campaign(state=state)
    factories.comparison(campaign)
    assert assignment_next(annotator=annotator) is None
    said = "a draft" if state == "draft" else state
    with pytest.raises(ServiceError, match=f"is {said}: no pairs are served from it"):
        assignment_next(annotator=annotator, campaign=campaign)
    assert not Assignment.objects.exists()


def test_an_unassigned_campaign_is_never_served_and_assignment_by_user_or_group_opens_it(annotator) -> None:
    campaign = factories.campaign(members=())
    factories.comparison(campaign)
    factories.comparison(campaign)
    assert assignment_next(annotator=annotator) is None
    with pytest.raises(ServiceError, match="You are not assigned to"):
        assignment_next(annotator=annotator, campaign=campaign)
    member = campaign_member_add(campaign=campaign, user=annotator)
    first = assignment_next(annotator=annotator)
    assert first is not None and first.comparison.campaign_id == campaign.pk
    judgement_submit(token=str(first.token), annotator=annotator, choices=all_sides(campaign, "left"))
    campaign_member_remove(campaign=campaign, member_id=member.pk)
    assert assignment_next(annotator=annotator) is None
    team = Group.objects.create(name="team-heritage")
    annotator.groups.add(team)
    campaign_member_add(campaign=campaign, group=team)
    assert assignment_next(annotator=annotator) is not None


def test_the_highest_priority_campaign_with_work_comes_first_then_the_next(annotator) -> None:
    low = factories.campaign(name="Low", priority=1, overlap=1)
    high = factories.campaign(name="High", priority=9, overlap=1)
    factories.comparison(low)
    factories.comparison(high)
    served = []
    while (task := assignment_next(annotator=annotator)) is not None:
        served.append(task.comparison.campaign.name)
        judgement_submit(token=str(task.token), annotator=annotator, choices=all_sides(task.comparison.campaign, "tie"))
    assert served == ["High", "Low"]


def test_a_picked_campaign_is_served_alone_until_it_runs_out(annotator) -> None:
    high = factories.campaign(name="High", priority=9, overlap=1)
    low = factories.campaign(name="Low", priority=1, overlap=1)
    factories.comparison(high)
    factories.comparison(low)
    task = assignment_next(annotator=annotator, campaign=low)
    assert task.comparison.campaign_id == low.pk
    judgement_submit(token=str(task.token), annotator=annotator, choices=all_sides(low, "left"))
    assert assignment_next(annotator=annotator, campaign=low) is None
    assert assignment_next(annotator=annotator).comparison.campaign_id == high.pk


# Submissions after a pause, a close or an unassignment -----------------------------------------------------


@pytest.mark.parametrize("state", ["paused", "closed"])
def test_a_submission_for_a_campaign_paused_or_closed_meanwhile_is_refused_and_nothing_is_stored(
    annotator, state: str
) -> None:
    campaign = factories.campaign(name="Study")
    factories.comparison(campaign)
    task = assignment_next(annotator=annotator)
    campaign_state_change(campaign=campaign, state=state)
    with pytest.raises(ServiceError, match=f"“Study” was {state} while you rated this pair"):
        judgement_submit(token=str(task.token), annotator=annotator, choices=all_sides(campaign, "left"))
    assert not Judgement.objects.exists() and not CriterionChoice.objects.exists()
    task.refresh_from_db()
    assert task.completed_at is None
    # Its open lease is not served again while the campaign is not active.
    assert assignment_next(annotator=annotator) is None


def test_a_lease_still_open_when_its_campaign_is_resumed_can_be_submitted(annotator) -> None:
    campaign = factories.campaign()
    factories.comparison(campaign)
    task = assignment_next(annotator=annotator)
    campaign_state_change(campaign=campaign, state=CampaignState.PAUSED)
    campaign_state_change(campaign=campaign, state=CampaignState.ACTIVE)
    assert assignment_next(annotator=annotator).pk == task.pk
    judgement_submit(token=str(task.token), annotator=annotator, choices=all_sides(campaign, "left"))
    assert Judgement.objects.count() == 1


def test_a_submission_after_the_annotator_was_unassigned_is_refused(annotator) -> None:
    campaign = factories.campaign(name="Study", members=())
    member = campaign_member_add(campaign=campaign, user=annotator)
    factories.comparison(campaign)
    task = assignment_next(annotator=annotator)
    campaign_member_remove(campaign=campaign, member_id=member.pk)
    with pytest.raises(ServiceError, match="You are no longer assigned to “Study”"):
        judgement_submit(token=str(task.token), annotator=annotator, choices=all_sides(campaign, "left"))
    assert not Judgement.objects.exists()


def test_the_rating_page_says_the_submission_was_refused_and_moves_on(client, annotator) -> None:
    paused = factories.campaign(name="Paused study", priority=5)
    other = factories.campaign(name="Other study")
    factories.comparison(paused)
    factories.comparison(other, texts=("Other first", "Other second"))
    client.force_login(annotator)
    client.get(reverse("rate"))
    task = Assignment.objects.get()
    campaign_state_change(campaign=paused, state=CampaignState.PAUSED)
    response = client.post(reverse("rate_submit", args=[task.token]), all_sides(paused, "left"), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "“Paused study” was paused while you rated this pair, so your choices were not stored." in html
    assert "Other first" in html and "Other study" in html  # the next campaign's pair
    assert not Judgement.objects.exists()


# Identical answers -----------------------------------------------------------------------------------------


def test_answers_that_differ_only_in_whitespace_count_as_identical() -> None:
    assert answers_identical("Keep it  dry.\n", " Keep it dry.")
    assert not answers_identical("Keep it dry.", "Keep it dry!")


def test_pairing_leaves_out_two_answers_that_read_the_same() -> None:
    campaign = factories.campaign()
    first, second = factories.variant(), factories.variant()
    same, different = factories.prompt(campaign), factories.prompt(campaign)
    factories.candidate(same, first, text="Store it at 18 °C.")
    factories.candidate(same, second, text="Store it at  18 °C.\n")
    factories.candidate(different, first, text="Store it dry.")
    factories.candidate(different, second, text="Store it cold.")
    assert comparisons_create(campaign=campaign, samples={first.pk: 1, second.pk: 1}) == 1
    assert list(Comparison.objects.values_list("prompt_id", flat=True)) == [different.pk]


def test_the_claim_passes_over_a_pair_of_identical_answers_made_before_the_rule(annotator) -> None:
    campaign = factories.campaign()
    factories.comparison(campaign, texts=("Same words.", "Same  words."))
    assert assignment_next(annotator=annotator) is None
    kept = factories.comparison(campaign, texts=("One answer.", "Another answer."))
    assert assignment_next(annotator=annotator).comparison_id == kept.pk


# The admin's campaign page ---------------------------------------------------------------------------------


def test_the_campaign_page_shows_the_state_its_moves_and_the_members(client, admin_user) -> None:
    campaign = campaign_create(name="Study")
    client.force_login(admin_user)
    html = client.get(reverse("campaign_detail", args=[campaign.pk])).content.decode()
    assert ">Draft</span>" in html and ">Activate</button>" in html and ">Close for good</button>" in html
    assert "Nobody is assigned yet" in html and ">Pause</button>" not in html
    client.post(reverse("campaign_member_add", args=[campaign.pk]), {"group": "annotator"})
    client.post(reverse("campaign_state", args=[campaign.pk]), {"state": "active"})
    html = client.get(reverse("campaign_detail", args=[campaign.pk])).content.decode()
    assert ">Active</span>" in html and ">Pause</button>" in html and "group “annotator”" in html
    assert "Nobody is assigned yet" not in html
    client.post(reverse("campaign_state", args=[campaign.pk]), {"state": "paused"})
    assert ">Resume</button>" in client.get(reverse("campaign_detail", args=[campaign.pk])).content.decode()


@pytest.mark.parametrize(
    ("posted", "message"),
    [
        ({"username": "nobody"}, "There is no user named “nobody”."),
        ({"group": "no-such-team"}, "There is no group named “no-such-team”."),
        ({"username": "rex"}, "“rex” does not have the annotator role"),
        ({}, "Give either an annotator's username or a group name"),
        ({"username": "ann", "group": "annotator"}, "Give either an annotator's username or a group name"),
    ],
)
def test_assigning_someone_who_cannot_be_assigned_is_refused_by_the_form(
    client, admin_user, annotator, researcher, posted, message
) -> None:
    campaign = factories.campaign(members=())
    client.force_login(admin_user)
    response = client.post(reverse("campaign_member_add", args=[campaign.pk]), posted)
    assert response.status_code == 302
    assert any(message in text for text in messages_of(response)), messages_of(response)
    assert not CampaignMember.objects.exists()


def test_assigning_the_same_annotator_twice_says_so_and_keeps_one_row(client, admin_user, annotator) -> None:
    campaign = factories.campaign(name="Study", members=())
    client.force_login(admin_user)
    client.post(reverse("campaign_member_add", args=[campaign.pk]), {"username": "ann"})
    response = client.post(reverse("campaign_member_add", args=[campaign.pk]), {"username": "ann"})
    assert "“ann” is already assigned to “Study”." in messages_of(response)
    member = CampaignMember.objects.get()
    assert (member.user, member.added_by) == (annotator, admin_user)
    client.post(reverse("campaign_member_remove", args=[campaign.pk, member.pk]))
    assert not CampaignMember.objects.exists()


def test_an_unknown_state_is_refused_by_the_form(client, admin_user) -> None:
    campaign = factories.campaign()
    client.force_login(admin_user)
    response = client.post(reverse("campaign_state", args=[campaign.pk]), {"state": "archived"})
    assert any("archived is not one of the available choices" in text for text in messages_of(response))
    assert Campaign.objects.get(pk=campaign.pk).state == CampaignState.ACTIVE


def test_priority_is_a_campaign_setting(client, admin_user) -> None:
    campaign = factories.campaign(name="Study")
    client.force_login(admin_user)
    client.post(reverse("campaign_update", args=[campaign.pk]), {"name": "Study", "overlap": 2, "priority": 7})
    assert Campaign.objects.get(pk=campaign.pk).priority == 7


# The annotator's campaign list -----------------------------------------------------------------------------


def test_the_campaign_list_shows_only_active_assigned_campaigns_with_the_annotators_progress(
    client, annotator, second_annotator
) -> None:
    mine = factories.campaign(name="Mine", overlap=1, quota_per_annotator=4)
    factories.judgement(factories.comparison(mine), annotator)
    factories.comparison(mine)
    factories.campaign(name="Paused one", state="paused")
    factories.campaign(name="Someone else's", members=())
    client.force_login(annotator)
    html = client.get(reverse("rate_campaigns")).content.decode()
    assert "Mine" in html and "1 pair of your 4" in html and "50%" in html
    assert "Paused one" not in html and "Someone else" not in html


def test_picking_a_campaign_rates_in_it_and_next_goes_back_to_priority_order(client, annotator) -> None:
    high = factories.campaign(name="High", priority=9, overlap=1)
    low = factories.campaign(name="Low", priority=1, overlap=1)
    factories.comparison(high, texts=("High one", "High two"))
    factories.comparison(low, texts=("Low one", "Low two"))
    client.force_login(annotator)
    response = client.post(reverse("rate_campaign_pick", args=[low.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("rate")
    html = client.get(reverse("rate")).content.decode()
    assert 'id="campaign-name">Low</strong>' in html and "Low one" in html
    task = Assignment.objects.get()
    done = client.post(reverse("rate_submit", args=[task.token]), all_sides(low, "left"), **HTMX).content.decode()
    assert "Nothing is left for you in “Low” for now." in done and "Next campaign with work" in done
    client.post(reverse("rate_next"))
    assert "High one" in client.get(reverse("rate")).content.decode()


def test_picking_a_campaign_one_is_not_assigned_to_is_refused(client, annotator) -> None:
    campaign = factories.campaign(name="Closed study", state="closed")
    client.force_login(annotator)
    response = client.post(reverse("rate_campaign_pick", args=[campaign.pk]))
    assert response["Location"] == reverse("rate_campaigns")
    assert "“Closed study” is not open to you" in messages_of(response)[0]
    assert "prefloop_rating_campaign" not in client.session
