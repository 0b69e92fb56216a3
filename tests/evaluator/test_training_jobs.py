"""The retrain job's life in the database: queue, claim, take-over of a lost job, cancel, resume, exactly one variant.

The training itself runs in tests/workers/test_retrain_jobs.py; these tests drive the services a task calls.
"""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.models import GenerationJob, JobStatus, ModelVariant, TrainingJob
from evaluator.selectors.campaigns import decisive_vote_count
from evaluator.selectors.training import LOG_TAIL_CHARS, LOG_TAIL_LINES, training_job_live
from evaluator.services.jobs import JobHeld, jobs_reap, worker_identity
from evaluator.services.training_jobs import (
    DEFAULT_MAX_ATTEMPTS,
    held_out_prompts_draw,
    job_log,
    training_job_beat,
    training_job_cancel,
    training_job_cancelled,
    training_job_progress,
    training_job_queue,
    training_job_resume,
    training_job_resume_point,
    training_job_start,
    training_job_succeed,
)
from tests import factories
from workers.tasks import run_training_job

pytestmark = pytest.mark.django_db

TRAINING = {"beta": 0.1, "max_steps": 4, "save_steps": 2, "qlora": {"lora_r": 4, "lora_alpha": 8}}


@pytest.fixture
def rated_campaign(annotator):
    campaign = factories.campaign(name="Rated")
    parent, other = factories.variant(name="base"), factories.variant(name="other")
    for _ in range(3):
        factories.judgement(factories.comparison(campaign, variants=(parent, other)), annotator, "a")
    return campaign, parent


def queued_job(campaign, parent, **fields) -> TrainingJob:
    job = training_job_queue(campaign=campaign, parent_variant=parent, training=TRAINING)
    if fields:
        TrainingJob.objects.filter(pk=job.pk).update(**fields)
        job.refresh_from_db()
    return job


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_queueing_stores_the_settings_rules_and_sources(rated_campaign, admin_user) -> None:
    campaign, parent = rated_campaign
    other = factories.campaign(name="Other source")
    job = training_job_queue(
        campaign=campaign,
        parent_variant=parent,
        training=TRAINING,
        selection={"criterion": "overall", "min_agreement": 0.6},
        source_campaigns=[campaign, other],
        held_out_prompts=[campaign.prompts.first().external_id],
        created_by=admin_user,
    )
    assert job.status == JobStatus.QUEUED and job.attempts == 0 and job.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert job.config["training"] == TRAINING
    assert job.config["selection"] == {"criterion": "overall", "min_agreement": 0.6}
    assert job.config["held_out_prompts"] == [campaign.prompts.first().external_id]
    assert set(job.source_campaigns.all()) == {campaign, other}


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"beta": -1}, "beta"),
        ({"learning_rate": 2.0}, "learning_rate"),
        ({"qlora": {"lora_r": 0}}, "lora_r"),
        ({"optim": "magic"}, "optim"),
        ({"epochs": 3}, "epochs"),
    ],
)
def test_bad_training_settings_are_refused_by_name_and_nothing_is_stored(rated_campaign, training, message) -> None:
    campaign, parent = rated_campaign
    with pytest.raises(ServiceError, match=message):
        training_job_queue(campaign=campaign, parent_variant=parent, training=training)
    assert not TrainingJob.objects.exists()


def test_held_out_prompts_must_belong_to_the_campaign(rated_campaign) -> None:
    campaign, parent = rated_campaign
    with pytest.raises(ServiceError, match="not-a-prompt"):
        training_job_queue(
            campaign=campaign, parent_variant=parent, training=TRAINING, held_out_prompts=["not-a-prompt"]
        )
    assert not TrainingJob.objects.exists()


def test_a_campaign_without_decisive_preferences_cannot_be_trained_on(annotator) -> None:
    campaign = factories.campaign()
    parent = factories.variant()
    factories.judgement(factories.comparison(campaign, variants=(parent, factories.variant())), annotator, "tie")
    with pytest.raises(ServiceError, match="No decisive overall preferences"):
        training_job_queue(campaign=campaign, parent_variant=parent, training=TRAINING)


def test_simulated_votes_count_as_decisive_preferences_only_when_the_selection_includes_them(annotator) -> None:
    campaign = factories.campaign()
    parent = factories.variant()
    comparison = factories.comparison(campaign, variants=(parent, factories.variant()))
    factories.judgement(comparison, annotator, "a", simulated=True)
    assert decisive_vote_count(campaign=campaign) == 0  # the campaign page's count before a retrain
    with pytest.raises(ServiceError, match="No decisive overall preferences"):
        training_job_queue(campaign=campaign, parent_variant=parent, training=TRAINING)
    assert not TrainingJob.objects.exists()

    job = training_job_queue(
        campaign=campaign, parent_variant=parent, training=TRAINING, selection={"include_simulated": True}
    )
    assert job.config["selection"] == {"include_simulated": True}


def test_the_held_out_draw_is_reproducible_and_leaves_prompts_to_train_on() -> None:
    campaign = factories.campaign()
    for _ in range(10):
        factories.prompt(campaign)
    first = held_out_prompts_draw(campaign=campaign, share=0.2, seed=7)
    assert first == held_out_prompts_draw(campaign=campaign, share=0.2, seed=7)
    assert len(first) == 2
    assert len(held_out_prompts_draw(campaign=campaign, share=0.9, seed=7)) == 9
    assert held_out_prompts_draw(campaign=campaign, share=0.0, seed=7) == []


def test_a_start_claims_a_queued_job_once(rated_campaign) -> None:
    job = queued_job(*rated_campaign)
    started = training_job_start(job_id=job.pk)
    assert started is not None and started.status == JobStatus.RUNNING and started.attempts == 1
    assert started.worker == worker_identity()
    # A second delivery while this process (alive) holds the job does not run it: it is told to wait.
    with pytest.raises(JobHeld):
        training_job_start(job_id=job.pk)
    assert TrainingJob.objects.get(pk=job.pk).attempts == 1


def test_a_running_job_whose_worker_process_died_is_taken_over_as_a_new_attempt(rated_campaign) -> None:
    host = worker_identity().rpartition(":")[0]
    job = queued_job(
        *rated_campaign,
        status=JobStatus.RUNNING,
        attempts=1,
        worker=f"{host}:{dead_pid()}",
        heartbeat_at=timezone.now(),
    )
    started = training_job_start(job_id=job.pk)
    assert started is not None and started.attempts == 2 and started.worker == worker_identity()


def test_a_job_held_on_another_host_is_taken_over_only_once_its_heartbeat_is_stale(rated_campaign, settings) -> None:
    settings.PREFLOOP_JOB_STALE_SECONDS = 600
    now = timezone.now()
    job = queued_job(*rated_campaign, status=JobStatus.RUNNING, attempts=1, worker="elsewhere:123", heartbeat_at=now)
    with pytest.raises(JobHeld):
        training_job_start(job_id=job.pk, now=now + timedelta(seconds=30))
    assert training_job_start(job_id=job.pk, now=now + timedelta(seconds=601)) is not None


def test_a_job_out_of_attempts_fails_instead_of_starting(rated_campaign) -> None:
    host = worker_identity().rpartition(":")[0]
    job = queued_job(*rated_campaign, status=JobStatus.RUNNING, attempts=3, worker=f"{host}:{dead_pid()}")
    assert training_job_start(job_id=job.pk) is None
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "3 attempts" in job.error and job.finished_at is not None


def test_the_reaper_requeues_a_stale_job_of_a_lost_worker_and_leaves_live_ones(rated_campaign, settings) -> None:
    settings.PREFLOOP_JOB_STALE_SECONDS = 60
    campaign, parent = rated_campaign
    old = timezone.now() - timedelta(minutes=5)
    lost = queued_job(campaign, parent, status=JobStatus.RUNNING, attempts=1, worker="gone:1", heartbeat_at=old)
    alive = queued_job(
        campaign, parent, status=JobStatus.RUNNING, attempts=1, worker=worker_identity(), heartbeat_at=old
    )
    fresh = queued_job(
        campaign, parent, status=JobStatus.RUNNING, attempts=1, worker="gone:2", heartbeat_at=timezone.now()
    )
    assert jobs_reap(senders={"evaluator.TrainingJob": run_training_job}) == [
        f"evaluator.TrainingJob {lost.pk}: holder gone:1 lost, queued again"
    ]
    assert TrainingJob.objects.get(pk=lost.pk).status == JobStatus.QUEUED
    assert TrainingJob.objects.get(pk=alive.pk).status == JobStatus.RUNNING
    assert TrainingJob.objects.get(pk=fresh.pk).status == JobStatus.RUNNING


def test_cancelling_a_queued_job_ends_it_at_once(rated_campaign) -> None:
    job = training_job_cancel(job=queued_job(*rated_campaign))
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert training_job_start(job_id=job.pk) is None


def test_cancelling_a_running_job_raises_the_flag_its_training_loop_checks(rated_campaign) -> None:
    job = queued_job(*rated_campaign)
    training_job_start(job_id=job.pk)
    assert training_job_beat(job_id=job.pk) is False
    training_job_cancel(job=job)
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.RUNNING
    assert training_job_beat(job_id=job.pk) is True
    training_job_cancelled(job_id=job.pk)
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    with pytest.raises(ServiceError, match="already ended"):
        training_job_cancel(job=job)


def test_a_cancelled_job_resumes_with_fresh_attempts_and_its_flag_cleared(rated_campaign) -> None:
    job = queued_job(*rated_campaign)
    training_job_start(job_id=job.pk)
    training_job_cancel(job=job)
    training_job_cancelled(job_id=job.pk)
    resumed = training_job_resume(job=job)
    assert resumed.status == JobStatus.QUEUED and not resumed.cancel_requested and resumed.finished_at is None
    assert resumed.max_attempts == 1 + DEFAULT_MAX_ATTEMPTS
    # Once its task has reached the broker, a queued job is waiting for a worker, not stuck: no second resume.
    TrainingJob.objects.filter(pk=job.pk).update(sent_at=timezone.now())
    with pytest.raises(ServiceError, match="Only a failed or cancelled job, or one stuck in the queue"):
        training_job_resume(job=resumed)


def test_a_queued_job_whose_task_never_reached_the_broker_or_was_lost_there_can_be_resumed(rated_campaign) -> None:
    job = queued_job(*rated_campaign, sent_at=timezone.now() - timedelta(hours=1))
    resumed = training_job_resume(job=job)
    assert resumed.status == JobStatus.QUEUED and resumed.sent_at is None and resumed.attempts == 0


def test_metrics_past_the_resumed_checkpoint_are_dropped(rated_campaign) -> None:
    job = queued_job(*rated_campaign)
    for step in (1, 2, 3):
        training_job_progress(job_id=job.pk, log={"step": step, "loss": 0.7, "max_steps": 4})
    training_job_resume_point(job=job, step=2)
    job.refresh_from_db()
    assert [log["step"] for log in job.metrics] == [1, 2] and job.progress_step == 2


def test_a_resumed_job_estimates_its_time_left_at_the_pace_of_the_current_attempt(rated_campaign) -> None:
    def log(step: int) -> None:
        training_job_progress(job_id=job.pk, log={"step": step, "loss": 0.6, "epoch": step / 20, "max_steps": 20})

    def eta(now) -> int | None:
        job.refresh_from_db()
        return training_job_live(job=job, now=now)["eta_seconds"]

    job = queued_job(*rated_campaign)
    first_start = timezone.now() - timedelta(hours=3)
    training_job_start(job_id=job.pk, now=first_start)
    for step in range(1, 7):
        log(step)
    assert eta(first_start + timedelta(seconds=60)) == 10 * 14  # 6 steps in 60 s, 14 to go
    # The worker died after step 6; two hours later a new one resumes from the checkpoint of step 4.
    host = worker_identity().rpartition(":")[0]
    TrainingJob.objects.filter(pk=job.pk).update(worker=f"{host}:{dead_pid()}")
    second_start = first_start + timedelta(hours=2)
    training_job_start(job_id=job.pk, now=second_start)
    training_job_resume_point(job=job, step=4)
    log(5)
    assert eta(second_start + timedelta(seconds=3)) is None, "one step of this attempt is no pace yet"
    log(6)
    # Steps 5 and 6 took 30 s each: 14 steps to go. The first attempt's start would have given over 14 hours.
    assert eta(second_start + timedelta(seconds=60)) == 30 * 14


def test_success_registers_one_variant_and_queues_its_round_on_the_held_out_prompts(rated_campaign) -> None:
    campaign, parent = rated_campaign
    held_out = campaign.prompts.first()
    job = training_job_queue(
        campaign=campaign, parent_variant=parent, training=TRAINING, held_out_prompts=[held_out.external_id]
    )
    training_job_start(job_id=job.pk)
    lineage = {"dataset_sha256": "abc"}
    variant = training_job_succeed(job_id=job.pk, adapter_dir="/a", base_model="tiny", lineage=lineage)
    assert variant is not None and variant.parent == parent and variant.training_job_id == job.pk
    # A second delivery that also got to the end registers nothing more.
    again = training_job_succeed(job_id=job.pk, adapter_dir="/b", base_model="tiny", lineage=lineage)
    assert again is None
    assert ModelVariant.objects.filter(training_job=job).count() == 1
    round_job = GenerationJob.objects.get(training_job=job)
    assert set(round_job.variants.all()) == {parent, variant}
    assert list(round_job.prompts.all()) == [held_out] and round_job.total == 2


def test_the_log_lines_of_the_run_holding_the_job_reach_its_row_and_the_page_shows_the_newest(
    rated_campaign, tmp_path
) -> None:
    job = queued_job(*rated_campaign)
    training_job_start(job_id=job.pk)

    with job_log(tmp_path / "job.log", job.pk) as log:
        for step in range(1, 2_001):
            log.info("step %d of 2000", step)
        try:
            raise RuntimeError("out of memory")
        except RuntimeError:
            log.exception("the job failed")

    job.refresh_from_db()
    assert len(job.log_tail) == LOG_TAIL_CHARS  # the oldest lines dropped
    shown = training_job_live(job=job)["log_tail"].splitlines()
    assert shown[-1] == "RuntimeError: out of memory" and "ERROR the job failed" in "\n".join(shown)
    assert "step 2000 of 2000" in "\n".join(shown) and len(shown) == LOG_TAIL_LINES
    assert (tmp_path / "job.log").read_text().count("\n") > 2_000  # the file keeps it all


def test_a_run_that_no_longer_holds_the_job_writes_no_log_line_to_its_row(rated_campaign, tmp_path) -> None:
    job = queued_job(*rated_campaign)
    training_job_start(job_id=job.pk)
    training_job_cancelled(job_id=job.pk)

    with job_log(tmp_path / "job.log", job.pk) as log:
        log.info("a line of a run that lost the job")

    assert TrainingJob.objects.get(pk=job.pk).log_tail == ""
    assert "a line of a run that lost the job" in (tmp_path / "job.log").read_text()
