"""Retrain jobs: their life in the database, from queue to a registered variant.

A job's truth lives in its row, never in the broker: status, heartbeat, newest checkpoint, attempts and the
worker (``host:pid``) that holds it. A task may be delivered twice (a redelivery after its worker died, the
reaper's re-queue, a visibility timeout): ``training_job_start`` hands the job to one of them only, under the
row lock, and takes a job over only from a holder that is gone (evaluator/services/jobs.py, the recovery design
of every job kind); ``training_job_succeed`` registers at most one variant (the variant's one-to-one link to its
job backs that up).
"""

import logging
import platform
import random
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, TextField, Value
from django.db.models.functions import Concat, Right
from django.utils import timezone

from evaluator.artifacts import (
    ArtifactUnavailable,
    artifact_fetch,
    artifact_publish,
    artifact_unpublish,
    is_artifact,
    model_source,
)
from evaluator.batching import batched
from evaluator.errors import ServiceError
from evaluator.models import (
    Campaign,
    ModelVariant,
    Prompt,
    TrainingJob,
)
from evaluator.selectors.dpo_dataset import SelectionRules, preference_outcomes_select, preference_records_select
from evaluator.selectors.training import LOG_TAIL_CHARS, held_out_prompt_count, training_job_workdir
from evaluator.services.generation import generation_job_queue
from evaluator.services.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    db_retrying,
    job_cancel,
    job_claim,
    job_finish,
    job_progress,
    job_resume,
    job_send_on_commit,
    job_start,
    job_stop,
)
from workers.tasks import run_training_job as run_training_job_task

if TYPE_CHECKING:
    from training.trainer_common import TrainingJobConfig


def held_out_prompts_draw(*, campaign: Campaign, share: float, seed: int) -> list[str]:
    """A seeded random share of the campaign's prompt ids, kept out of training and used for the new round."""
    ids = sorted(campaign.prompts.values_list("external_id", flat=True))
    count = held_out_prompt_count(total=len(ids), share=share)
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
    if sft_source != "qa":
        _refuse_an_empty_selection(sources, selection or {}, held_out_prompts)
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
        job_send_on_commit(task=run_training_job_task, job=job)
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
    # Published (with an artifact store) for the worker that trains on it, on whichever machine.
    return artifact_publish(path)


def _refuse_an_empty_selection(
    sources: Sequence[Campaign], selection: Mapping[str, Any], held_out_prompts: Sequence[str]
) -> None:
    """Raise ServiceError unless the selection makes at least one training record: the rules the worker builds
    its dataset with (`_write_dataset`), applied now, so that an empty dataset is refused at the form and not
    reported by the worker as a failed job."""
    try:
        rules = SelectionRules(**selection, held_out_prompts=frozenset(held_out_prompts))
    except (TypeError, ValueError) as error:
        raise ServiceError(f"Selection: {error}.") from None
    if any(preference_outcomes_select(campaign=source, rules=rules) for source in sources):
        return
    names = ", ".join(f"“{source.name}”" for source in sources)
    narrowing = [
        f"{len(rules.held_out_prompts)} held-out prompt(s) left out" if rules.held_out_prompts else "",
        f"pairs agreed on by at least {rules.min_agreement:.0%} of their judgements" if rules.min_agreement else "",
        "" if rules.include_gold else "gold items left out",
        "flagged annotators left out" if rules.exclude_flagged else "",
        "adjudicated outcomes preferred" if rules.prefer_adjudicated else "",
        "" if rules.include_simulated else "simulated judgements left out",
    ]
    shown = "; ".join(part for part in narrowing if part)
    raise ServiceError(
        f"No decisive {rules.criterion} preferences in {names} yet under this selection ({shown}): rate more "
        "pairs, or widen the selection."
    )


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
    """Hand the job to this process, or None when it has ended (or is out of attempts, and fails).

    A running job is taken over only when its holder is gone (a worker killed mid-run); while it lives this raises
    JobHeld. Each start counts as an attempt, and this attempt's pace counts from now.
    """
    now = now or timezone.now()
    if not job_start(model=TrainingJob, job_id=job_id, now=now, attempt_started_at=now, attempt_start_step=0):
        return None
    return TrainingJob.objects.select_related("parent_variant", "campaign").get(pk=job_id)


def training_job_dataset_record(*, job: TrainingJob, size: int, fingerprint: str) -> None:
    job_progress(model=TrainingJob, job_id=job.pk, dataset_size=size, dataset_hash=fingerprint)


def training_job_progress(*, job_id: int, log: Mapping[str, Any]) -> bool:
    """Append one training log line and refresh progress and heartbeat; False when this run no longer holds the
    job (another run's log is never written). A dropped database connection costs a reconnect, not the job."""

    def write() -> bool:
        with transaction.atomic():
            rows = TrainingJob.objects.select_for_update().filter(pk=job_id)
            claim = job_claim(model=TrainingJob, job_id=job_id)
            if claim is not None:
                rows = rows.filter(claim=claim)
            job = rows.only("metrics", "progress_step", "progress_total").first()
            if job is None:
                return False
            job.metrics = [*job.metrics, dict(log)]
            job.progress_step = int(log.get("step", job.progress_step))
            job.progress_total = int(log.get("max_steps", job.progress_total))
            job.heartbeat_at = timezone.now()
            job.save(update_fields=["metrics", "progress_step", "progress_total", "heartbeat_at"])
            return True

    return db_retrying(write, what="a training log line")


def training_job_beat(*, job_id: int) -> bool:
    """Refresh the heartbeat after a training step; True when the training should stop: an admin asked to
    cancel, or this run no longer holds the job (it was handed to another)."""
    if not job_progress(model=TrainingJob, job_id=job_id):
        return True
    return db_retrying(lambda: TrainingJob.objects.filter(pk=job_id, cancel_requested=True).exists())


def training_job_checkpoint(*, job_id: int, path: str, step: int) -> None:
    """Record a complete checkpoint: the point a lost job resumes from."""
    job_progress(model=TrainingJob, job_id=job_id, last_checkpoint=path, progress_step=step)


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
    """Queue a failed or cancelled job again, or send again one stuck in the queue (its task never reached the
    broker, or was lost there); it goes on from its newest checkpoint, with fresh attempts. ``job.sent_at`` is
    None afterwards when the broker could not be reached (the reaper sends it once the broker is back)."""

    with transaction.atomic():
        if ModelVariant.objects.filter(training_job=job).exists():
            raise ServiceError(f"Job #{job.pk} has already registered its variant.")
        resumed = job_resume(
            model=TrainingJob, job_id=job.pk, cancel_requested=False, max_attempts=F("attempts") + DEFAULT_MAX_ATTEMPTS
        )
        job.refresh_from_db()
        if not resumed:
            raise ServiceError(
                f"Only a failed or cancelled job, or one stuck in the queue, can be resumed; #{job.pk} is {job.status}."
            )
        job_send_on_commit(task=run_training_job_task, job=job)
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
    ``log`` gets the registration before the status commits, so whoever sees the job succeeded reads it there. A
    dropped database connection costs the transaction a retry, not the trained adapter.
    """
    return db_retrying(
        partial(_succeed, job_id=job_id, adapter_dir=adapter_dir, base_model=base_model, lineage=lineage, log=log),
        what="registering the variant",
    )


def _succeed(
    *, job_id: int, adapter_dir: str, base_model: str, lineage: Mapping[str, Any], log: logging.Logger | None
) -> ModelVariant | None:
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
        held_out = [
            prompt
            for ids in batched(held_out_ids)
            for prompt in Prompt.objects.filter(campaign=job.campaign, external_id__in=ids)
        ]
        generation_job_queue(campaign=job.campaign, variants=[parent, variant], training_job=job, prompts=held_out)
        if log is not None:
            log.info("registered “%s”", variant.name)
    return variant


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
    with job_log(workdir / "job.log", job.pk) as log:
        log.info("attempt %d of %d on %s", job.attempts, job.max_attempts, job.worker)
        try:
            _train(job, workdir, log)
        except Exception:
            log.exception("the job failed")
            raise


def _train(job: TrainingJob, workdir: Path, log: logging.Logger) -> None:
    from training.preferences import dataset_fingerprint
    from training.trainer_common import checkpoint_step, latest_checkpoint

    resume_from = latest_checkpoint(workdir) or _published_checkpoint(job, workdir, log)
    dataset = workdir / "dataset.jsonl"
    if resume_from is None or not dataset.exists():
        count = _write_dataset(job, dataset)
        artifact_publish(dataset)
        log.info("dataset: %d records", count)
    else:
        count = sum(1 for _ in dataset.open(encoding="utf-8"))
    fingerprint = dataset_fingerprint(dataset)
    training_job_dataset_record(job=job, size=count, fingerprint=fingerprint)
    base_model = _training_base(job.parent_variant, log)
    config_data = {**job.config["training"], "base_model": model_source(base_model), "dataset_path": str(dataset)}
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
    processes, accelerate_config = settings.PREFLOOP_TRAIN_PROCESSES, settings.PREFLOOP_ACCELERATE_CONFIG
    if processes > 1 or accelerate_config:
        # Several processes (`accelerate launch`): they report through the run's files, which the launcher
        # follows, and a cancel ends them all.
        from training.launch import train_launched

        launched_config = _training_config(job.method, config_data)
        log.info("training as %d processes (accelerate config: %s)", processes, accelerate_config or "none")
        accelerate = accelerate_config or None
        result = train_launched(
            launched_config, method=job.method, processes=processes, accelerate_config=accelerate, **hooks
        )
        config_dict = launched_config.to_dict()
    elif job.method == TrainingJob.Method.SFT:
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
    # Published before the job is marked succeeded: whoever sees the variant can fetch its adapter.
    adapter = artifact_publish(result.adapter_dir)
    log.info("adapter stored as %s", adapter)
    variant = training_job_succeed(
        job_id=job.pk,
        adapter_dir=adapter,
        base_model=base_model,
        lineage=_lineage(config_dict, fingerprint, job),
        log=log,
    )
    if variant is not None:
        _checkpoints_drop(job.pk, workdir, log)


def _training_config(method: str, data: Mapping[str, Any]) -> "TrainingJobConfig":
    if method == TrainingJob.Method.SFT:
        from training.sft import SFTJobConfig

        return SFTJobConfig.from_dict(data)
    from training.dpo import DPOJobConfig

    return DPOJobConfig.from_dict(data)


def _progress_record(job_id: int, entry: Mapping[str, Any]) -> None:
    training_job_progress(job_id=job_id, log=entry)


def _beat(job_id: int) -> bool:
    return training_job_beat(job_id=job_id)


def _checkpoint_record(job_id: int, log: logging.Logger, path: Path, step: int) -> None:
    log.info("checkpoint at step %d", step)
    replaced = _last_checkpoint(job_id)
    stored = artifact_publish(path)
    training_job_checkpoint(job_id=job_id, path=stored, step=step)
    if replaced != stored:  # only the newest checkpoint is ever resumed from
        _unpublish(replaced, log)


def _checkpoints_drop(job_id: int, workdir: Path, log: logging.Logger) -> None:
    """A succeeded job is never resumed: its checkpoints leave the store and this machine (its adapter is what it
    made). A cancelled or failed job keeps them, to be resumed."""
    from training.trainer_common import CHECKPOINT_PREFIX, CHECKPOINTS_FOLDER

    _unpublish(_last_checkpoint(job_id), log)
    # Only the checkpoint folders: the TensorBoard log beside them stays.
    for checkpoint in (workdir / CHECKPOINTS_FOLDER).glob(f"{CHECKPOINT_PREFIX}*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
    log.info("checkpoints removed: the adapter is registered")


def _last_checkpoint(job_id: int) -> str:
    """The checkpoint the job would resume from; read during training, so a dropped connection costs a reconnect."""
    rows = TrainingJob.objects.filter(pk=job_id).values_list("last_checkpoint", flat=True)
    return db_retrying(rows.first, what="a checkpoint read") or ""


def _unpublish(stored: str, log: logging.Logger) -> None:
    """A checkpoint no longer needed, deleted from the artifact store; a store that fails is logged, not fatal
    (the checkpoint only takes room)."""
    try:
        artifact_unpublish(stored)
    except ArtifactUnavailable as error:
        log.warning("could not delete %s from the artifact store: %s", stored, error)


def _published_checkpoint(job: TrainingJob, workdir: Path, log: logging.Logger) -> Path | None:
    """The job's newest checkpoint, with its dataset, fetched from the artifact store: an attempt on another machine
    than the last one goes on from there. None when the job has none (or no store holds artifacts)."""
    from training.trainer_common import latest_checkpoint

    if not is_artifact(job.last_checkpoint):
        return None
    checkpoint = artifact_fetch(job.last_checkpoint)
    if checkpoint.exists():
        artifact_fetch((workdir / "dataset.jsonl").relative_to(settings.ARTIFACTS_DIR).as_posix())
        log.info("fetched checkpoint %s from the artifact store", job.last_checkpoint)
    return latest_checkpoint(workdir)


def _write_dataset(job: TrainingJob, path: Path) -> int:
    """The job's training records (DPO preference pairs or SFT conversations) written to `path`."""
    from training.preferences import write_jsonl

    if job.method == TrainingJob.Method.SFT and job.config.get("sft_source") == "qa":
        from training.sft import sft_records_from_qa

        records = sft_records_from_qa(artifact_fetch(job.config["qa_path"]))
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
    one (into a bf16 copy, never the 4-bit weights), so that every round improves on its parent. A merged copy is
    an artifact (the new variant's base, wherever it generates): published, and fetched rather than merged again."""
    if not parent.adapter_path:
        return parent.base_model
    from training.export import merge_adapter

    merged = Path(settings.ARTIFACTS_DIR) / "merged" / f"variant-{parent.pk}"
    name = merged.relative_to(settings.ARTIFACTS_DIR).as_posix()
    if not (merged / "config.json").exists():
        try:
            artifact_fetch(name)
        except ArtifactUnavailable:
            log.info("merging the parent's adapter into its base: %s", merged)
            merge_adapter(model_source(parent.base_model), model_source(parent.adapter_path), merged)
            artifact_publish(merged)
    return name


@contextmanager
def job_log(path: Path, job_id: int) -> Iterator[logging.Logger]:
    """A logger for the length of the block that appends to the job's log file (the whole log, on the worker's
    machine) and to the newest lines on the job's row (the job page shows them, from any machine)."""
    logger_ = logging.getLogger(f"prefloop.job.{path.parent.name}")
    handlers = [logging.FileHandler(path, encoding="utf-8"), _LogTail(job_id)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger_.addHandler(handler)
    logger_.setLevel(logging.INFO)
    try:
        yield logger_
    finally:
        for handler in handlers:
            logger_.removeHandler(handler)
            handler.close()


class _LogTail(logging.Handler):
    """Each record added to the job row's ``log_tail``, of which the last LOG_TAIL_CHARS characters are kept, in
    one UPDATE by the run that holds the job (a run that lost it writes nothing there)."""

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id

    def emit(self, record: logging.LogRecord) -> None:
        try:
            added = Concat(F("log_tail"), Value(self.format(record) + "\n"), output_field=TextField())
            job_progress(model=TrainingJob, job_id=self.job_id, log_tail=Right(added, LOG_TAIL_CHARS))
        except Exception:  # a log line never fails the job: logging's own report on stderr
            self.handleError(record)


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
