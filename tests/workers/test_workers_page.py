"""The workers page against a real Celery worker process and the real Redis: the worker answers the
`prefloop_worker` remote-control command with its host, queues, pool and device; running jobs are joined to it by
their holder, jobs held by a process that answers nowhere are listed as held by a silent worker, and a broker no
worker listens on gives the empty state (and shows the worker seen before as silent)."""

import re
import socket
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from celery import Celery
from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from evaluator.models import GenerationJob, JobStatus, TrainingJob
from evaluator.selectors.workers import SEEN_KEY, START_COMMAND, Worker, workers_overview
from tests import factories
from workers.control import visible_gpus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def quiet_app(broker_url: str, monkeypatch) -> Celery:
    """The project's Celery app as configured, on another broker (Celery reads CELERY_BROKER_URL from the
    environment before any setting)."""
    monkeypatch.setenv("CELERY_BROKER_URL", broker_url)
    quiet = Celery("prefloop", set_as_current=False)  # later tests keep publishing through workers.celery.app
    quiet.config_from_object("django.conf:settings", namespace="CELERY")
    return quiet


def other_redis_db() -> str:
    """The broker's Redis server, another database number: no worker listens there."""
    parts = urlsplit(settings.CELERY_BROKER_URL)
    own = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{15 if own != 15 else 14}"))


def the_test_worker(celery_worker_process) -> Worker:
    overview = workers_overview()
    assert overview.error == ""
    mine = [worker for worker in overview.workers if worker.pid == celery_worker_process.pid]
    assert len(mine) == 1, [worker.name for worker in overview.workers]
    return mine[0]


def test_the_worker_answers_with_its_host_queues_pool_and_device(celery_worker_process) -> None:
    worker = the_test_worker(celery_worker_process)

    assert worker.name.startswith("tests-") and worker.answered
    assert worker.host == socket.gethostname()
    assert worker.queues == ["default", "gpu"]
    # The settings' one task at a time: one pool process, a child of the worker.
    assert len(worker.processes) == 1 and worker.processes[0] != worker.pid
    assert worker.uptime_seconds is not None and worker.uptime_seconds >= 0
    assert [gpu.name for gpu in worker.gpus] == [gpu["name"] for gpu in visible_gpus()]
    assert worker.device == (", ".join(gpu.name for gpu in worker.gpus) or "CPU")
    assert worker.tasks == [] and worker.jobs == []


def test_a_running_job_shows_on_its_worker_and_one_held_elsewhere_as_held_by_a_silent_worker(
    client, celery_worker_process, admin_user
) -> None:
    worker = the_test_worker(celery_worker_process)
    campaign = factories.campaign(name="Heritage")
    variant = factories.variant(name="tiny")
    now = timezone.now()
    held = TrainingJob.objects.create(
        campaign=campaign,
        parent_variant=variant,
        status=JobStatus.RUNNING,
        worker=f"{worker.host}:{worker.processes[0]}",
        heartbeat_at=now,
        started_at=now,
        attempts=1,
    )
    orphan = GenerationJob.objects.create(
        campaign=campaign,
        status=JobStatus.RUNNING,
        worker="vanished-host:4242",
        heartbeat_at=now - timedelta(minutes=20),
        started_at=now - timedelta(hours=1),
        attempts=1,
    )

    overview = workers_overview()

    mine = next(found for found in overview.workers if found.name == worker.name)
    assert [(job.kind, job.pk, job.url, job.stale) for job in mine.jobs] == [
        ("training job", held.pk, reverse("training_job_detail", args=[held.pk]), False)
    ]
    assert [(job.pk, job.holder, job.url, job.stale) for job in overview.orphaned_jobs] == [
        (orphan.pk, "vanished-host:4242", reverse("campaign_detail", args=[campaign.pk]), True)
    ]

    client.force_login(admin_user)
    page = client.get("/manage/workers/").content.decode()
    assert worker.name in page and "gpu" in page
    assert f'href="/manage/jobs/{held.pk}/"' in page
    assert "Held by a silent worker" in page and "vanished-host:4242" in page
    assert re.search(r"20 min \d+ s ago — silent", page), page
    partial = client.get("/manage/workers/", headers={"HX-Request": "true"})
    assert partial.status_code == 200 and b"<html" not in partial.content and worker.name.encode() in partial.content

    # The job page names the holder and its heartbeat, linking to the workers page.
    job_page = client.get(f"/manage/jobs/{held.pk}/").content.decode()
    assert f'held by <a class="mono" href="/manage/workers/" title="All workers">{held.worker}</a>' in job_page
    assert re.search(r"last heartbeat \d+ s ago", job_page)


def test_with_no_worker_listening_the_page_says_so_and_the_worker_seen_before_is_silent(
    client, celery_worker_process, admin_user, monkeypatch
) -> None:
    cache.delete(SEEN_KEY)
    worker = the_test_worker(celery_worker_process)  # seen answering: remembered
    # Celery publishes a broadcast through its app's own producer pool: another app, not another connection.
    monkeypatch.setattr("evaluator.selectors.workers.celery_app", quiet_app(other_redis_db(), monkeypatch))

    overview = workers_overview()

    assert overview.error == "" and overview.workers == []
    assert [(silent.name, silent.answered, silent.queues) for silent in overview.silent_workers] == [
        (worker.name, False, ["default", "gpu"])
    ]
    client.force_login(admin_user)
    page = client.get("/manage/workers/").content.decode()
    assert "No worker answered within 1 s" in page and START_COMMAND in page
    assert "silent" in page and worker.name in page
