"""Versioned guidelines: every edit adds a version, judgements record theirs, statistics filter by it."""

import importlib

import pytest
from django.apps import apps
from django.db import connection
from django.urls import reverse

from evaluator.models import Campaign, GuidelineVersion, Judgement
from evaluator.selectors.campaigns import VoteFilters, votes_frame
from evaluator.services.campaigns import campaign_create, campaign_update
from evaluator.services.guidelines import guideline_version_create
from evaluator.services.rating import assignment_next, judgement_submit
from tests import factories
from tests.evaluator.test_assignment_concurrency import run_in_threads


def rate_one(campaign: Campaign, annotator) -> Judgement:
    assignment = assignment_next(annotator=annotator)
    assert assignment is not None
    choices = {slug: "left" for slug in campaign.criterion_slugs}
    return judgement_submit(token=str(assignment.token), annotator=annotator, choices=choices)


@pytest.mark.django_db
def test_guidelines_given_at_creation_are_version_one_by_their_author(admin_user) -> None:
    campaign = campaign_create(name="Study", guidelines="Prefer short answers.", author=admin_user)

    version = GuidelineVersion.objects.get()
    assert (version.campaign, version.number, version.text, version.author) == (
        campaign,
        1,
        "Prefer short answers.",
        admin_user,
    )
    assert Campaign.objects.get().guidelines_version == version
    assert not GuidelineVersion.objects.filter(campaign=campaign_create(name="Bare")).exists()


@pytest.mark.django_db
def test_each_edit_of_the_guidelines_adds_a_version_and_other_edits_add_none(admin_user) -> None:
    campaign = campaign_create(name="Study", guidelines="v1 text")

    campaign_update(campaign=campaign, guidelines="v2 text", author=admin_user)
    campaign_update(campaign=campaign, guidelines="v2 text", priority=3, author=admin_user)
    campaign_update(campaign=campaign, guidelines="", author=admin_user)

    versions = list(GuidelineVersion.objects.filter(campaign=campaign).order_by("number"))
    assert [(version.number, version.text) for version in versions] == [(1, "v1 text"), (2, "v2 text"), (3, "")]
    assert versions[1].author == admin_user
    campaign.refresh_from_db()
    assert (campaign.guidelines, campaign.guidelines_version, campaign.priority) == ("", versions[2], 3)


@pytest.mark.django_db
def test_a_judgement_records_the_version_its_campaign_had_when_it_was_submitted(annotator) -> None:
    campaign = factories.campaign(overlap=1)
    for i in range(2):
        factories.comparison(campaign, texts=(f"left {i}", f"right {i}"))
    first = guideline_version_create(campaign=campaign, text="Be strict.")
    before = rate_one(campaign, annotator)
    second = guideline_version_create(campaign=campaign, text="Be stricter.")

    after = rate_one(campaign, annotator)

    assert Judgement.objects.get(pk=before.pk).guideline_version == first
    assert Judgement.objects.get(pk=after.pk).guideline_version == second


@pytest.mark.django_db
def test_the_rating_page_shows_the_current_version(client, annotator) -> None:
    campaign = factories.campaign()
    factories.comparison(campaign)
    guideline_version_create(campaign=campaign, text="Read **both** answers.")
    guideline_version_create(campaign=campaign, text="Read **both** answers fully.")
    client.force_login(annotator)

    page = client.get(reverse("rate")).content.decode()

    assert "· version 2</span>" in page and "<strong>both</strong> answers fully" in page


@pytest.mark.django_db
def test_the_statistics_count_only_the_chosen_version(client, researcher, annotator, second_annotator) -> None:
    campaign = factories.campaign(overlap=2)
    factories.comparison(campaign)
    guideline_version_create(campaign=campaign, text="First.")
    rate_one(campaign, annotator)
    guideline_version_create(campaign=campaign, text="Second.")
    rate_one(campaign, second_annotator)
    factories.judgement(factories.comparison(campaign), annotator)  # older than versions: none recorded

    def counted(version: int | None) -> int:
        frame = votes_frame(campaign=campaign, filters=VoteFilters(guideline_version=version))
        return frame["judgement_id"].nunique()

    assert {version: counted(version) for version in (None, 1, 2, 3)} == {None: 3, 1: 1, 2: 1, 3: 0}
    client.force_login(researcher)
    page = client.get(reverse("stats_campaign", args=[campaign.pk]), {"guideline_version": 2}).content.decode()
    assert "1 counted under the filters below" in page
    refused = client.get(reverse("stats_campaign", args=[campaign.pk]), {"guideline_version": 0})
    assert refused.status_code == 400


def test_a_snapshots_version_filter_round_trips_and_a_bad_one_is_named() -> None:
    filters = VoteFilters(guideline_version=2)

    assert VoteFilters.from_json(filters.to_json()) == filters
    for bad in (0, "2", True, 1.5):
        with pytest.raises(ValueError, match="guideline_version must be a version number"):
            VoteFilters.from_json({"guideline_version": bad})


@pytest.mark.django_db
def test_the_campaign_page_lists_the_version_history(client, admin_user) -> None:
    campaign = campaign_create(name="Study", guidelines="Old rule.", author=admin_user)
    campaign_update(campaign=campaign, guidelines="New rule.", author=admin_user)
    client.force_login(admin_user)

    page = client.get(reverse("campaign_detail", args=[campaign.pk])).content.decode()

    assert 'id="guideline-versions"' in page
    assert page.index("New rule.") < page.index("Old rule.")  # newest first
    assert '2 <span class="status succeeded">current</span>' in page
    assert f"/stats/{campaign.pk}/?guideline_version=1" in page


@pytest.mark.django_db
def test_saving_the_settings_form_with_new_guidelines_adds_a_version_by_the_admin(client, admin_user) -> None:
    campaign = campaign_create(name="Study", guidelines="Old rule.")
    client.force_login(admin_user)

    client.post(
        reverse("campaign_update", args=[campaign.pk]), {"name": "Study", "overlap": 3, "guidelines": "New rule."}
    )

    latest = GuidelineVersion.objects.get(number=2)
    assert (latest.text, latest.author) == ("New rule.", admin_user)


@pytest.mark.django_db
def test_the_migration_makes_existing_guidelines_version_one() -> None:
    with_text = factories.campaign(guidelines="Legacy rules.")
    without = factories.campaign()
    migration = importlib.import_module("evaluator.migrations.0019_qualification_guidelines")

    migration.guidelines_version_one(apps, connection.schema_editor())

    version = GuidelineVersion.objects.get()
    assert (version.campaign, version.number, version.text, version.author) == (with_text, 1, "Legacy rules.", None)
    assert Campaign.objects.get(pk=with_text.pk).guidelines_version == version
    assert Campaign.objects.get(pk=without.pk).guidelines_version is None


@pytest.mark.django_db
def test_a_campaign_with_versions_and_judgements_can_be_deleted(annotator) -> None:
    campaign = factories.campaign()
    factories.comparison(campaign)
    guideline_version_create(campaign=campaign, text="Rules.")
    rate_one(campaign, annotator)

    campaign.delete()

    assert not GuidelineVersion.objects.exists() and not Judgement.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL (SQLite serializes)")
@pytest.mark.django_db(transaction=True)
def test_two_edits_at_once_get_consecutive_numbers() -> None:
    campaign = factories.campaign()

    made = run_in_threads(
        [lambda text=text: guideline_version_create(campaign=campaign, text=text) for text in ("one", "two")]
    )

    assert sorted(version.number for version in made) == [1, 2]
    campaign.refresh_from_db()
    assert campaign.guidelines_version == max(made, key=lambda version: version.number)
