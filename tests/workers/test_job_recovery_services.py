"""The recovery design every job kind shares (evaluator/services/jobs.py), driven in this process against the real
PostgreSQL and Redis: one holder whose claim every write is conditional on, a copy that waits on a live holder, the
outbox and the reaper, writes that survive a killed database connection. tests/faults/ runs the same faults with
real worker processes."""

import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from evaluator.models import GenerationJob, JobStatus
from evaluator.services.jobs import (
    JobHeld,
    job_claim,
    job_fail,
    job_finish,
    job_heartbeat,
    job_progress,
    job_send,
    job_standby,
    job_start,
    jobs_reap,
    worker_identity,
)
from tests import factories
from tests.faults.conftest import free_port, publishing_to
from workers.tasks import generate_candidates

pytestmark = pytest.mark.django_db


def generation_job(**fields) -> GenerationJob:
    campaign = factories.campaign()
    factories.prompt(campaign)
    job = GenerationJob.objects.create(campaign=campaign, total=2, **fields)
    job.variants.set([factories.variant(), factories.variant()])
    return job


def dead_holder() -> str:
    """A process of this host that has exited: a holder that is gone."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return f"{worker_identity().rpartition(':')[0]}:{process.pid}"


def test_a_delivery_that_finds_a_live_holder_is_told_to_wait_and_one_that_finds_it_gone_takes_over() -> None:
    job = generation_job()
    assert job_start(model=GenerationJob, job_id=job.pk)
    with pytest.raises(JobHeld, match="is held by"):
        job_start(model=GenerationJob, job_id=job.pk)

    GenerationJob.objects.filter(pk=job.pk).update(worker=dead_holder())
    assert job_start(model=GenerationJob, job_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.attempts == 2 and job.worker == worker_identity()
    assert job.claim == job_claim(model=GenerationJob, job_id=job.pk)


def test_a_job_lost_with_its_worker_every_time_fails_saying_so_instead_of_starting_again() -> None:
    job = generation_job(status=JobStatus.RUNNING, attempts=3, max_attempts=3, worker=dead_holder())
    assert not job_start(model=GenerationJob, job_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error == "Gave up after 3 attempts: the worker was lost each time."


def test_a_run_that_lost_its_job_to_another_can_neither_count_nor_finish_nor_fail_it() -> None:
    job = generation_job()
    job_start(model=GenerationJob, job_id=job.pk)
    assert job_progress(model=GenerationJob, job_id=job.pk, done=1)
    # The reaper took the job for lost and another run claimed it.
    GenerationJob.objects.filter(pk=job.pk).update(claim=uuid.uuid4(), comparisons_created=8000)

    assert not job_progress(model=GenerationJob, job_id=job.pk, done=2)
    assert not job_finish(model=GenerationJob, job_id=job.pk, comparisons_created=0)
    assert not job_fail(model=GenerationJob, job_id=job.pk, error="this run's own trouble")
    job.refresh_from_db()
    assert (job.status, job.done, job.comparisons_created, job.error) == (JobStatus.RUNNING, 1, 8000, "")


def test_a_task_that_fails_before_it_holds_its_job_fails_it_only_while_it_is_queued() -> None:
    running = generation_job(status=JobStatus.RUNNING, claim=uuid.uuid4(), worker="elsewhere:1")
    queued = generation_job()
    assert not job_fail(model=GenerationJob, job_id=running.pk, error="no GPU here")
    assert job_fail(model=GenerationJob, job_id=queued.pk, error="its inputs never got ready")
    assert GenerationJob.objects.get(pk=running.pk).status == JobStatus.RUNNING
    assert GenerationJob.objects.get(pk=queued.pk).status == JobStatus.FAILED


def test_one_copy_per_held_job_waits_however_many_are_delivered() -> None:
    job = generation_job(status=JobStatus.RUNNING, sent_at=timezone.now() - timedelta(hours=1))
    now = timezone.now()
    assert job_standby(model=GenerationJob, job_id=job.pk, countdown=30, now=now)
    # Delivered again 5 s later: the first copy is due in 25 s, so this one leaves.
    assert not job_standby(model=GenerationJob, job_id=job.pk, countdown=30, now=now + timedelta(seconds=5))
    # The waiting copy, back when due, waits again.
    assert job_standby(model=GenerationJob, job_id=job.pk, countdown=30, now=now + timedelta(seconds=30))
    assert GenerationJob.objects.get(pk=job.pk).sent_at == now + timedelta(seconds=60)


def test_a_held_copy_run_by_celery_sends_itself_again_instead_of_running_the_job_or_vanishing() -> None:
    job = generation_job()
    job_start(model=GenerationJob, job_id=job.pk)
    done_before = GenerationJob.objects.get(pk=job.pk).done

    generate_candidates.apply((job.pk,)).get()  # this process, alive, holds the job

    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.attempts == 1 and job.done == done_before
    assert job.sent_at is not None and job.sent_at > timezone.now(), "a copy is due to look again"


def test_the_reaper_queues_again_the_jobs_of_lost_workers_and_sends_queued_jobs_never_sent_or_lost(settings) -> None:
    settings.PREFLOOP_JOB_STALE_SECONDS = 30
    settings.PREFLOOP_JOB_RESEND_SECONDS = 600
    now = timezone.now()
    old = now - timedelta(minutes=5)
    lost = generation_job(status=JobStatus.RUNNING, worker="gone-host:1", heartbeat_at=old, attempts=1)
    beating = generation_job(status=JobStatus.RUNNING, worker="other-host:1", heartbeat_at=now, attempts=1)
    never_sent = generation_job(queued_at=old)
    just_queued = generation_job(queued_at=now)
    message_lost = generation_job(queued_at=old, sent_at=now - timedelta(hours=1))
    waiting = generation_job(queued_at=old, sent_at=now - timedelta(minutes=1))

    done = jobs_reap(senders={"evaluator.GenerationJob": generate_candidates}, now=now)

    assert sorted(done) == sorted(
        [
            f"evaluator.GenerationJob {lost.pk}: holder gone-host:1 lost, queued again",
            f"evaluator.GenerationJob {never_sent.pk}: sent again",
            f"evaluator.GenerationJob {message_lost.pk}: sent again",
        ]
    )
    states = dict(GenerationJob.objects.values_list("pk", "status"))
    assert states[lost.pk] == JobStatus.QUEUED and states[beating.pk] == JobStatus.RUNNING
    sent = dict(GenerationJob.objects.values_list("pk", "sent_at"))
    assert sent[lost.pk] is not None and sent[never_sent.pk] is not None and sent[message_lost.pk] > now
    assert sent[just_queued.pk] is None and sent[waiting.pk] == now - timedelta(minutes=1)


def test_a_send_while_the_broker_is_unreachable_leaves_the_job_queued_for_the_reaper(caplog) -> None:
    job = generation_job()
    with publishing_to(f"redis://127.0.0.1:{free_port()}/0"):
        assert not job_send(task=generate_candidates, model=GenerationJob, job_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.sent_at is None and job.awaiting_broker
    assert "could not be sent (the broker is unreachable" in caplog.text
    assert job_send(task=generate_candidates, model=GenerationJob, job_id=job.pk)
    assert GenerationJob.objects.get(pk=job.pk).sent_at is not None


@pytest.mark.django_db(transaction=True)
def test_progress_survives_its_database_connection_being_killed(caplog) -> None:
    job = generation_job()
    job_start(model=GenerationJob, job_id=job.pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    other = connections.create_connection("default")
    try:
        with other.cursor() as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()

    assert job_progress(model=GenerationJob, job_id=job.pk, done=2)
    assert GenerationJob.objects.get(pk=job.pk).done == 2
    assert "progress lost its database connection" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_running_task_beats_from_a_thread_through_a_long_step_that_writes_no_progress() -> None:
    job = generation_job()
    job_start(model=GenerationJob, job_id=job.pk)
    started = timezone.now() - timedelta(minutes=10)
    GenerationJob.objects.filter(pk=job.pk).update(heartbeat_at=started)

    with job_heartbeat(model=GenerationJob, job_id=job.pk, every=0.1):
        time.sleep(0.6)  # loading a model, say: nothing else is written meanwhile

    assert GenerationJob.objects.get(pk=job.pk).heartbeat_at > started + timedelta(minutes=9)
    job_finish(model=GenerationJob, job_id=job.pk)
    ended = GenerationJob.objects.get(pk=job.pk).heartbeat_at
    with job_heartbeat(model=GenerationJob, job_id=job.pk, every=0.1):
        time.sleep(0.3)
    assert GenerationJob.objects.get(pk=job.pk).heartbeat_at == ended, "an ended job beats no more"
