"""The workers page without a worker: a broker that cannot be reached is said so, a worker's reply is joined to the
jobs its processes hold, and a job page names its holder and says when it has gone silent. The page against a
real worker process is in tests/workers/test_workers_page.py."""

import re
from datetime import timedelta

import pytest
from celery import Celery
from django.utils import timezone

from evaluator.models import JobStatus, TrainingJob
from evaluator.selectors.workers import running_jobs, worker_from_reply, workers_overview
from evaluator.templatetags.workers import duration
from tests import factories

pytestmark = pytest.mark.django_db


def running_training_job(*, holder: str, heartbeat_age: timedelta) -> TrainingJob:
    now = timezone.now()
    return TrainingJob.objects.create(
        campaign=factories.campaign(),
        parent_variant=factories.variant(),
        status=JobStatus.RUNNING,
        worker=holder,
        heartbeat_at=now - heartbeat_age,
        started_at=now - heartbeat_age,
        attempts=1,
    )


def test_an_unreachable_broker_is_named_on_the_page_and_its_jobs_are_held_by_silent_workers(
    client, admin_user, monkeypatch
) -> None:
    job = running_training_job(holder="gpu-box:77", heartbeat_age=timedelta(seconds=5))
    # Celery reads CELERY_BROKER_URL from the environment before any setting; nothing listens on port 1.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    # Not made the current app: the shared tasks of later tests must keep publishing through workers.celery.app.
    unreachable = Celery("prefloop", set_as_current=False)
    unreachable.config_from_object("django.conf:settings", namespace="CELERY")
    monkeypatch.setattr("evaluator.selectors.workers.celery_app", unreachable)

    overview = workers_overview()

    assert overview.workers == [] and "Error" in overview.error
    assert [(held.pk, held.holder, held.stale) for held in overview.orphaned_jobs] == [(job.pk, "gpu-box:77", False)]
    client.force_login(admin_user)
    page = client.get("/manage/workers/").content.decode()
    assert "The workers could not be asked" in page and "No worker answered" not in page
    assert "gpu-box:77" in page and f'href="/manage/jobs/{job.pk}/"' in page


def test_a_reply_is_joined_to_the_running_task_and_the_job_its_process_holds() -> None:
    job = running_training_job(holder="gpu-box:4711", heartbeat_age=timedelta(seconds=3))
    by_holder = {held.holder: held for held in running_jobs(now=timezone.now())}
    reply = {
        "host": "gpu-box",
        "pid": 4700,
        "processes": [4711],
        "uptime": 3725,
        "queues": ["gpu"],
        "gpus": [{"index": "0", "name": "NVIDIA H200", "memory_used_mib": 71000, "memory_total_mib": 143771}],
        "running": [
            {
                "id": "c0ffee",
                "name": "workers.tasks.run_training_job",
                "worker_pid": 4711,
                "time_start": timezone.now().timestamp() - 60,
                "job_model": "evaluator.TrainingJob",
                "job_id": job.pk,
            }
        ],
    }

    worker = worker_from_reply("gpu0@gpu-box", reply, by_holder)

    assert worker.device == "NVIDIA H200" and worker.gpus[0].percent_used == 49
    assert worker.holders == {"gpu-box:4700", "gpu-box:4711"}
    assert [(task.name, task.job and task.job.pk) for task in worker.tasks] == [
        ("workers.tasks.run_training_job", job.pk)
    ]
    assert [held.pk for held in worker.jobs] == [job.pk] and worker.jobs_between_tasks == []
    assert (
        duration(reply["uptime"]) == "1 h 2 min" and duration(75) == "1 min 15 s" and duration(3 * 86400) == "3 d 0 h"
    )


def test_a_reply_from_a_worker_without_the_command_is_shown_with_its_error() -> None:
    worker = worker_from_reply("old@box", {"error": "No such command: prefloop_worker"}, {})

    assert worker.host == "box" and worker.device == "CPU" and "No such command" in worker.problem


def test_the_job_page_says_when_its_holder_has_gone_silent(client, admin_user, settings) -> None:
    settings.PREFLOOP_JOB_STALE_SECONDS = 60
    job = running_training_job(holder="gpu-box:4711", heartbeat_age=timedelta(minutes=5))
    client.force_login(admin_user)

    page = client.get(f"/manage/jobs/{job.pk}/").content.decode()

    assert 'held by <a class="mono" href="/manage/workers/" title="All workers">gpu-box:4711</a>' in page
    assert re.search(r"silent: no heartbeat for 5 min \d+ s", page)
