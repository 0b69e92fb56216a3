"""One lifecycle for every job kind (generation, training, collection index, model export, statistics snapshot,
Q&A set).

A job's status moves only through these transitions, each a conditional ``UPDATE … WHERE status …`` whose row count
says whether this process made the move: two deliveries of one task, a cancel racing a finish, or a reaper racing a
heartbeat can never both win. The job kinds add their own work around them (evaluator/services/<kind>.py); the
rules of who may start a job live here once.
"""

from typing import Any

from django.apps import apps
from django.db.models import Q
from django.utils import timezone

from evaluator.models import FINISHED_STATUSES, Job, JobStatus

# A stored error is shown whole on the job's page; past this it is cut with a note saying so.
ERROR_LIMIT = 20_000

# ``Job`` is abstract and declares no manager: each kind's ``objects`` is reached as ``_default_manager``.


def job_model(label: str) -> type[Job]:
    """The job model named by ``label`` ("evaluator.GenerationJob"), as a task names it: tasks take ids, not rows."""
    model = apps.get_model(label)
    if not issubclass(model, Job):
        raise TypeError(f"{label} is not a job model")
    return model


def job_start(*, model: type[Job], job_id: int, redelivered_ok: bool = True) -> bool:
    """Move a queued job to running; True when this call did.

    With ``redelivered_ok`` a job already running is taken again too (a task redelivered after its worker died
    goes on where the last one stopped); the job kinds whose work cannot be shared say so with False.
    """
    startable = [JobStatus.QUEUED, JobStatus.RUNNING] if redelivered_ok else [JobStatus.QUEUED]
    now = timezone.now()
    updated = model._default_manager.filter(pk=job_id, status__in=startable).update(status=JobStatus.RUNNING)
    if updated:
        model._default_manager.filter(pk=job_id, started_at__isnull=True).update(started_at=now)
    return updated == 1


def job_progress(*, model: type[Job], job_id: int, **fields: Any) -> bool:
    """Record progress on a running job; False when it has ended meanwhile (cancelled, failed by the reaper)."""
    return model._default_manager.filter(pk=job_id, status=JobStatus.RUNNING).update(**fields) == 1


def job_finish(*, model: type[Job], job_id: int, **fields: Any) -> bool:
    """Mark a running job succeeded with its results in ``fields``; False when it was no longer running."""
    updated = model._default_manager.filter(pk=job_id, status=JobStatus.RUNNING).update(
        status=JobStatus.SUCCEEDED, finished_at=timezone.now(), **fields
    )
    return updated == 1


def job_fail(*, model: type[Job], job_id: int, error: str) -> bool:
    """Mark an unfinished job failed with the reason; False when it had already ended (a finish or cancel won)."""
    updated = (
        model._default_manager.filter(pk=job_id)
        .exclude(status__in=FINISHED_STATUSES)
        .update(status=JobStatus.FAILED, error=error_text(error), finished_at=timezone.now())
    )
    return updated == 1


def job_cancel(*, model: type[Job], job_id: int, **fields: Any) -> bool:
    """Cancel a job that has not started; False when it is running or has ended."""
    updated = model._default_manager.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, finished_at=timezone.now(), **fields
    )
    return updated == 1


def job_stop(*, model: type[Job], job_id: int) -> bool:
    """End a running job that stopped on a cancel request; False when it was no longer running."""
    updated = model._default_manager.filter(pk=job_id, status=JobStatus.RUNNING).update(
        status=JobStatus.CANCELLED, finished_at=timezone.now()
    )
    return updated == 1


def job_resume(*, model: type[Job], job_id: int, **fields: Any) -> bool:
    """Queue a failed or cancelled job again, its error cleared; False when it is in any other state."""
    updated = model._default_manager.filter(pk=job_id, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).update(
        status=JobStatus.QUEUED, finished_at=None, error="", **fields
    )
    return updated == 1


def job_requeue(*, model: type[Job], job_id: int, condition: Q | None = None, **fields: Any) -> bool:
    """Put a running job back in the queue (its worker is gone), under ``condition`` when one is given."""
    jobs = model._default_manager.filter(pk=job_id, status=JobStatus.RUNNING)
    if condition is not None:
        jobs = jobs.filter(condition)
    return jobs.update(status=JobStatus.QUEUED, **fields) == 1


def error_text(error: BaseException | str) -> str:
    """A failure as stored: the exception's type and message (never empty), cut at ERROR_LIMIT with a note."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}".rstrip(": ")
    text = text.strip() or "the job failed without a message"
    if len(text) > ERROR_LIMIT:
        text = text[:ERROR_LIMIT] + f"… ({len(text) - ERROR_LIMIT} more characters in the worker's log)"
    return text
