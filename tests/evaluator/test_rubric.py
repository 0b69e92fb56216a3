"""A campaign's own rubric: written on the new-campaign form, checked there and in the Django admin, asked on the
rating page."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from evaluator.errors import ServiceError
from evaluator.forms import CampaignForm
from evaluator.models import DEFAULT_CRITERIA, Campaign, CriterionChoice
from evaluator.services.campaigns import campaign_create
from tests import factories

pytestmark = pytest.mark.django_db

RUBRIC = "Tone: Which answer sounds kinder?\n\nSafety: Which answer avoids risky advice?\nCitations: Which cites?"


def test_a_campaign_created_with_its_own_criteria_asks_exactly_those_on_the_rating_page(
    client, admin_user, annotator
) -> None:
    client.force_login(admin_user)
    response = client.post(reverse("campaign_create"), {"name": "Kindness", "overlap": 1, "criteria": RUBRIC})
    campaign = Campaign.objects.get(name="Kindness")
    assert response.status_code == 302
    assert campaign.criteria == [
        {"slug": "tone", "label": "Tone", "definition": "Which answer sounds kinder?"},
        {"slug": "safety", "label": "Safety", "definition": "Which answer avoids risky advice?"},
        {"slug": "citations", "label": "Citations", "definition": "Which cites?"},
    ]
    detail = client.get(reverse("campaign_detail", args=[campaign.pk])).content.decode()
    assert "<strong>Citations</strong>: Which cites?" in detail and 'name="criteria"' not in detail  # fixed now

    # A new campaign is a draft nobody is assigned to: assigned and activated, it is served.
    client.post(reverse("campaign_member_add", args=[campaign.pk]), {"group": "annotator"})
    client.post(reverse("campaign_state", args=[campaign.pk]), {"state": "active"})
    task = factories.assignment(factories.comparison(campaign), annotator)
    client.force_login(annotator)
    page = client.get(reverse("rate")).content.decode()
    for text in ("Tone", "Which answer sounds kinder?", "Citations", "Which cites?", "Overall"):
        assert text in page
    assert "Factual accuracy" not in page and 'name="formatting"' not in page
    client.post(reverse("rate_submit", args=[task.token]), dict.fromkeys(campaign.criterion_slugs, "left"))
    stored = set(CriterionChoice.objects.values_list("criterion", flat=True))
    assert stored == {"tone", "safety", "citations", "overall"}


def test_the_new_campaign_form_offers_the_five_default_criteria_and_keeps_their_slugs(client, admin_user) -> None:
    client.force_login(admin_user)
    page = client.get(reverse("manage")).content.decode()
    assert "Factual accuracy: Which answer states facts correctly, without invented details?" in page
    initial = CampaignForm().fields["criteria"].initial
    client.post(reverse("campaign_create"), {"name": "Defaults", "overlap": 2, "criteria": initial})
    client.post(reverse("campaign_create"), {"name": "Empty", "overlap": 2, "criteria": "  \n"})
    assert Campaign.objects.get(name="Defaults").criteria == DEFAULT_CRITERIA
    assert Campaign.objects.get(name="Empty").criteria == DEFAULT_CRITERIA


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ("Tone: kind\n: Which is clearer?", "Line 2: the criterion has no name; write “Name: definition”."),
        ("Tone: kind\n\nTONE: again", "Line 3: “TONE” repeats an earlier criterion (both are stored as “tone”)."),
        ("Tone: kind\nClarity", "Line 2: “Clarity” has no definition; add one after a colon: “Clarity: …”."),
        ("Clarity:   ", "Line 1: “Clarity” has no definition"),
        ("Overall: all of it", "Line 1: the overall preference is always asked; leave it out of the criteria."),
        ("!!!: what", "Line 1: “!!!” needs a letter or digit (a–z, 0–9) to be stored under."),
        ("\n".join(f"C{number}: d" for number in range(9)), "9 criteria; at most 8"),
        ("x" * 65 + ": d", "Line 1: the name is 65 characters long; at most 64 are allowed."),
    ],
)
def test_a_rubric_the_rating_page_cannot_ask_is_refused_with_the_line_named(criteria, message) -> None:
    form = CampaignForm({"name": "Bad", "overlap": 2, "criteria": criteria})
    assert not form.is_valid()
    assert any(error.startswith(message) for error in form.errors["criteria"]), form.errors["criteria"]


def test_a_refused_rubric_is_shown_on_the_manage_page_and_creates_nothing(client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.post(
        reverse("campaign_create"), {"name": "Bad", "overlap": 2, "criteria": "Tone\nTone: kind"}, follow=True
    )
    assert "Rubric: Line 1: “Tone” has no definition" in response.content.decode()
    assert "Line 2: “Tone” repeats an earlier criterion" in response.content.decode()
    assert not Campaign.objects.exists()


def test_the_campaign_service_refuses_criteria_without_a_definition() -> None:
    with pytest.raises(ServiceError, match="Criterion 1: “Tone” has no definition"):
        campaign_create(name="Raw", criteria=[{"slug": "tone", "label": "Tone", "definition": ""}])
    with pytest.raises(ServiceError, match="must be a list of"):
        campaign_create(name="Raw", criteria=[{"slug": "tone", "label": "Tone"}])
    assert not Campaign.objects.exists()


def test_the_django_admin_refuses_criteria_json_the_rating_page_cannot_ask(client) -> None:
    campaign = factories.campaign(name="Edited")
    root = get_user_model().objects.create_superuser("root", password=factories.PASSWORD)
    client.force_login(root)
    url = reverse("admin:evaluator_campaign_change", args=[campaign.pk])
    fields = {"name": "Edited", "overlap": 2, "gold_rate": 0, "selection": "random", "priority": 0}

    missing = json.dumps([{"slug": "tone", "label": "Tone"}])
    refused = client.post(url, {**fields, "criteria": missing})
    assert refused.status_code == 200 and "must be a list of" in refused.content.decode()
    bad_slug = json.dumps([{"slug": "Tone Of Voice", "label": "Tone", "definition": "Kinder?"}])
    assert "may hold only a–z, 0–9 and _" in client.post(url, {**fields, "criteria": bad_slug}).content.decode()
    campaign.refresh_from_db()
    assert campaign.criteria == DEFAULT_CRITERIA

    good = [{"slug": "tone", "label": "Tone", "definition": "Which answer sounds kinder?"}]
    assert client.post(url, {**fields, "criteria": json.dumps(good)}).status_code == 302
    campaign.refresh_from_db()
    assert campaign.criteria == good


def test_the_rating_page_still_renders_a_stored_criterion_without_a_label_or_definition(client, annotator) -> None:
    # Rows from before the checks (or written around them): a missing definition used to be a KeyError, a 500.
    campaign = factories.campaign(criteria=[{"slug": "tone", "label": "Tone"}, {"slug": "clarity"}])
    factories.assignment(factories.comparison(campaign), annotator)
    client.force_login(annotator)
    response = client.get(reverse("rate"))
    assert response.status_code == 200
    assert "Tone" in response.content.decode() and "clarity" in response.content.decode()
