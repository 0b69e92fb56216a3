"""Statistics snapshots: queued from the statistics page, built by the task with the page's own code, listed and
downloaded byte for byte. The task runs in-process here; tests/workers/test_statistics_snapshots.py runs it on a
real worker."""

import hashlib
import json
from datetime import date

import pytest
from django.urls import reverse

from evaluator.errors import ServiceError
from evaluator.models import JobStatus, StatisticsSnapshot
from evaluator.selectors.campaigns import VoteFilters, campaign_statistics_json
from evaluator.services.snapshots import statistics_snapshot_queue, statistics_snapshot_start
from tests import factories
from workers.tasks import build_statistics_snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(annotator, second_annotator):
    """Base against tuned: tuned wins three of four comparisons for both people; a script says the opposite."""
    campaign = factories.campaign(name="Snap shot", overlap=3)
    base, tuned = factories.variant(name="base"), factories.variant(name="tuned")
    oracle = factories.user("oracle-0", "annotator")
    for index in range(4):
        comparison = factories.comparison(campaign, variants=(base, tuned))
        for person in (annotator, second_annotator):
            factories.judgement(comparison, person, "b" if index else "a")
        factories.judgement(comparison, oracle, "a", simulated=True)
    return campaign


def overall_wins(report: dict) -> tuple[int, int]:
    row = next(row for row in report["pairs"] if row["criterion"] == "overall")
    return row["wins_a"], row["wins_b"]


def build(snapshot: StatisticsSnapshot) -> StatisticsSnapshot:
    # The task, run in-process through Celery's tracer: its failure policy (JobTask.on_failure) included.
    build_statistics_snapshot.apply((snapshot.pk,))
    snapshot.refresh_from_db()
    return snapshot


# The service and the task ----------------------------------------------------------------------------------------


def test_a_queued_snapshot_is_built_with_the_pages_statistics_and_a_snapshot_key(
    campaign, researcher, django_capture_on_commit_callbacks
) -> None:
    filters = VoteFilters(include_simulated=True, since=date(2000, 1, 1))
    with django_capture_on_commit_callbacks() as enqueued:
        snapshot = statistics_snapshot_queue(campaign=campaign, filters=filters, created_by=researcher)
    assert len(enqueued) == 1  # the task goes out with the commit, not before
    assert (snapshot.status, snapshot.payload, snapshot.n_boot) == (JobStatus.QUEUED, "", 1000)
    assert snapshot.filters == {
        "annotator_group": None,
        "since": "2000-01-01",
        "until": None,
        "exclude_flagged": False,
        "exclude_gold": True,
        "include_simulated": True,
        "adjudicated": False,
        "category": None,
        "exclude_outliers": False,
        "guideline_version": None,
    }

    snapshot = build(snapshot)

    assert snapshot.status == JobStatus.SUCCEEDED and snapshot.finished_at is not None
    assert snapshot.sha256 == hashlib.sha256(snapshot.payload.encode()).hexdigest()
    frozen = json.loads(snapshot.payload)
    meta = frozen.pop("snapshot")
    page = campaign_statistics_json(campaign=campaign, filters=filters, n_boot=1000)
    assert frozen == json.loads(json.dumps(page))  # the page's numbers, bootstrap intervals included
    assert overall_wins(frozen) == (6, 6)  # the script's four votes for base count: they were asked for
    assert meta["id"] == snapshot.pk and meta["campaign"] == "Snap shot" and meta["created_by"] == "rex"
    assert meta["view"] == "judgement" and meta["filters"] == snapshot.filters and meta["n_boot"] == 1000


def test_a_prompt_level_snapshot_without_simulated_judgements_counts_the_peoples_majorities(campaign) -> None:
    snapshot = build(statistics_snapshot_queue(campaign=campaign, filters=VoteFilters(), prompt_level=True))
    frozen = json.loads(snapshot.payload)
    assert overall_wins(frozen) == (1, 3)
    assert frozen["snapshot"]["view"] == "prompt"


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (VoteFilters(since=date(2030, 1, 2), until=date(2030, 1, 1)), "The start date is after the end date."),
        (VoteFilters(annotator_group="nobody"), "There is no annotator group named “nobody”."),
    ],
)
def test_impossible_filters_are_refused_and_nothing_is_queued(
    campaign, filters, message, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as enqueued, pytest.raises(ServiceError, match=message):
        statistics_snapshot_queue(campaign=campaign, filters=filters)
    assert not StatisticsSnapshot.objects.exists() and not enqueued


def test_stored_filters_that_cannot_be_read_fail_the_snapshot_with_the_reason(campaign) -> None:
    snapshot = StatisticsSnapshot.objects.create(campaign=campaign, filters={"since": "yesterday"})
    snapshot = build(snapshot)
    assert snapshot.status == JobStatus.FAILED and snapshot.finished_at is not None
    assert snapshot.error.startswith("ValueError: Invalid isoformat string: 'yesterday'")
    assert snapshot.payload == ""
    unknown = build(StatisticsSnapshot.objects.create(campaign=campaign, filters={"min_votes": 3}))
    assert unknown.error == "ValueError: unknown filter 'min_votes'"


def test_a_redelivered_task_leaves_an_ended_snapshot_as_it_is(campaign) -> None:
    snapshot = build(statistics_snapshot_queue(campaign=campaign, filters=VoteFilters()))
    payload, finished_at = snapshot.payload, snapshot.finished_at
    assert statistics_snapshot_start(snapshot_id=snapshot.pk) is None
    assert build(snapshot).payload == payload and snapshot.finished_at == finished_at


def test_filters_survive_the_round_trip_through_json_and_bad_ones_are_named() -> None:
    filters = VoteFilters(
        annotator_group="annotator", since=date(2026, 1, 1), until=date(2026, 2, 1), exclude_gold=False
    )
    assert VoteFilters.from_json(json.loads(json.dumps(filters.to_json()))) == filters
    for data, message in [
        ([], "filters must be an object"),
        ({"exclude_flagged": "yes"}, "exclude_flagged must be true or false"),
        ({"since": 20260101}, "since must be a YYYY-MM-DD date or null"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "since is after until"),
    ]:
        with pytest.raises(ValueError, match=message):
            VoteFilters.from_json(data)


# The pages ---------------------------------------------------------------------------------------------------------


def test_a_researcher_saves_a_snapshot_of_the_filters_the_page_shows(
    client, researcher, campaign, django_capture_on_commit_callbacks
) -> None:
    client.force_login(researcher)
    page = client.get(f"/stats/{campaign.pk}/", {"include_simulated": "on", "view": "prompt"}).content.decode()
    assert "Save a snapshot" in page
    assert '<input type="hidden" name="include_simulated" value="on">' in page

    with django_capture_on_commit_callbacks() as enqueued:
        response = client.post(
            reverse("statistics_snapshot_create", args=[campaign.pk]), {"include_simulated": "on", "view": "prompt"}
        )

    assert response.status_code == 302
    assert response["Location"] == f"/stats/{campaign.pk}/?view=prompt&include_simulated=on"
    snapshot = StatisticsSnapshot.objects.get()
    assert (snapshot.campaign, snapshot.created_by, snapshot.prompt_level) == (campaign, researcher, True)
    assert snapshot.filters["include_simulated"] is True and len(enqueued) == 1
    listed = client.get(response["Location"])
    html = listed.content.decode()
    assert f"Snapshot #{snapshot.pk} queued" in html and "prompt-level majority · simulated judgements included" in html
    assert f'hx-get="{reverse("statistics_snapshots_live", args=[campaign.pk])}"' in html  # polled until built


def test_a_built_snapshot_is_listed_with_its_hash_and_downloads_byte_for_byte(client, admin_user, campaign) -> None:
    snapshot = build(statistics_snapshot_queue(campaign=campaign, filters=VoteFilters()))
    client.force_login(admin_user)
    download = reverse("statistics_snapshot_download", args=[campaign.pk, snapshot.pk])
    html = client.get(f"/stats/{campaign.pk}/").content.decode()
    assert download in html and snapshot.sha256 in html
    assert "hx-get" not in html  # nothing left to poll for

    response = client.get(download)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="snap-shot-statistics-snapshot-{snapshot.pk}.json"'
    assert hashlib.sha256(response.content).hexdigest() == snapshot.sha256

    live = client.get(reverse("statistics_snapshots_live", args=[campaign.pk]))
    assert live.status_code == 286 and download in live.content.decode()


def test_a_snapshot_not_built_yet_or_of_another_campaign_is_not_downloaded(client, researcher, campaign) -> None:
    snapshot = statistics_snapshot_queue(campaign=campaign, filters=VoteFilters())
    client.force_login(researcher)
    waiting = client.get(reverse("statistics_snapshot_download", args=[campaign.pk, snapshot.pk]))
    assert waiting.status_code == 409
    assert waiting.content.decode() == f"Snapshot #{snapshot.pk} is queued: it has no JSON to download."
    other = factories.campaign()
    assert client.get(reverse("statistics_snapshot_download", args=[other.pk, snapshot.pk])).status_code == 404
    assert client.get(reverse("statistics_snapshots_live", args=[campaign.pk])).status_code == 200  # keep polling


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"since": "yesterday"}, "No snapshot saved. Since: Enter a valid date."),
        (
            {"since": "2030-01-02", "until": "2030-01-01"},
            "No snapshot saved. Form: The start date is after the end date.",
        ),
        ({"annotator_group": "nobody"}, "No snapshot saved. Annotator group: Select a valid choice."),
    ],
)
def test_invalid_filters_save_no_snapshot_and_say_why(
    client, researcher, campaign, data, message, django_capture_on_commit_callbacks
) -> None:
    client.force_login(researcher)
    with django_capture_on_commit_callbacks() as enqueued:
        response = client.post(reverse("statistics_snapshot_create", args=[campaign.pk]), data, follow=True)
    assert message in response.content.decode()
    assert not StatisticsSnapshot.objects.exists() and not enqueued


def test_a_forged_campaign_id_is_a_404_that_writes_nothing(client, researcher) -> None:
    client.force_login(researcher)
    assert client.post(reverse("statistics_snapshot_create", args=[999_999])).status_code == 404
    assert client.get(reverse("statistics_snapshot_download", args=[999_999, 1])).status_code == 404
    assert not StatisticsSnapshot.objects.exists()


def test_snapshots_are_for_researchers_and_admins_and_saved_by_post_only(
    client, annotator, outsider, researcher, campaign
) -> None:
    create = reverse("statistics_snapshot_create", args=[campaign.pk])
    assert client.post(create).status_code == 302  # anonymous: to the login page
    for user in (annotator, outsider):
        client.force_login(user)
        assert client.post(create).status_code == 403
        assert client.get(reverse("statistics_snapshots_live", args=[campaign.pk])).status_code == 403
    client.force_login(researcher)
    assert client.get(create).status_code == 405
    assert not StatisticsSnapshot.objects.exists()
