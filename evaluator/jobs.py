"""Retrain jobs: their life in the database, from queue to a registered variant.

A job's truth lives in its row, never in the broker: status, heartbeat, newest checkpoint, attempts and the
worker (``host:pid``) that holds it. A task may be delivered twice (a redelivery after its worker died, the
reaper's re-queue, a visibility timeout): ``training_job_start`` hands the job to one of them only, under the
row lock, and takes a job over only from a holder that is gone; ``training_job_succeed`` registers at most one
variant (the variant's one-to-one link to its job backs that up).
"""

import os
import random
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from evaluator.assignments import ServiceError
from evaluator.models import (
    FINISHED_STATUSES,
    OVERALL,
    Campaign,
    CriterionChoice,
    JobStatus,
    ModelVariant,
    Outcome,
    Prompt,
    TrainingJob,
)

DEFAULT_MAX_ATTEMPTS = 3


def worker_identity() -> str:
    """This process as a job holder: the host name and the process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_alive(holder: str, heartbeat_at: datetime | None, *, now: datetime) -> bool:
    """Whether the process named by ``holder`` may still be training.

    On this host the process table answers; for another host only the heartbeat can, so a holder there counts
    as gone once its heartbeat is older than PREFLOOP_JOB_STALE_SECONDS.
    """
    host, _, pid = holder.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stale_after = timedelta(seconds=settings.PREFLOOP_JOB_STALE_SECONDS)
    return heartbeat_at is not None and now - heartbeat_at < stale_after


def held_out_prompts_draw(*, campaign: Campaign, share: float, seed: int) -> list[str]:
    """A seeded random share of the campaign's prompt ids, kept out of training and used for the new round."""
    ids = sorted(campaign.prompts.values_list("external_id", flat=True))
    if share <= 0 or not ids:
        return []
    count = min(len(ids) - 1, max(1, round(share * len(ids))))
    # A reproducible split, not a secret.
    return sorted(random.Random(seed).sample(ids, count)) if count > 0 else []  # noqa: S311


def training_job_queue(
    *,
    campaign: Campaign,
    parent_variant: ModelVariant,
    method: str = TrainingJob.Method.DPO,
    training: Mapping[str, Any],
    selection: Mapping[str, Any] | None = None,
    source_campaigns: Sequence[Campaign] = (),
    held_out_prompts: Sequence[str] = (),
    sft_source: str = "chosen",
    qa_path: str = "",
    created_by: AbstractBaseUser | None = None,
) -> TrainingJob:
    """Queue a DPO or SFT retrain of ``parent_variant`` on the preferences of ``source_campaigns``.

    The new variant's round runs in ``campaign`` on its ``held_out_prompts`` (all its prompts when empty).
    The training settings are checked here with the training library's own config class, so a bad value is
    refused before anything is stored.
    """
    from workers.tasks import run_training_job

    training_config_check(method=method, training=training)
    unknown = sorted(set(held_out_prompts) - set(campaign.prompts.values_list("external_id", flat=True)))
    if unknown:
        raise ServiceError(f"Held-out prompts not in “{campaign.name}”: {', '.join(unknown[:10])}.")
    if method == TrainingJob.Method.SFT and sft_source not in ("chosen", "qa"):
        raise ServiceError("SFT data must be the chosen answers or an imported Q&A file.")
    if sft_source == "qa" and not qa_path:
        raise ServiceError("SFT on a Q&A set needs the Q&A file.")
    sources = list(source_campaigns) or [campaign]
    include_simulated = bool((selection or {}).get("include_simulated"))
    if sft_source != "qa" and not _has_decisive_votes(sources, include_simulated=include_simulated):
        names = ", ".join(f"“{source.name}”" for source in sources)
        raise ServiceError(f"No decisive overall preferences in {names} yet: rate some pairs first.")
    config = {
        "training": dict(training),
        "selection": dict(selection or {}),
        "held_out_prompts": sorted(held_out_prompts),
    }
    if method == TrainingJob.Method.SFT:
        config.update(sft_source=sft_source, qa_path=qa_path)
    with transaction.atomic():
        job = TrainingJob.objects.create(
            campaign=campaign,
            parent_variant=parent_variant,
            method=method,
            config=config,
            created_by=created_by,
            max_attempts=DEFAULT_MAX_ATTEMPTS,
        )
        job.source_campaigns.set(sources)
        run_training_job.delay_on_commit(job.pk)
    return job


def _has_decisive_votes(campaigns: Sequence[Campaign], *, include_simulated: bool) -> bool:
    # As the dataset's SelectionRules: a scripted annotator's votes count only when the selection asks for them.
    choices = CriterionChoice.objects.filter(judgement__comparison__campaign__in=campaigns, criterion=OVERALL)
    if not include_simulated:
        choices = choices.filter(judgement__simulated=False)
    return choices.exclude(outcome=Outcome.TIE).exists()


def training_config_check(*, method: str, training: Mapping[str, Any]) -> None:
    """Refuse training settings the training library would refuse, with its message."""
    placeholders = {"base_model": "-", "dataset_path": "-", "output_dir": "-"}
    try:
        if method == TrainingJob.Method.SFT:
            from training.sft import SFTJobConfig

            SFTJobConfig.from_dict({**training, **placeholders})
        else:
            from training.dpo import DPOJobConfig

            DPOJobConfig.from_dict({**training, **placeholders})
    except ValueError as error:
        raise ServiceError(f"Training settings: {error}.") from None


def training_job_start(*, job_id: int, now: datetime | None = None) -> TrainingJob | None:
    """Hand the job to this process, or None when it is finished or another live process holds it.

    A running job is taken over only when its holder is gone (a worker killed mid-run); each start counts as
    an attempt, and a job out of attempts fails instead of starting.
    """
    now = now or timezone.now()
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in FINISHED_STATUSES:
            return None
        if job.status == JobStatus.RUNNING and holder_alive(job.worker, job.heartbeat_at, now=now):
            return None
        if job.attempts >= job.max_attempts:
            job.status, job.finished_at = JobStatus.FAILED, now
            job.error = f"Gave up after {job.attempts} attempts: the worker was lost each time."
            job.save(update_fields=["status", "finished_at", "error"])
            return None
        job.status = JobStatus.RUNNING
        job.attempts += 1
        job.worker = worker_identity()
        job.started_at = job.started_at or now
        job.attempt_started_at, job.attempt_start_step = now, 0
        job.heartbeat_at = now
        fields = ["status", "attempts", "worker", "started_at", "attempt_started_at", "attempt_start_step"]
        job.save(update_fields=[*fields, "heartbeat_at"])
    return TrainingJob.objects.select_related("parent_variant", "campaign").get(pk=job_id)


def training_job_dataset_record(*, job: TrainingJob, size: int, fingerprint: str) -> None:
    TrainingJob.objects.filter(pk=job.pk).update(dataset_size=size, dataset_hash=fingerprint)


def training_job_progress(*, job_id: int, log: Mapping[str, Any]) -> None:
    """Append one training log line and refresh progress and heartbeat."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().only("metrics", "progress_step", "progress_total").get(pk=job_id)
        job.metrics = [*job.metrics, dict(log)]
        job.progress_step = int(log.get("step", job.progress_step))
        job.progress_total = int(log.get("max_steps", job.progress_total))
        job.heartbeat_at = timezone.now()
        job.save(update_fields=["metrics", "progress_step", "progress_total", "heartbeat_at"])


def training_job_beat(*, job_id: int) -> bool:
    """Refresh the heartbeat after a training step; True when an admin asked to cancel."""
    TrainingJob.objects.filter(pk=job_id, status=JobStatus.RUNNING).update(heartbeat_at=timezone.now())
    return TrainingJob.objects.filter(pk=job_id, cancel_requested=True).exists()


def training_job_checkpoint(*, job_id: int, path: str, step: int) -> None:
    """Record a complete checkpoint: the point a lost job resumes from."""
    TrainingJob.objects.filter(pk=job_id).update(last_checkpoint=path, progress_step=step, heartbeat_at=timezone.now())


def training_job_resume_point(*, job: TrainingJob, step: int) -> None:
    """Forget the log lines past the checkpoint a job resumes from: those steps are trained again, and this
    attempt's pace counts from the checkpoint."""
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().only("metrics").get(pk=job.pk)
        locked.metrics = [log for log in locked.metrics if int(log.get("step", 0)) <= step]
        locked.progress_step = locked.attempt_start_step = step
        locked.save(update_fields=["metrics", "progress_step", "attempt_start_step"])


def training_job_cancel(*, job: TrainingJob) -> TrainingJob:
    """Cancel a job: a queued one at once; a running one at its next step (the training loop checks the flag)."""
    now = timezone.now()
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.status == JobStatus.QUEUED:
            job.status, job.finished_at, job.cancel_requested = JobStatus.CANCELLED, now, True
            job.save(update_fields=["status", "finished_at", "cancel_requested"])
        elif job.status == JobStatus.RUNNING:
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
        else:
            raise ServiceError(f"Job #{job.pk} has already ended ({job.get_status_display().lower()}).")
    return job


def training_job_cancelled(*, job_id: int) -> None:
    """The training loop stopped on a cancel request."""
    TrainingJob.objects.filter(pk=job_id, status=JobStatus.RUNNING).update(
        status=JobStatus.CANCELLED, finished_at=timezone.now()
    )


def training_job_resume(*, job: TrainingJob) -> TrainingJob:
    """Queue a failed or cancelled job again; it goes on from its newest checkpoint, with fresh attempts."""
    from workers.tasks import run_training_job

    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise ServiceError(f"Only a failed or cancelled job can be resumed; #{job.pk} is {job.status}.")
        if ModelVariant.objects.filter(training_job=job).exists():
            raise ServiceError(f"Job #{job.pk} has already registered its variant.")
        job.status, job.finished_at, job.error, job.cancel_requested = JobStatus.QUEUED, None, "", False
        job.max_attempts = job.attempts + DEFAULT_MAX_ATTEMPTS
        job.save(update_fields=["status", "finished_at", "error", "cancel_requested", "max_attempts"])
        run_training_job.delay_on_commit(job.pk)
    return job


def training_job_fail(*, job_id: int, error: str) -> None:
    TrainingJob.objects.filter(pk=job_id).exclude(status__in=FINISHED_STATUSES).update(
        status=JobStatus.FAILED, error=error[:5000], finished_at=timezone.now()
    )


def training_job_succeed(
    *, job_id: int, adapter_dir: str, base_model: str, lineage: Mapping[str, Any]
) -> ModelVariant | None:
    """Register the trained adapter as a new variant and queue its round against the parent, exactly once.

    None when the job is no longer this run's to finish (cancelled meanwhile, or already registered).
    """
    from evaluator.services import generation_job_queue

    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().select_related("parent_variant", "campaign").get(pk=job_id)
        if job.status != JobStatus.RUNNING or ModelVariant.objects.filter(training_job=job).exists():
            return None
        parent = job.parent_variant
        variant = ModelVariant.objects.create(
            name=f"{parent.name} · {job.get_method_display()} #{job.pk}",
            base_model=base_model,
            adapter_path=adapter_dir,
            quantization=parent.quantization,
            generation_settings=parent.generation_settings,
            collection=parent.collection,
            retrieval_top_k=parent.retrieval_top_k,
            retrieval_template=parent.retrieval_template,
            parent=parent,
            training_job=job,
            lineage=dict(lineage),
        )
        job.status, job.finished_at = JobStatus.SUCCEEDED, timezone.now()
        job.save(update_fields=["status", "finished_at"])
        held_out_ids = job.config.get("held_out_prompts", [])
        held_out = list(Prompt.objects.filter(campaign=job.campaign, external_id__in=held_out_ids))
        generation_job_queue(campaign=job.campaign, variants=[parent, variant], training_job=job, prompts=held_out)
    return variant


def training_jobs_reap(*, now: datetime | None = None) -> list[int]:
    """Queue again every running job whose worker is gone; returns their ids.

    A worker killed outright (power loss, OOM killer on the main process) leaves its job running with a stale
    heartbeat and, on Redis, its task unacknowledged for hours: this hands the job to the next free worker,
    which resumes it from its newest checkpoint.
    """
    from workers.tasks import run_training_job

    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.PREFLOOP_JOB_STALE_SECONDS)
    requeued = []
    for job in TrainingJob.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=stale).only(
        "pk", "worker", "heartbeat_at"
    ):
        if holder_alive(job.worker, job.heartbeat_at, now=now):
            continue
        with transaction.atomic():
            # Conditional on the heartbeat we judged: a job that beat meanwhile is alive after all.
            updated = TrainingJob.objects.filter(
                pk=job.pk, status=JobStatus.RUNNING, heartbeat_at=job.heartbeat_at
            ).update(status=JobStatus.QUEUED)
            if updated:
                run_training_job.delay_on_commit(job.pk)
                requeued.append(job.pk)
    return requeued
