"""Variants can be renamed, have their generation settings edited while nothing was generated with them, and be
archived: offered in no list a variant is chosen from, kept with their data, and brought back by unarchiving."""

import pytest
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.forms import GenerationForm, QASetForm, RetrainForm
from evaluator.models import Candidate, GenerationJob, JobStatus, ModelExport, ModelVariant
from evaluator.services.variants import (
    variant_archive,
    variant_generation_settings_update,
    variant_rename,
    variant_unarchive,
)
from tests import factories

pytestmark = pytest.mark.django_db

SETTINGS = {"temperature": 0.2, "top_p": 0.9, "max_new_tokens": 40, "samples_per_prompt": 2}


def test_an_admin_renames_a_variant_and_its_answers_follow(client, admin_user) -> None:
    campaign = factories.campaign()
    comparison = factories.comparison(campaign)
    variant = comparison.variant_a
    client.force_login(admin_user)

    response = client.post(f"/manage/variants/{variant.pk}/rename/", {"name": "  careful  "}, follow=True)

    assert "is now “careful”" in response.content.decode()
    variant.refresh_from_db()
    assert variant.name == "careful" and comparison.candidate_a.variant_id == variant.pk
    assert ModelVariant.objects.filter(name="careful").count() == 1


def test_a_rename_to_a_taken_name_is_refused_naming_it_and_changes_nothing(client, admin_user) -> None:
    first, second = factories.variant(name="first"), factories.variant(name="second")
    client.force_login(admin_user)

    page = client.post(f"/manage/variants/{second.pk}/rename/", {"name": "first"}, follow=True).content.decode()

    assert "A variant named “first” already exists." in page
    assert set(ModelVariant.objects.values_list("name", flat=True)) == {"first", "second"}
    with pytest.raises(ServiceError, match="A variant named 'first' already exists"):
        variant_rename(variant=second, name="first")
    assert first.pk != second.pk


def test_the_generation_settings_of_an_unused_variant_are_edited_on_its_page(client, admin_user) -> None:
    variant = factories.variant(generation_settings={"temperature": 0.7})
    client.force_login(admin_user)
    page = client.get(f"/manage/variants/{variant.pk}/").content.decode()
    assert f'action="/manage/variants/{variant.pk}/settings/"' in page

    client.post(f"/manage/variants/{variant.pk}/settings/", SETTINGS)

    variant.refresh_from_db()
    assert variant.generation_settings == SETTINGS


def test_bad_generation_settings_are_refused_naming_the_field(client, admin_user) -> None:
    variant = factories.variant(generation_settings={"temperature": 0.7})
    client.force_login(admin_user)

    page = client.post(
        f"/manage/variants/{variant.pk}/settings/", {**SETTINGS, "top_p": 3}, follow=True
    ).content.decode()

    assert "Top p: Ensure this value is less than or equal to 1.0." in page
    variant.refresh_from_db()
    assert variant.generation_settings == {"temperature": 0.7}


def test_the_settings_of_a_variant_with_answers_are_refused_with_the_reason(client, admin_user) -> None:
    comparison = factories.comparison(factories.campaign())
    variant = comparison.variant_a
    before = dict(variant.generation_settings)
    client.force_login(admin_user)

    page = client.get(f"/manage/variants/{variant.pk}/").content.decode()
    posted = client.post(f"/manage/variants/{variant.pk}/settings/", SETTINGS, follow=True).content.decode()

    reason = f"“{variant.name}” already has 1 generated answer: its generation settings are what they were made with"
    assert reason in page and 'id="settings-locked"' in page
    assert "/settings/" not in page.split('id="generation-settings"')[1].split("</section>")[0]
    assert reason in posted
    variant.refresh_from_db()
    assert variant.generation_settings == before


def test_the_settings_cannot_change_while_a_generation_job_with_the_variant_is_unfinished() -> None:
    variant = factories.variant(generation_settings={"temperature": 0.7})
    job = GenerationJob.objects.create(campaign=factories.campaign(), status=JobStatus.RUNNING)
    job.variants.add(variant)

    with pytest.raises(ServiceError, match="is queued or running: its settings cannot change now"):
        variant_generation_settings_update(variant=variant, generation_settings=SETTINGS)
    assert ModelVariant.objects.get(pk=variant.pk).generation_settings == {"temperature": 0.7}

    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, error="stopped", finished_at=timezone.now())
    variant_generation_settings_update(variant=variant, generation_settings=SETTINGS)
    assert ModelVariant.objects.get(pk=variant.pk).generation_settings == SETTINGS


def test_an_archived_variant_is_offered_in_no_form_and_keeps_its_data(client, admin_user) -> None:
    campaign = factories.campaign()
    comparison = factories.comparison(campaign)
    archived, kept = comparison.variant_a, comparison.variant_b
    archived.adapter_path = "/adapters/a"
    archived.save(update_fields=["adapter_path"])
    client.force_login(admin_user)

    client.post(f"/manage/variants/{archived.pk}/archive/", {"action": "archive"}, follow=True)

    archived.refresh_from_db()
    assert archived.archived_at is not None
    assert Candidate.objects.filter(variant=archived).count() == 1
    for field in (
        GenerationForm().fields["variants"],
        RetrainForm(campaign=campaign).fields["parent_variant"],
        QASetForm().fields["variant"],
    ):
        assert list(field.queryset) == [kept]  # type: ignore[attr-defined]
    campaign_page = client.get(f"/manage/campaigns/{campaign.pk}/").content.decode()
    retrain_page = client.get(f"/manage/campaigns/{campaign.pk}/retrain/").content.decode()
    manage_page = client.get("/manage/").content.decode()
    for page in (campaign_page, retrain_page, manage_page):
        assert archived.name not in page and kept.name in page
    refused = client.post(f"/manage/variants/{archived.pk}/export/", {"kind": "merged"}, follow=True)
    assert "is archived: unarchive it to export it." in refused.content.decode()
    assert not ModelExport.objects.exists()


def test_the_variants_page_lists_archived_variants_apart_with_unarchive(client, admin_user) -> None:
    parent = factories.variant(name="parent")
    gone = factories.variant(name="gone", parent=parent)
    variant_archive(variant=gone)
    client.force_login(admin_user)

    page = client.get("/manage/variants/").content.decode()

    tree, archived = page.split('id="archived"')
    assert "gone" not in tree and "parent" in tree
    assert "gone" in archived and 'value="unarchive"' in archived
    client.post(f"/manage/variants/{gone.pk}/archive/", {"action": "unarchive"})
    assert ModelVariant.objects.get(pk=gone.pk).archived_at is None
    assert 'id="archived"' not in client.get("/manage/variants/").content.decode()


def test_archiving_twice_or_unarchiving_a_variant_in_use_is_refused() -> None:
    variant = factories.variant(name="once")
    variant_archive(variant=variant)
    first = ModelVariant.objects.get(pk=variant.pk).archived_at
    with pytest.raises(ServiceError, match="“once” is already archived"):
        variant_archive(variant=variant)
    assert ModelVariant.objects.get(pk=variant.pk).archived_at == first
    variant_unarchive(variant=variant)
    with pytest.raises(ServiceError, match="“once” is not archived"):
        variant_unarchive(variant=variant)


def test_an_empty_archive_post_is_refused_and_archives_nothing(client, admin_user) -> None:
    variant = factories.variant(name="kept")
    client.force_login(admin_user)
    page = client.post(f"/manage/variants/{variant.pk}/archive/", {}, follow=True).content.decode()
    assert "Action: This field is required." in page
    assert ModelVariant.objects.get(pk=variant.pk).archived_at is None


def test_a_failed_generation_job_shows_its_whole_error(client, admin_user) -> None:
    campaign = factories.campaign()
    error = "OSError: could not load the model\n" + "".join(f"  frame {n}: reason {n}\n" for n in range(60))
    job = GenerationJob.objects.create(campaign=campaign, status=JobStatus.FAILED, error=error)
    job.variants.add(factories.variant())
    client.force_login(admin_user)

    html = client.get(f"/manage/campaigns/{campaign.pk}/generation/").content.decode()

    assert '<details class="job-error">' in html
    assert "frame 59: reason 59" in html and '<pre class="error-text">OSError: could not load the model' in html
