"""Thin tasks: each takes a job's id and calls one service; failures go through `JobTask.on_failure`.

Services import these tasks at module level (with a `_task` suffix) and queue them on commit; a task imports its
service inside its body, so the Celery app loads without the web app's modules.

The one failure policy: a job task is never retried by Celery on an exception. Its job is marked failed with the
exception as the reason (`JobTask.on_failure`), and an admin may resume what can be resumed. A worker that dies
mid-task is another matter: the message is delivered again (late ack, reject on worker lost) and the job's
service decides whether the new delivery may take the job over. The one planned wait, a job whose inputs are
still being prepared, raises JobNotReady and is retried after `NOT_READY_COUNTDOWN` seconds, `max_retries` times.
"""

import logging
from typing import Any

from celery import shared_task
from celery.contrib.django.task import DjangoTask

logger = logging.getLogger(__name__)

NOT_READY_COUNTDOWN = 5


# DjangoTask gives every job task `delay_on_commit`, which the services queue with.
class JobTask(DjangoTask):
    """A task that runs one job, named by `job_model` ("evaluator.GenerationJob") and its id, the first argument."""

    acks_late = True
    reject_on_worker_lost = True
    job_model = ""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        from evaluator.services.jobs import error_text, job_fail, job_model

        job_id = kwargs.get("job_id", args[0] if args else None)
        logger.error("%s %s failed: %s", self.job_model, job_id, exc, exc_info=einfo.exc_info if einfo else None)
        if job_id is not None:
            job_fail(model=job_model(self.job_model), job_id=int(job_id), error=error_text(exc))


@shared_task(bind=True, base=JobTask, job_model="evaluator.GenerationJob", max_retries=120)
def generate_candidates(self: JobTask, job_id: int) -> None:
    """Generate a generation job's missing answers and pair them (evaluator.services.generation)."""
    from evaluator.errors import JobNotReady
    from evaluator.services.generation import generation_job_run

    try:
        generation_job_run(job_id=job_id)
    except JobNotReady as waiting:
        raise self.retry(countdown=NOT_READY_COUNTDOWN, exc=waiting) from waiting


@shared_task(base=JobTask, job_model="evaluator.TrainingJob")
def run_training_job(job_id: int) -> None:
    """Train and register a retrain job's adapter (evaluator.services.training_jobs)."""
    from evaluator.services.training_jobs import training_job_run

    training_job_run(job_id=job_id)


@shared_task(base=JobTask, job_model="evaluator.DocumentCollection")
def index_collection(collection_id: int) -> None:
    """Chunk, embed and index a document collection (evaluator.services.collections)."""
    from evaluator.services.collections import collection_index_run

    collection_index_run(collection_id=collection_id)


@shared_task(base=JobTask, job_model="evaluator.ModelExport")
def export_model(export_id: int) -> None:
    """Merge a variant's adapter into its base, and write GGUF if asked (evaluator.services.model_exports)."""
    from evaluator.services.model_exports import model_export_run

    model_export_run(export_id=export_id)


@shared_task(base=JobTask, job_model="evaluator.StatisticsSnapshot", soft_time_limit=30 * 60)
def build_statistics_snapshot(snapshot_id: int) -> None:
    """Compute and store a statistics snapshot (evaluator.services.snapshots)."""
    from evaluator.services.snapshots import statistics_snapshot_run

    statistics_snapshot_run(snapshot_id=snapshot_id)


@shared_task
def reap_training_jobs() -> list[int]:
    """Queue again the running training jobs whose worker is gone (run every minute by celery beat)."""
    from evaluator.services.training_jobs import training_jobs_reap

    return training_jobs_reap()


@shared_task(base=JobTask, job_model="evaluator.QASet")
def generate_qa_pairs(qa_set_id: int) -> None:
    """Have a model write question–answer pairs from each chunk of a collection (evaluator.services.qa_sets)."""
    from evaluator.services.qa_sets import qa_set_run

    qa_set_run(qa_set_id=qa_set_id)
