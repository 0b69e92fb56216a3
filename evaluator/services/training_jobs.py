"""Retrain jobs: their life in the database, from queue to a registered variant.

A job's truth lives in its row, never in the broker: status, heartbeat, newest checkpoint, attempts and the
worker (``host:pid``) that holds it. A task may be delivered twice (a redelivery after its worker died, the
reaper's re-queue, a visibility timeout): ``training_job_start`` hands the job to one of them only, under the
row lock, and takes a job over only from a holder that is gone; ``training_job_succeed`` registers at most one
variant (the variant's one-to-one link to its job backs that up).
"""

import logging
import os
import platform
import random
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from evaluator.errors import ServiceError
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
from evaluator.selectors.dpo_dataset import SelectionRules, preference_records_select
from evaluator.selectors.training import training_job_workdir
from evaluator.services.generation import generation_job_queue
from evaluator.services.jobs import job_cancel, job_fail, job_finish, job_progress, job_requeue, job_resume, job_stop
from workers.tasks import run_training_job as run_training_job_task

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
    created_by: User | None = None,
) -> TrainingJob:
    """Queue a DPO or SFT retrain of ``parent_variant`` on the preferences of ``source_campaigns``.

    The new variant's round runs in ``campaign`` on its ``held_out_prompts`` (all its prompts when empty).
    The training settings are checked here with the training library's own config class, so a bad value is
    refused before anything is stored.
    """

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
        run_training_job_task.delay_on_commit(job.pk)
    return job


def qa_file_store(*, name: str, data: bytes) -> str:
    """Check an uploaded Q&A set and keep it in the shared artifacts folder, where every worker can read it."""
    from training.sft import sft_records_from_qa

    folder = Path(settings.ARTIFACTS_DIR) / "qa-uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.jsonl"
    path.write_bytes(data)
    try:
        sft_records_from_qa(path)
    except ValueError as error:
        path.unlink()
        # The message names the stored copy; the admin knows the file by its own name.
        raise ServiceError(f"Q&A file {str(error).replace(str(path), name)}") from None
    return str(path)


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
            error = f"Gave up after {job.attempts} attempts: the worker was lost each time."
            job_fail(model=TrainingJob, job_id=job_id, error=error)
            return None
        # Conditional on the row we judged (it is locked, so this holds; the count says so).
        taken = TrainingJob.objects.filter(pk=job_id, status=job.status, attempts=job.attempts).update(
            status=JobStatus.RUNNING,
            attempts=job.attempts + 1,
            worker=worker_identity(),
            started_at=job.started_at or now,
            attempt_started_at=now,
            attempt_start_step=0,
            heartbeat_at=now,
        )
        if taken != 1:
            return None
    return TrainingJob.objects.select_related("parent_variant", "campaign").get(pk=job_id)


def training_job_dataset_record(*, job: TrainingJob, size: int, fingerprint: str) -> None:
    job_progress(model=TrainingJob, job_id=job.pk, dataset_size=size, dataset_hash=fingerprint)


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
    job_progress(model=TrainingJob, job_id=job_id, heartbeat_at=timezone.now())
    return TrainingJob.objects.filter(pk=job_id, cancel_requested=True).exists()


def training_job_checkpoint(*, job_id: int, path: str, step: int) -> None:
    """Record a complete checkpoint: the point a lost job resumes from."""
    job_progress(
        model=TrainingJob, job_id=job_id, last_checkpoint=path, progress_step=step, heartbeat_at=timezone.now()
    )


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
    cancelled = job_cancel(model=TrainingJob, job_id=job.pk, cancel_requested=True) or job_progress(
        model=TrainingJob, job_id=job.pk, cancel_requested=True
    )
    job.refresh_from_db()
    if not cancelled:
        raise ServiceError(f"Job #{job.pk} has already ended ({job.get_status_display().lower()}).")
    return job


def training_job_cancelled(*, job_id: int) -> None:
    """The training loop stopped on a cancel request."""
    job_stop(model=TrainingJob, job_id=job_id)


def training_job_resume(*, job: TrainingJob) -> TrainingJob:
    """Queue a failed or cancelled job again; it goes on from its newest checkpoint, with fresh attempts."""

    with transaction.atomic():
        if ModelVariant.objects.filter(training_job=job).exists():
            raise ServiceError(f"Job #{job.pk} has already registered its variant.")
        resumed = job_resume(
            model=TrainingJob, job_id=job.pk, cancel_requested=False, max_attempts=F("attempts") + DEFAULT_MAX_ATTEMPTS
        )
        job.refresh_from_db()
        if not resumed:
            raise ServiceError(f"Only a failed or cancelled job can be resumed; #{job.pk} is {job.status}.")
        run_training_job_task.delay_on_commit(job.pk)
    return job


def training_job_succeed(
    *,
    job_id: int,
    adapter_dir: str,
    base_model: str,
    lineage: Mapping[str, Any],
    log: logging.Logger | None = None,
) -> ModelVariant | None:
    """Register the trained adapter as a new variant and queue its round against the parent, exactly once.

    None when the job is no longer this run's to finish (cancelled meanwhile, or already registered). The job's
    ``log`` gets the registration before the status commits, so whoever sees the job succeeded reads it there.
    """
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().select_related("parent_variant", "campaign").get(pk=job_id)
        if ModelVariant.objects.filter(training_job=job).exists() or not job_finish(model=TrainingJob, job_id=job_id):
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
        held_out_ids = job.config.get("held_out_prompts", [])
        held_out = list(Prompt.objects.filter(campaign=job.campaign, external_id__in=held_out_ids))
        generation_job_queue(campaign=job.campaign, variants=[parent, variant], training_job=job, prompts=held_out)
        if log is not None:
            log.info("registered “%s”", variant.name)
    return variant


def training_jobs_reap(*, now: datetime | None = None) -> list[int]:
    """Queue again every running job whose worker is gone; returns their ids.

    A worker killed outright (power loss, OOM killer on the main process) leaves its job running with a stale
    heartbeat and, on Redis, its task unacknowledged for hours: this hands the job to the next free worker,
    which resumes it from its newest checkpoint.
    """

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
            if job_requeue(model=TrainingJob, job_id=job.pk, condition=Q(heartbeat_at=job.heartbeat_at)):
                run_training_job_task.delay_on_commit(job.pk)
                requeued.append(job.pk)
    return requeued


# Running a job (the run_training_job task) ---------------------------------------------------------------------


def training_job_run(*, job_id: int) -> None:
    """Train the job's QLoRA adapter (DPO or SFT), resuming from its newest checkpoint, and register it.

    Delivered again after its worker process died (late ack, reject on worker lost) or re-queued by the reaper,
    it goes on from the checkpoint; `training_job_start` lets only one delivery run the job. The job's log file
    (shown on its page) gets every step of the way, the failure's traceback included, before the status moves.
    """
    job = training_job_start(job_id=job_id)
    if job is None:
        return
    workdir = training_job_workdir(job=job)
    workdir.mkdir(parents=True, exist_ok=True)
    with job_log(workdir / "job.log") as log:
        log.info("attempt %d of %d on %s", job.attempts, job.max_attempts, job.worker)
        try:
            _train(job, workdir, log)
        except Exception:
            log.exception("the job failed")
            raise


def _train(job: TrainingJob, workdir: Path, log: logging.Logger) -> None:
    from training.preferences import dataset_fingerprint
    from training.trainer_common import checkpoint_step, latest_checkpoint

    resume_from = latest_checkpoint(workdir)
    dataset = workdir / "dataset.jsonl"
    if resume_from is None or not dataset.exists():
        count = _write_dataset(job, dataset)
        log.info("dataset: %d records", count)
    else:
        count = sum(1 for _ in dataset.open(encoding="utf-8"))
    fingerprint = dataset_fingerprint(dataset)
    training_job_dataset_record(job=job, size=count, fingerprint=fingerprint)
    base_model = _training_base(job.parent_variant, log)
    config_data = {**job.config["training"], "base_model": base_model, "dataset_path": str(dataset)}
    config_data["output_dir"] = str(workdir)
    if resume_from is not None:
        step = checkpoint_step(resume_from)
        log.info("resuming from %s (step %d)", resume_from.name, step)
        training_job_resume_point(job=job, step=step)
    hooks: dict[str, Any] = {
        "on_log": partial(_progress_record, job.pk),
        "should_stop": partial(_beat, job.pk),
        "on_checkpoint": partial(_checkpoint_record, job.pk, log),
        "resume_from_checkpoint": resume_from,
    }
    if job.method == TrainingJob.Method.SFT:
        from training.sft import SFTJobConfig, train_sft

        sft_config = SFTJobConfig.from_dict(config_data)
        result = train_sft(sft_config, **hooks)
        config_dict = sft_config.to_dict()
    else:
        from training.dpo import DPOJobConfig, train_dpo

        dpo_config = DPOJobConfig.from_dict(config_data)
        result = train_dpo(dpo_config, **hooks)
        config_dict = dpo_config.to_dict()
    if result.stopped_early:
        log.info("cancelled at step %d", result.steps)
        training_job_cancelled(job_id=job.pk)
        return
    log.info("trained %d steps", result.steps)
    training_job_succeed(
        job_id=job.pk,
        adapter_dir=str(result.adapter_dir),
        base_model=base_model,
        lineage=_lineage(config_dict, fingerprint, job),
        log=log,
    )


def _progress_record(job_id: int, entry: Mapping[str, Any]) -> None:
    training_job_progress(job_id=job_id, log=entry)


def _beat(job_id: int) -> bool:
    return training_job_beat(job_id=job_id)


def _checkpoint_record(job_id: int, log: logging.Logger, path: Path, step: int) -> None:
    log.info("checkpoint at step %d", step)
    training_job_checkpoint(job_id=job_id, path=str(path), step=step)


def _write_dataset(job: TrainingJob, path: Path) -> int:
    """The job's training records (DPO preference pairs or SFT conversations) written to `path`."""
    from training.preferences import write_jsonl

    if job.method == TrainingJob.Method.SFT and job.config.get("sft_source") == "qa":
        from training.sft import sft_records_from_qa

        records = sft_records_from_qa(Path(job.config["qa_path"]))
    else:
        rules = SelectionRules(
            **job.config.get("selection", {}), held_out_prompts=frozenset(job.config.get("held_out_prompts", []))
        )
        records = [
            record
            for campaign in job.source_campaigns.order_by("pk")
            for record in preference_records_select(campaign=campaign, rules=rules)
        ]
        if job.method == TrainingJob.Method.SFT:
            records = [{"messages": [*record["prompt"], *record["chosen"]]} for record in records]
    if not records:
        raise ValueError("the source campaigns have no decisive preferences to train on")
    write_jsonl(records, path)
    return len(records)


def _training_base(parent: ModelVariant, log: logging.Logger) -> str:
    """The model the new adapter trains on: the parent's base, with the parent's adapter merged in if it has
    one (into a bf16 copy, never the 4-bit weights), so that every round improves on its parent."""
    if not parent.adapter_path:
        return parent.base_model
    from training.export import merge_adapter

    merged = Path(settings.ARTIFACTS_DIR) / "merged" / f"variant-{parent.pk}"
    if not (merged / "config.json").exists():
        log.info("merging the parent's adapter into its base: %s", merged)
        merge_adapter(parent.base_model, parent.adapter_path, merged)
    return str(merged)


@contextmanager
def job_log(path: Path) -> Iterator[logging.Logger]:
    """A logger that appends to the job's log file (shown on the job page) for the length of the block."""
    logger_ = logging.getLogger(f"prefloop.job.{path.parent.name}")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger_.addHandler(handler)
    logger_.setLevel(logging.INFO)
    try:
        yield logger_
    finally:
        logger_.removeHandler(handler)
        handler.close()


def _lineage(config: Mapping[str, Any], fingerprint: str, job: TrainingJob) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    return {
        "method": job.method,
        "parent": job.parent_variant.name,
        "job": job.pk,
        "source_campaigns": list(job.source_campaigns.values_list("name", flat=True)),
        "held_out_prompts": job.config.get("held_out_prompts", []),
        "selection": job.config.get("selection", {}),
        "config": dict(config),
        "dataset_sha256": fingerprint,
        "seed": config.get("seed"),
        "versions": {
            "bitsandbytes": _version("bitsandbytes"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
    }


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
