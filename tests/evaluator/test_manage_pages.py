import pytest

from evaluator.models import Campaign

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
