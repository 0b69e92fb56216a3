"""One lifecycle for every job kind (generation, training, collection index, model export, statistics snapshot,
Q&A set), and one recovery design for all of them.

A job's status moves only through these transitions, each a conditional ``UPDATE … WHERE status …`` whose row count
says whether this process made the move: two deliveries of one task, a cancel racing a finish, or a reaper racing a
heartbeat can never both win. The job kinds add their own work around them (evaluator/services/<kind>.py); the
rules of who may start a job live here once.

Recovery, the same for every kind:

- **A holder.** ``job_start`` hands a job to one run: it records the process (``host:pid``) and a fresh *claim*, and
  every later write of that run (progress, heartbeat, finish, failure) is conditional on the claim. A run that lost
  the job (the reaper gave it to another) can no longer move or overwrite it.
- **A heartbeat.** Progress writes refresh ``heartbeat_at``, and the worker beats every
  ``PREFLOOP_JOB_HEARTBEAT_SECONDS`` while a task runs (``job_heartbeat``), long steps included.
- **A copy that finds a live holder is not dropped.** ``job_start`` raises ``JobHeld``; the task sends itself again
  with a countdown (``job_standby`` keeps one such copy per job), so that when the holder is lost later a copy is
  still there to take the job over. A copy that finds the holder dead takes over, as a new attempt.
- **An outbox.** ``sent_at`` says when the job's task last reached the broker: null while the broker could not be
  reached (``job_send`` logs that and leaves the job queued). The reaper (``jobs_reap``, run by celery beat) sends
  queued jobs that were never sent or whose message was lost, and queues again running jobs whose holder is gone.
- **A dropped database connection** costs a write a reconnect (``db_retrying``), and recording a failure starts
  from a fresh connection.
"""

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from django.apps import apps
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import RedisError

from evaluator.models import FINISHED_STATUSES, Job, JobStatus

if TYPE_CHECKING:
    from celery import Task

    # What sends a job's task: a Celery task taking the job's id (workers.tasks).
    JobSender = Task[Any, Any]

logger = logging.getLogger(__name__)

# A stored error is shown whole on the job's page; past this it is cut with a note saying so.
ERROR_LIMIT = 20_000
# Starts a job gets, redeliveries and take-overs included; a resume or a re-queue from the page adds as many again.
DEFAULT_MAX_ATTEMPTS = 3
# Writes tried this many times over a dropped database connection, with this pause (seconds) before each retry.
DB_ATTEMPTS = 4
DB_RETRY_PAUSE = 0.5
# What a publish raises with the broker unreachable (kombu wraps most; a raw socket error can slip through).
BROKER_ERRORS: tuple[type[BaseException], ...] = (BrokerOperationalError, RedisError, ConnectionError, OSError)

T = TypeVar("T")

# ``Job`` is abstract and declares no manager: each kind's ``objects`` is reached as ``_default_manager``.

# The claims this process holds: (job model label, id) → claim. Writes of a run are conditional on its claim.
_claims: dict[tuple[str, int], uuid.UUID] = {}
_claims_lock = threading.Lock()


class JobHeld(Exception):
    """A live process holds the job: this delivery must stay around (sent again later), not run it."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"{job._meta.label} {job.pk} is held by {job.worker or 'an unknown worker'}")


class JobLost(Exception):
    """This run no longer holds its job (the reaper handed it to another run): it stops, leaving the job as it is."""

    def __init__(self, model: type[Job], job_id: int) -> None:
        super().__init__(f"{model._meta.label} {job_id} is no longer held by this run ({worker_identity()})")


def job_model(label: str) -> type[Job]:
    """The job model named by ``label`` ("evaluator.GenerationJob"), as a task names it: tasks take ids, not rows."""
    model = apps.get_model(label)
    if not issubclass(model, Job):
        raise TypeError(f"{label} is not a job model")
    return model


def worker_identity() -> str:
    """This process as a job holder: the host name and the process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_alive(holder: str, heartbeat_at: datetime | None, *, now: datetime) -> bool:
    """Whether the process named by ``holder`` may still be running its job.

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
    return heartbeat_at is not None and now - heartbeat_at < stale_after()


def stale_after() -> timedelta:
    """How old a heartbeat may be before its holder counts as lost."""
    return timedelta(seconds=settings.PREFLOOP_JOB_STALE_SECONDS)


def db_retrying(write: Callable[[], T], *, what: str = "a job write") -> T:
    """Run ``write`` (a query or a whole transaction), again over a fresh connection when the database connection
    was dropped (a restarted server, a killed backend), up to DB_ATTEMPTS times.

    Inside a caller's transaction nothing is retried: the transaction is lost with its connection, so the error
    goes to the caller, who retries the whole of it.
    """
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            return write()
        except (OperationalError, InterfaceError) as error:
            if connection.in_atomic_block or attempt == DB_ATTEMPTS:
                raise
            logger.warning("%s lost its database connection (%s); reconnecting, try %d", what, error, attempt + 1)
            _reconnect()
            time.sleep(DB_RETRY_PAUSE * attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def _reconnect() -> None:
    # Never inside a caller's transaction (a test's, or one the error already broke): that is the caller's to end.
    if connection.in_atomic_block:
        return
    # close_old_connections drops a connection it finds unusable; close() drops one it would keep (no errors seen).
    close_old_connections()
    connection.close()


def _key(model: type[Job], job_id: int) -> tuple[str, int]:
    return (model._meta.label, int(job_id))


def job_claim(*, model: type[Job], job_id: int) -> uuid.UUID | None:
    """The claim this process holds on the job; None when it holds none."""
    with _claims_lock:
        return _claims.get(_key(model, job_id))


def _release(model: type[Job], job_id: int) -> None:
    with _claims_lock:
        _claims.pop(_key(model, job_id), None)


def _held(model: type[Job], job_id: int) -> "QuerySet[Job]":
    """The job as this process may write it: running, and under this process's claim when it holds one. A write
    from a process that never started the job (a page, a command) is conditional on the status alone."""
    rows = model._default_manager.filter(pk=job_id, status=JobStatus.RUNNING)
    claim = job_claim(model=model, job_id=job_id)
    return rows.filter(claim=claim) if claim is not None else rows


def job_start(
    *, model: type[Job], job_id: int, redelivered_ok: bool = True, now: datetime | None = None, **fields: Any
) -> bool:
    """Hand the job to this process; True when this call took it, False when it has ended (or is gone).

    A queued job is taken. A running one is taken over when its holder is lost (a worker killed mid-run; each
    start counts as an attempt, and a job out of attempts fails instead of starting); while its holder lives this
    raises JobHeld, so that the task keeps a copy waiting. With ``redelivered_ok`` False only a queued job starts.
    ``fields`` are set on the job as it starts.
    """
    now = now or timezone.now()
    with transaction.atomic():
        job = (
            model._default_manager.select_for_update()
            .only("status", "worker", "claim", "heartbeat_at", "attempts", "max_attempts", "started_at")
            .filter(pk=job_id)
            .first()
        )
        if job is None or job.status in FINISHED_STATUSES:
            return False
        if job.status == JobStatus.RUNNING:
            if not redelivered_ok:
                return False
            if holder_alive(job.worker, job.heartbeat_at, now=now):
                raise JobHeld(job)
        if job.attempts >= job.max_attempts:
            error = f"Gave up after {job.attempts} attempts: the worker was lost each time."
            model._default_manager.filter(pk=job_id).update(
                status=JobStatus.FAILED, error=error, finished_at=now, claim=None
            )
            return False
        claim = uuid.uuid4()
        # Conditional on the row we judged (it is locked, so this holds; the count says so).
        taken = model._default_manager.filter(
            pk=job_id, status=job.status, claim=job.claim, attempts=job.attempts
        ).update(
            status=JobStatus.RUNNING,
            claim=claim,
            worker=worker_identity(),
            attempts=job.attempts + 1,
            started_at=job.started_at or now,
            heartbeat_at=now,
            **fields,
        )
    if taken != 1:
        return False
    with _claims_lock:
        _claims[_key(model, job_id)] = claim
    return True


def job_progress(*, model: type[Job], job_id: int, **fields: Any) -> bool:
    """Record progress on a running job, and the holder's heartbeat; False when this run no longer holds it (it
    was cancelled, failed, or handed to another run meanwhile)."""
    if job_claim(model=model, job_id=job_id) is not None:
        fields.setdefault("heartbeat_at", timezone.now())
    return db_retrying(lambda: _held(model, job_id).update(**fields) == 1, what="progress")


def job_beat(*, model: type[Job], job_id: int) -> bool:
    """Refresh the heartbeat of a job this process holds; False when it holds it no longer."""
    claim = job_claim(model=model, job_id=job_id)
    if claim is None:
        return False
    rows = model._default_manager.filter(pk=job_id, status=JobStatus.RUNNING, claim=claim)
    return db_retrying(lambda: rows.update(heartbeat_at=timezone.now()) == 1, what="a heartbeat")


def job_finish(*, model: type[Job], job_id: int, **fields: Any) -> bool:
    """Mark a running job succeeded with its results in ``fields``; False when this run no longer held it."""
    finished = db_retrying(
        lambda: _held(model, job_id).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now(), **fields) == 1,
        what="a finish",
    )
    _release(model, job_id)
    return finished


def job_fail(*, model: type[Job], job_id: int, error: str, fresh_connection: bool = False) -> bool:
    """Mark the job failed with the reason; False when it had already ended (a finish or cancel won) or is not
    this run's to fail.

    A run fails the job it holds. A process that holds no claim on it (a task that failed before it could start
    the job) fails it only while it is still queued: a job another run holds is that run's to end.
    ``fresh_connection`` first drops this thread's connection, which the failure may have broken.
    """
    if fresh_connection:
        _reconnect()
    claim = job_claim(model=model, job_id=job_id)
    rows = model._default_manager.filter(pk=job_id).exclude(status__in=FINISHED_STATUSES)
    rows = rows.filter(claim=claim) if claim is not None else rows.filter(status=JobStatus.QUEUED)
    failed = db_retrying(
        lambda: rows.update(status=JobStatus.FAILED, error=error_text(error), finished_at=timezone.now()) == 1,
        what="recording a failure",
    )
    _release(model, job_id)
    return failed


def job_cancel(*, model: type[Job], job_id: int, **fields: Any) -> bool:
    """Cancel a job that has not started; False when it is running or has ended."""
    updated = model._default_manager.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, finished_at=timezone.now(), **fields
    )
    return updated == 1


def job_stop(*, model: type[Job], job_id: int) -> bool:
    """End a running job that stopped on a cancel request; False when this run no longer held it."""
    stopped = db_retrying(
        lambda: _held(model, job_id).update(status=JobStatus.CANCELLED, finished_at=timezone.now()) == 1,
        what="a stop",
    )
    _release(model, job_id)
    return stopped


def job_resume(*, model: type[Job], job_id: int, now: datetime | None = None, **fields: Any) -> bool:
    """Queue again a failed or cancelled job, its error cleared, or send again one stuck in the queue (its task
    never reached the broker, or did longer ago than PREFLOOP_JOB_STALE_SECONDS); False in any other state.

    The caller sends the task (``job_send_on_commit``).
    """
    now = now or timezone.now()
    stuck = Q(status=JobStatus.QUEUED, queued_at__isnull=False) & (
        Q(sent_at__isnull=True) | Q(sent_at__lt=now - stale_after())
    )
    updated = (
        model._default_manager.filter(pk=job_id)
        .filter(Q(status__in=[JobStatus.FAILED, JobStatus.CANCELLED]) | stuck)
        .update(status=JobStatus.QUEUED, finished_at=None, error="", claim=None, queued_at=now, sent_at=None, **fields)
    )
    return updated == 1


def job_queue_again(*, model: type[Job], job_id: int) -> bool:
    """Queue a job of any state again with fresh attempts (its inputs changed: a collection got new documents).
    A run that holds it can no longer write it; the caller sends the task (``job_send_on_commit``)."""
    updated = model._default_manager.filter(pk=job_id).update(
        status=JobStatus.QUEUED,
        finished_at=None,
        error="",
        claim=None,
        queued_at=timezone.now(),
        sent_at=None,
        max_attempts=F("attempts") + DEFAULT_MAX_ATTEMPTS,
    )
    return updated == 1


def job_requeue(*, model: type[Job], job_id: int, condition: Q | None = None, **fields: Any) -> bool:
    """Put a running job back in the queue (its worker is gone), under ``condition`` when one is given; the caller
    sends the task."""
    jobs = model._default_manager.filter(pk=job_id, status=JobStatus.RUNNING)
    if condition is not None:
        jobs = jobs.filter(condition)
    return jobs.update(status=JobStatus.QUEUED, claim=None, queued_at=timezone.now(), sent_at=None, **fields) == 1


# Sending: the outbox ----------------------------------------------------------------------------------------------


def job_send(*, task: "JobSender", model: type[Job], job_id: int) -> bool:
    """Hand the job's task to the broker and record when; False (logged) when the broker cannot be reached.

    The job stays queued with ``sent_at`` unset, and the reaper sends it once the broker is back.
    """
    try:
        task.apply_async((job_id,))
    except BROKER_ERRORS as error:
        logger.error(
            "%s %s is queued but its task could not be sent (the broker is unreachable: %s); "
            "the reaper sends it once the broker is back",
            model._meta.label,
            job_id,
            error,
        )
        return False
    db_retrying(lambda: model._default_manager.filter(pk=job_id).update(sent_at=timezone.now()), what="a send")
    return True


def job_send_on_commit(*, task: "JobSender", job: Job) -> None:
    """Send the job's task once the current transaction commits (a publish error never undoes the job, nor turns
    the request into a server error); ``job.send_failed`` says afterwards that the broker could not be reached."""

    def send() -> None:
        if job_send(task=task, model=type(job), job_id=job.pk):
            job.sent_at = timezone.now()
        else:
            job.send_failed = True

    transaction.on_commit(send)


def job_standby(*, model: type[Job], job_id: int, countdown: float, now: datetime | None = None) -> bool:
    """Whether this copy of a held job's task should wait ``countdown`` seconds and look again (True), or leave it
    to another copy already waiting (False); True also records when this copy is due.

    ``sent_at`` then holds when the waiting copy is due: a copy that finds it more than a third of a countdown
    ahead leaves, so that one copy per job waits however many were delivered.
    """
    now = now or timezone.now()
    margin = timedelta(seconds=countdown / 3)
    due = now + timedelta(seconds=countdown)
    rows = model._default_manager.filter(pk=job_id, status=JobStatus.RUNNING).filter(
        Q(sent_at__isnull=True) | Q(sent_at__lte=now + margin)
    )
    return db_retrying(lambda: rows.update(sent_at=due) == 1, what="a standby")


# The heartbeat -----------------------------------------------------------------------------------------------------


@contextmanager
def job_heartbeat(*, model: type[Job], job_id: int, every: float | None = None) -> Iterator[None]:
    """Beat for the job while the block runs, from a thread of its own, whenever this process holds the job: long
    steps (loading a model, building an index, a merge) leave it looking alive as long as the process is."""
    interval = float(every if every is not None else settings.PREFLOOP_JOB_HEARTBEAT_SECONDS)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                job_beat(model=model, job_id=job_id)
            except Exception:  # a beat that fails is logged; the next one tries again
                logger.exception("%s %s: heartbeat failed", model._meta.label, job_id)
            finally:
                # Its own connection, never kept between beats: nothing is left open when the thread ends.
                connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{model._meta.model_name}-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 5)


# The reaper ---------------------------------------------------------------------------------------------------------


def jobs_reap(*, senders: dict[str, "JobSender"], now: datetime | None = None) -> list[str]:
    """Recover lost jobs of every kind in ``senders`` (job model label → its task); returns what it did, one line
    per job.

    A running job whose heartbeat is stale and whose holder is gone is queued again and sent (its next start is a
    new attempt). A queued job is sent when its task never reached the broker, or reached it longer ago than
    PREFLOOP_JOB_RESEND_SECONDS (the message was lost: a broker restarted without persistence).
    """
    now = now or timezone.now()
    resend_after = timedelta(seconds=settings.PREFLOOP_JOB_RESEND_SECONDS)
    # An unsent job younger than this is left to the send that follows its commit.
    unsent_grace = min(timedelta(seconds=10), resend_after)
    done: list[str] = []
    for label, task in senders.items():
        model = job_model(label)
        manager = model._default_manager
        stale = Q(heartbeat_at__lt=now - stale_after()) | Q(heartbeat_at__isnull=True)
        for job in manager.filter(stale, status=JobStatus.RUNNING).only("pk", "worker", "claim", "heartbeat_at"):
            if holder_alive(job.worker, job.heartbeat_at, now=now):
                continue
            # Conditional on the claim and heartbeat we judged: a job that beat or changed hands meanwhile is left.
            condition = Q(claim=job.claim, heartbeat_at=job.heartbeat_at)
            if job_requeue(model=model, job_id=job.pk, condition=condition):
                job_send(task=task, model=model, job_id=job.pk)
                done.append(f"{label} {job.pk}: holder {job.worker or '?'} lost, queued again")
        lost = Q(sent_at__isnull=True, queued_at__lt=now - unsent_grace) | Q(sent_at__lt=now - resend_after)
        for pk in manager.filter(lost, status=JobStatus.QUEUED).values_list("pk", flat=True):
            if job_send(task=task, model=model, job_id=pk):
                done.append(f"{label} {pk}: sent again")
    for line in done:
        logger.warning("reaper: %s", line)
    return done


def error_text(error: BaseException | str) -> str:
    """A failure as stored: the exception's type and message (never empty), cut at ERROR_LIMIT with a note."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}".rstrip(": ")
    text = text.strip() or "the job failed without a message"
    if len(text) > ERROR_LIMIT:
        text = text[:ERROR_LIMIT] + f"… ({len(text) - ERROR_LIMIT} more characters in the worker's log)"
    return text
