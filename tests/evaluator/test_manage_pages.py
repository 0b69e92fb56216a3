import pytest

from evaluator.errors import ServiceError
from evaluator.models import Campaign
from evaluator.services.campaigns import campaign_update

pytestmark = pytest.mark.django_db


def test_an_admin_creates_a_campaign_with_its_assignment_rules(client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.post(
        "/manage/campaigns/new/",
        {"name": "Rules", "overlap": 3, "quota_per_annotator": 40, "gold_rate": 0.1, "selection": "active"},
    )
    campaign = Campaign.objects.get(name="Rules")
    assert response.status_code == 302 and response["Location"] == f"/manage/campaigns/{campaign.pk}/"
    assert (campaign.overlap, campaign.quota_per_annotator, campaign.gold_rate, campaign.selection) == (
        3,
        40,
        0.1,
        "active",
    )


def test_a_campaign_with_bad_rules_is_refused_with_the_field_named(client, admin_user) -> None:
    client.force_login(admin_user)
    response = client.post("/manage/campaigns/new/", {"name": "Bad", "overlap": 3, "gold_rate": 1.5}, follow=True)
    assert "Gold rate: Ensure this value is less than or equal to 1.0." in response.content.decode()
    assert not Campaign.objects.filter(name="Bad").exists()


def test_a_campaign_without_optional_rules_gets_the_defaults(client, admin_user) -> None:
    client.force_login(admin_user)
    client.post("/manage/campaigns/new/", {"name": "Plain", "overlap": 2})
    campaign = Campaign.objects.get(name="Plain")
    assert (campaign.quota_per_annotator, campaign.gold_rate, campaign.selection) == (None, 0.0, "random")


def test_an_admin_creates_a_campaign_with_its_rating_page_settings(client, admin_user) -> None:
    client.force_login(admin_user)
    client.post(
        "/manage/campaigns/new/",
        {"name": "Rich", "overlap": 2, "guidelines": "Be *fair*.", "allow_both_bad": "on", "show_retrieved": "on"},
    )
    campaign = Campaign.objects.get(name="Rich")
    assert (campaign.guidelines, campaign.allow_both_bad, campaign.show_reference, campaign.show_retrieved) == (
        "Be *fair*.",
        True,
        False,
        True,
    )


def test_an_admin_edits_a_campaigns_settings_on_its_page(client, admin_user) -> None:
    campaign = Campaign.objects.create(name="Editable", overlap=3, show_retrieved=True)
    client.force_login(admin_user)
    page = client.get(f"/manage/campaigns/{campaign.pk}/").content.decode()
    assert "Edit campaign settings" in page and f'action="/manage/campaigns/{campaign.pk}/settings/"' in page
    assert 'value="Editable"' in page
    assert 'name="show_retrieved" aria-describedby="id_show_retrieved_helptext" id="id_show_retrieved" checked' in page

    response = client.post(
        f"/manage/campaigns/{campaign.pk}/settings/",
        {"name": "Editable", "overlap": 2, "quota_per_annotator": 30, "guidelines": "Rules", "show_reference": "on"},
    )

    assert response.status_code == 302 and response["Location"] == f"/manage/campaigns/{campaign.pk}/"
    campaign.refresh_from_db()
    assert (campaign.overlap, campaign.quota_per_annotator, campaign.guidelines) == (2, 30, "Rules")
    assert (campaign.show_reference, campaign.show_retrieved, campaign.allow_both_bad) == (True, False, False)


def test_a_campaign_edit_with_a_taken_name_or_bad_value_changes_nothing(client, admin_user) -> None:
    Campaign.objects.create(name="Taken")
    campaign = Campaign.objects.create(name="Mine", overlap=3)
    client.force_login(admin_user)
    url = f"/manage/campaigns/{campaign.pk}/settings/"
    taken = client.post(url, {"name": "Taken", "overlap": 2}, follow=True).content.decode()
    assert "Name: A campaign with this name already exists." in taken
    bad = client.post(url, {"name": "Mine", "overlap": 0}, follow=True).content.decode()
    assert "Overlap: Ensure this value is greater than or equal to 1." in bad
    campaign.refresh_from_db()
    assert (campaign.name, campaign.overlap) == ("Mine", 3)


def test_the_campaign_update_service_saves_only_what_changed_and_refuses_unknown_settings() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    campaign = Campaign.objects.create(name="Service", guidelines="old")
    with CaptureQueriesContext(connection) as queries:
        campaign_update(campaign=campaign, name="Service", guidelines="new", overlap=campaign.overlap)
    update = [query["sql"] for query in queries if query["sql"].startswith("UPDATE")]
    assert len(update) == 1 and '"guidelines"' in update[0] and '"overlap"' not in update[0]
    with pytest.raises(ServiceError, match="Unknown campaign settings: criteria"):
        campaign_update(campaign=campaign, criteria=[])
    campaign.refresh_from_db()
    assert campaign.guidelines == "new"
