"""Thin tasks: each takes a job's id and calls one service; failures go through `JobTask.on_failure`.

Services import these tasks at module level (with a `_task` suffix) and queue them on commit; a task imports its
service inside its body, so the Celery app loads without the web app's modules.

The one failure policy: a job task is never retried by Celery on an exception. Its job is marked failed with the
exception as the reason (`JobTask.on_failure`, over a fresh database connection), and an admin may resume what can
be resumed. A worker that dies mid-task is another matter: the message is delivered again (late ack, reject on
worker lost, the broker's visibility timeout) or the reaper (`reap_jobs`) sends the job again, and
`evaluator.services.jobs.job_start` decides whether the new delivery may take the job over. A delivery that finds
the job held by a live process is not dropped: it sends itself again after PREFLOOP_JOB_HELD_COUNTDOWN seconds, so
that the job is still taken over should its holder be lost later. While a task runs, a thread beats its heartbeat.
The one planned wait, a job whose inputs are still being prepared, raises JobNotReady and is retried after
`NOT_READY_COUNTDOWN` seconds, `max_retries` times.
"""

import logging
from typing import Any

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.conf import settings

from workers.celery import app

logger = logging.getLogger(__name__)

NOT_READY_COUNTDOWN = 5


# DjangoTask gives every job task `delay_on_commit`, which the services queue with.
class JobTask(DjangoTask):
    """A task that runs one job, named by `job_model` ("evaluator.GenerationJob") and its id, the first argument."""

    acks_late = True
    reject_on_worker_lost = True
    job_model = ""

    def job_id(self, args: Any, kwargs: Any) -> int | None:
        """The job's id: the task's one argument, however it was passed."""
        value = args[0] if args else next(iter((kwargs or {}).values()), None)
        return None if value is None else int(value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from evaluator.services.jobs import JobHeld, JobLost, job_heartbeat, job_model

        job_id = self.job_id(args, kwargs)
        if job_id is None:
            return super().__call__(*args, **kwargs)
        try:
            with job_heartbeat(model=job_model(self.job_model), job_id=job_id):
                return super().__call__(*args, **kwargs)
        except JobHeld as held:
            self.stand_by(job_id, held)
        except JobLost as lost:
            logger.warning("%s: it stops here", lost)
        return None

    def stand_by(self, job_id: int, held: BaseException) -> None:
        """Another live process runs the job: send this task again to look after PREFLOOP_JOB_HELD_COUNTDOWN seconds
        (the one copy that waits per job), so that it takes the job over should that process be lost."""
        from evaluator.services.jobs import BROKER_ERRORS, job_model, job_standby

        countdown = settings.PREFLOOP_JOB_HELD_COUNTDOWN
        if not job_standby(model=job_model(self.job_model), job_id=job_id, countdown=countdown):
            logger.info("%s; another copy of its task is already waiting", held)
            return
        request = self.request
        # As Celery's retry builds it (same queue and task id) without counting a retry: waiting is no failure.
        args, kwargs = tuple(request.args or ()), dict(request.kwargs or {})
        again = self.signature_from_request(request, args, kwargs, countdown=countdown, retries=request.retries)
        try:
            again.apply_async()
        except BROKER_ERRORS as error:
            logger.error("%s; could not send this copy again (%s): the reaper watches the job", held, error)
            return
        logger.info("%s; this copy looks again in %s s", held, countdown)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        from evaluator.services.jobs import error_text, job_fail, job_model

        job_id = self.job_id(args, kwargs)
        logger.error("%s %s failed: %s", self.job_model, job_id, exc, exc_info=einfo.exc_info if einfo else None)
        if job_id is not None:
            # The failure may have been the database connection itself: record it over a fresh one.
            job_fail(model=job_model(self.job_model), job_id=job_id, error=error_text(exc), fresh_connection=True)


def job_tasks() -> dict[str, JobTask]:
    """Every job task by the job model it runs: what the reaper sends again."""
    return {task.job_model: task for task in app.tasks.values() if isinstance(task, JobTask) and task.job_model}


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
def reap_jobs() -> list[str]:
    """Recover lost jobs of every kind (run by celery beat every PREFLOOP_REAPER_SECONDS): queue again running jobs
    whose worker is gone, send queued jobs whose task never reached the broker or was lost there."""
    from evaluator.services.jobs import jobs_reap

    return jobs_reap(senders=dict(job_tasks()))


@shared_task(base=JobTask, job_model="evaluator.QASet")
def generate_qa_pairs(qa_set_id: int) -> None:
    """Have a model write question–answer pairs from each chunk of a collection (evaluator.services.qa_sets)."""
    from evaluator.services.qa_sets import qa_set_run

    qa_set_run(qa_set_id=qa_set_id)


@shared_task(base=JobTask, job_model="evaluator.JudgeJob")
def judge_campaign(job_id: int) -> None:
    """Judge a campaign's pairs in both orders with a judge (evaluator.services.judges)."""
    from evaluator.services.judges import judge_job_run

    judge_job_run(job_id=job_id)
