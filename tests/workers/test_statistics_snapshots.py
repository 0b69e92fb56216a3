"""Statistics snapshots on a real Celery worker process and Redis: queued on commit to the default queue, built
with the statistics page's numbers, and failed with the reason when the stored filters cannot be read."""

import json

import pytest

from evaluator.models import JobStatus, StatisticsSnapshot
from evaluator.selectors.campaigns import VoteFilters, campaign_statistics_json
from evaluator.services.snapshots import statistics_snapshot_queue
from tests import factories
from tests.conftest import wait_until
from workers.celery import app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def ended(snapshot_id: int) -> StatisticsSnapshot:
    wait_until(
        lambda: StatisticsSnapshot.objects.filter(
            pk=snapshot_id, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]
        ).exists(),
        "the snapshot",
    )
    return StatisticsSnapshot.objects.get(pk=snapshot_id)


def test_the_snapshot_task_goes_to_the_default_queue() -> None:
    route = app.amqp.router.route({}, "workers.tasks.build_statistics_snapshot")
    assert route["queue"].name == "default"


def test_a_worker_builds_a_queued_snapshot_with_the_pages_numbers(
    celery_worker_process, researcher, annotator, second_annotator
) -> None:
    campaign = factories.campaign(name="Frozen", overlap=2)
    base, tuned = factories.variant(name="base"), factories.variant(name="tuned")
    for index in range(5):
        comparison = factories.comparison(campaign, variants=(base, tuned))
        factories.judgement(comparison, annotator, "b" if index else "a")
        factories.judgement(comparison, second_annotator, "b")

    snapshot = statistics_snapshot_queue(
        campaign=campaign, filters=VoteFilters(), prompt_level=True, created_by=researcher
    )
    snapshot = ended(snapshot.pk)

    assert snapshot.status == JobStatus.SUCCEEDED, snapshot.error
    frozen = json.loads(snapshot.payload)
    assert frozen.pop("snapshot")["created_by"] == "rex"
    page = campaign_statistics_json(campaign=campaign, filters=VoteFilters(), prompt_level=True)
    assert frozen == json.loads(json.dumps(page))


def test_a_worker_fails_a_snapshot_whose_filters_cannot_be_read_and_says_why(celery_worker_process) -> None:
    from workers.tasks import build_statistics_snapshot

    snapshot = StatisticsSnapshot.objects.create(campaign=factories.campaign(), filters={"min_votes": 3})
    build_statistics_snapshot.delay(snapshot.pk)
    snapshot = ended(snapshot.pk)
    assert (snapshot.status, snapshot.error, snapshot.payload) == (
        JobStatus.FAILED,
        "ValueError: unknown filter 'min_votes'",
        "",
    )
