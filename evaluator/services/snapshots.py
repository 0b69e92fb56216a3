"""Statistics snapshots: a campaign's statistics under the page's filters, frozen by a worker so they can be cited.

A researcher asks for one on the statistics page (`statistics_snapshot_queue`); the `build_statistics_snapshot`
task on the default queue runs it (`statistics_snapshot_run`): computes it with the page's own selector and
stores the `export_stats` JSON plus a `snapshot` key; the task's one failure policy records why it could not.
The row holds the truth: a redelivered task builds a snapshot at most once more and never after it has ended.
"""

import hashlib

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.models import Campaign, StatisticsSnapshot
from evaluator.selectors.campaigns import VoteFilters, campaign_statistics_json
from evaluator.selectors.exports import statistics_json_bytes
from evaluator.services.jobs import job_finish, job_send_on_commit, job_start
from workers.tasks import build_statistics_snapshot as build_statistics_snapshot_task

# The statistics page's bootstrap rounds: a snapshot shows the page's intervals, not new ones.
SNAPSHOT_N_BOOT = 1000


def statistics_snapshot_queue(
    *,
    campaign: Campaign,
    filters: VoteFilters,
    prompt_level: bool = False,
    created_by: User | None = None,
) -> StatisticsSnapshot:
    """Queue a snapshot of the campaign's statistics under `filters`; a worker computes it after the commit."""

    if filters.since and filters.until and filters.since > filters.until:
        raise ServiceError("The start date is after the end date.")
    if filters.annotator_group and not Group.objects.filter(name=filters.annotator_group).exists():
        raise ServiceError(f"There is no annotator group named “{filters.annotator_group}”.")
    with transaction.atomic():
        snapshot = StatisticsSnapshot.objects.create(
            campaign=campaign,
            filters=filters.to_json(),
            prompt_level=prompt_level,
            n_boot=SNAPSHOT_N_BOOT,
            created_by=created_by,
        )
        job_send_on_commit(task=build_statistics_snapshot_task, job=snapshot)
    return snapshot


def statistics_snapshot_start(*, snapshot_id: int) -> StatisticsSnapshot | None:
    """Mark a queued (or redelivered running) snapshot running; None when it has ended or is gone."""
    if not job_start(model=StatisticsSnapshot, job_id=snapshot_id):
        return None
    return StatisticsSnapshot.objects.select_related("campaign", "created_by").get(pk=snapshot_id)


def statistics_snapshot_run(*, snapshot_id: int) -> bool:
    """Start the snapshot and build it; False when it had ended, or ended meanwhile (nothing stored then)."""
    snapshot = statistics_snapshot_start(snapshot_id=snapshot_id)
    return snapshot is not None and statistics_snapshot_build(snapshot=snapshot)


def statistics_snapshot_build(*, snapshot: StatisticsSnapshot) -> bool:
    """Compute the snapshot's statistics as the page does and store them; False when it ended meanwhile.

    ValueError when its stored filters cannot be read back.
    """
    filters = VoteFilters.from_json(snapshot.filters)
    report = campaign_statistics_json(
        campaign=snapshot.campaign, filters=filters, prompt_level=snapshot.prompt_level, n_boot=snapshot.n_boot
    )
    now = timezone.now()
    report["snapshot"] = {
        "id": snapshot.pk,
        "campaign": snapshot.campaign.name,
        "filters": filters.to_json(),
        "view": "prompt" if snapshot.prompt_level else "judgement",
        "n_boot": snapshot.n_boot,
        "created_by": snapshot.created_by.get_username() if snapshot.created_by else None,
        "created_at": snapshot.created_at.isoformat(),
        "computed_at": now.isoformat(),
    }
    payload = statistics_json_bytes(report)
    return job_finish(
        model=StatisticsSnapshot,
        job_id=snapshot.pk,
        payload=payload.decode(),
        sha256=hashlib.sha256(payload).hexdigest(),
    )
