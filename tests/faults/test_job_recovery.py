"""Faults of a real stack, each ending with the job finished exactly once and nothing lost: a visibility timeout
shorter than the job, a Redis restart with a queued job, database connections killed during a training job's
heartbeats, a worker SIGKILLed mid-generation, and the broker down when a job is submitted.

Real processes only: `celery worker` and `celery beat` on a Redis server of the suite's own (tests/faults/conftest.py),
the test database, the tiny model. Run alone: `pytest tests/faults -m worker`.
"""

import threading
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from evaluator.models import Candidate, Comparison, GenerationJob, JobStatus, ModelVariant, TrainingJob
from evaluator.services.generation import generation_job_queue
from evaluator.services.training_jobs import training_job_queue
from tests import factories
from tests.evaluator.test_the_loop import logged_in, post_form
from tests.faults.conftest import OwnRedis, Stack, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

# Sampled answers, each of a few tokens: a job of a few dozen answers takes seconds on the tiny model.
SAMPLED = {"max_new_tokens": 12, "temperature": 0.8, "top_p": 0.95, "samples_per_prompt": 2}


def generation_campaign(tiny_model_dir: Path, prompts: int) -> tuple:
    campaign = factories.campaign()
    for _ in range(prompts):
        factories.prompt(campaign)
    variants = [factories.variant(base_model=str(tiny_model_dir), generation_settings=SAMPLED) for _ in "ab"]
    return campaign, variants


def job_of(job: GenerationJob) -> GenerationJob:
    return GenerationJob.objects.get(pk=job.pk)


def assert_generated_once(job: GenerationJob, stack: Stack) -> GenerationJob:
    """The job succeeded; every answer exists once; its comparison count is the campaign's, not a later run's 0."""
    job = job_of(job)
    assert job.status == JobStatus.SUCCEEDED, f"{job.error}\n{stack.logs()}"
    assert job.done == job.total == Candidate.objects.filter(prompt__campaign=job.campaign).count()
    comparisons = Comparison.objects.filter(campaign=job.campaign).count()
    assert comparisons > 0 and job.comparisons_created == comparisons
    return job


def test_a_copy_redelivered_while_its_job_runs_waits_and_takes_the_job_over_when_the_holder_is_lost(
    stack: Stack, tiny_model_dir: Path
) -> None:
    # A visibility timeout of 3 s, far shorter than the job: the broker hands the running job's message to the
    # second worker. That copy must neither run the job beside its holder nor be dropped.
    campaign, variants = generation_campaign(tiny_model_dir, prompts=16)
    first = stack.worker("first", ready=False, CELERY_VISIBILITY_TIMEOUT="3")
    second = stack.worker("second", ready=False, CELERY_VISIBILITY_TIMEOUT="3")
    first.wait_ready()
    second.wait_ready()
    job = generation_job_queue(campaign=campaign, variants=variants)
    wait_for(lambda: job_of(job).status == JobStatus.RUNNING, "the job to start", stack)
    holder, waiting = (first, second) if job_of(job).worker.endswith(f":{first.pids()[1]}") else (second, first)
    wait_for(lambda: "this copy looks again" in waiting.log, "the redelivered copy to wait on the holder", stack)
    assert job_of(job).attempts == 1, "the redelivered copy did not run the job beside its holder"
    held_by = job_of(job).worker

    holder.kill()

    wait_for(lambda: job_of(job).status != JobStatus.RUNNING or job_of(job).attempts == 2, "a take-over", stack)
    wait_for(lambda: job_of(job).status in (JobStatus.SUCCEEDED, JobStatus.FAILED), "the job to end", stack)
    job = assert_generated_once(job, stack)
    assert job.attempts == 2 and job.worker != held_by
    assert "is held by" in waiting.log


def test_a_queued_job_whose_message_a_redis_restart_lost_is_sent_again_by_the_reaper(
    stack: Stack, broker: OwnRedis, tiny_model_dir: Path
) -> None:
    campaign, variants = generation_campaign(tiny_model_dir, prompts=2)
    job = generation_job_queue(campaign=campaign, variants=variants)
    assert job_of(job).sent_at is not None, "the job's task reached the broker"

    broker.restart()  # no persistence: the queued message is gone
    worker = stack.worker("after-restart", ready=False)
    stack.beat()
    worker.wait_ready()

    wait_for(lambda: job_of(job).status in (JobStatus.SUCCEEDED, JobStatus.FAILED), "the job to end", stack)
    job = assert_generated_once(job, stack)
    assert job.attempts == 1
    assert f"evaluator.GenerationJob {job.pk}: sent again" in worker.log


@pytest.mark.training
def test_a_training_job_whose_database_connections_are_killed_during_its_heartbeats_still_finishes(
    stack: Stack, tiny_model_dir: Path, annotator
) -> None:
    campaign = factories.campaign(name="Connections killed")
    parent = factories.variant(name="tiny-parent", base_model=str(tiny_model_dir))
    other = factories.variant(name="tiny-other", base_model=str(tiny_model_dir))
    for number in range(6):
        comparison = factories.comparison(campaign, variants=(parent, other), texts=(f"Yes {number}.", "No."))
        factories.judgement(comparison, annotator, "a")
    worker = stack.worker("trainer")
    steps = 12
    training = {"beta": 0.1, "learning_rate": 1e-3, "per_device_train_batch_size": 2, "max_length": 64}
    job = training_job_queue(
        campaign=campaign,
        parent_variant=parent,
        training={**training, "max_steps": steps, "save_steps": 4, "qlora": {"lora_r": 4, "lora_alpha": 8}},
    )

    # Between its first and its second-to-last step, every database connection of the worker is killed over and
    # over: the heartbeat thread's, and the one its training loop writes progress, heartbeats and checkpoints on.
    killed: list[int] = []
    done = threading.Event()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (this_test,) = cursor.fetchone()

    def kill_connections() -> None:
        from django.db import connections

        try:
            while not done.wait(0.2):
                step = TrainingJob.objects.filter(pk=job.pk).values_list("progress_step", flat=True).first()
                if step is not None and 1 <= step <= steps - 3:
                    with connections["default"].cursor() as cursor:
                        cursor.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND pid NOT IN (pg_backend_pid(), %s)",
                            [this_test],
                        )
                        killed.extend(1 for (ok,) in cursor.fetchall() if ok)
        finally:
            connections["default"].close()

    killer = threading.Thread(target=kill_connections)
    killer.start()
    try:
        wait_for(
            lambda: TrainingJob.objects.get(pk=job.pk).status in (JobStatus.SUCCEEDED, JobStatus.FAILED),
            "the training job to end",
            stack,
            timeout=240,
        )
    finally:
        done.set()
        killer.join()
        connection.close()

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, f"{job.error}\n{stack.logs()}"
    assert len(killed) >= 2, "the worker's connections were killed while it trained"
    assert "lost its database connection" in worker.log
    assert job.attempts == 1, "the job was never lost: a dropped connection cost a reconnect, not the worker"
    assert [log["step"] for log in job.metrics if "loss" in log] == list(range(1, steps + 1))
    assert ModelVariant.objects.filter(training_job=job).count() == 1


def test_a_worker_killed_mid_generation_is_noticed_by_the_reaper_and_its_job_pairs_exactly_once(
    stack: Stack, tiny_model_dir: Path
) -> None:
    campaign, variants = generation_campaign(tiny_model_dir, prompts=10)
    lost = stack.worker("lost")
    job = generation_job_queue(campaign=campaign, variants=variants)
    wait_for(lambda: job_of(job).done >= 4, "the first answers", stack)
    assert job_of(job).status == JobStatus.RUNNING

    # Main process and pool at once: no "worker lost" requeue, and the visibility timeout is hours away. Only the
    # reaper can notice, from the heartbeat that stopped.
    survivor = stack.worker("survivor", ready=False)
    stack.beat()
    lost.kill()
    survivor.wait_ready()

    wait_for(lambda: job_of(job).status in (JobStatus.SUCCEEDED, JobStatus.FAILED), "the job to end", stack)
    job = assert_generated_once(job, stack)
    assert job.attempts == 2
    assert f"evaluator.GenerationJob {job.pk}: holder" in survivor.log and "queued again" in survivor.log


def test_a_job_submitted_while_the_broker_is_down_says_so_and_is_sent_once_the_broker_is_back(
    broker: OwnRedis, tmp_path: Path, tiny_model_dir: Path, admin_user
) -> None:
    campaign, variants = generation_campaign(tiny_model_dir, prompts=2)
    client = logged_in(admin_user.username)
    broker.stop()

    page = f"/manage/campaigns/{campaign.pk}/"
    response = post_form(
        client, page, f"/manage/campaigns/{campaign.pk}/generate/", {"variants": [v.pk for v in variants]}
    )
    text = client.get(response.url).content.decode()
    assert "cannot be reached right now: it is sent to a worker automatically once the queue is back" in text
    job = GenerationJob.objects.get(campaign=campaign)
    assert job.status == JobStatus.QUEUED and job.sent_at is None and job.awaiting_broker

    broker.start()
    stack = Stack(broker_url=broker.url, folder=tmp_path)
    try:
        stack.beat()
        worker = stack.worker("broker-back")
        wait_for(lambda: job_of(job).status in (JobStatus.SUCCEEDED, JobStatus.FAILED), "the job to end", stack)
        job = assert_generated_once(job, stack)
        assert job.attempts == 1 and job.sent_at is not None and job.sent_at <= timezone.now()
        assert f"evaluator.GenerationJob {job.pk}: sent again" in worker.log
    finally:
        stack.stop()
