"""The workers an admin sees (/manage/workers/): who answers Celery's remote control now, what each runs, and which
running jobs are held by a process that no longer answers.

One broadcast of the `prefloop_worker` inspect command (workers/control.py) gathers every worker's host, pool
processes, queues, running tasks and GPUs; it waits ``timeout`` seconds for the replies, as `celery inspect` does.
The jobs come from PostgreSQL: every job kind's running rows, joined to the workers by their holder (``host:pid``,
evaluator.services.jobs.worker_identity). A worker that answered before and answers no more is remembered in the
shared cache for a day, so that one that died idle is still shown, as silent.
"""

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.apps import apps
from django.core.cache import cache
from django.db import models
from django.urls import reverse
from django.utils import timezone

from evaluator.models import Job, JobStatus
from evaluator.services.jobs import stale_after
from workers.celery import app as celery_app

logger = logging.getLogger(__name__)

# How long `celery inspect` waits for replies by default is 1 s; a page refreshed every few seconds keeps to it.
INSPECT_TIMEOUT = 1.0
# The cache key of the workers seen answering, and how long one that stopped answering stays listed as silent.
SEEN_KEY = "prefloop:workers:seen"
SEEN_FOR = timedelta(days=1)
START_COMMAND = "celery -A workers worker -Q gpu,default"


@dataclass(frozen=True)
class HeldJob:
    """A running job and the process that holds it."""

    kind: str
    pk: int
    title: str
    url: str
    holder: str
    heartbeat_at: datetime | None
    started_at: datetime | None
    attempts: int
    # No heartbeat for longer than PREFLOOP_JOB_STALE_SECONDS: the reaper hands it to another worker.
    stale: bool


@dataclass(frozen=True)
class GPU:
    index: str
    name: str
    memory_used_mib: int | None
    memory_total_mib: int | None

    @property
    def percent_used(self) -> int | None:
        if not self.memory_used_mib or not self.memory_total_mib:
            return None
        return round(100 * self.memory_used_mib / self.memory_total_mib)


@dataclass(frozen=True)
class RunningTask:
    task_id: str
    name: str
    worker_pid: int | None
    started_at: datetime | None
    job: HeldJob | None


@dataclass(frozen=True)
class Worker:
    """A Celery worker (its node name, as `celery -n` gives it) as it answered, or as it was last seen."""

    name: str
    host: str
    pid: int | None
    processes: list[int]
    queues: list[str]
    gpus: list[GPU]
    uptime_seconds: int | None
    tasks: list[RunningTask] = field(default_factory=list)
    # Running jobs whose holder is one of this worker's processes (a task may be between jobs, a job between tasks).
    jobs: list[HeldJob] = field(default_factory=list)
    answered: bool = True
    last_seen: datetime | None = None
    # Set when the worker answered without the `prefloop_worker` command (another version of the code).
    problem: str = ""

    @property
    def device(self) -> str:
        return ", ".join(gpu.name for gpu in self.gpus) if self.gpus else "CPU"

    @property
    def jobs_between_tasks(self) -> list[HeldJob]:
        """Held jobs that no running task shows (a job whose task ended without releasing it, or is just starting)."""
        shown = {(task.job.kind, task.job.pk) for task in self.tasks if task.job}
        return [job for job in self.jobs if (job.kind, job.pk) not in shown]

    @property
    def holders(self) -> set[str]:
        """Every job holder name this worker's processes write (evaluator.services.jobs.worker_identity)."""
        pids = [self.pid, *self.processes] if self.pid is not None else self.processes
        return {f"{self.host}:{pid}" for pid in pids}


@dataclass(frozen=True)
class WorkersOverview:
    asked_at: datetime
    timeout: float
    workers: list[Worker]
    # Workers that answered before (within SEEN_FOR) and did not answer this time.
    silent_workers: list[Worker]
    # Running jobs whose holder is no process of any worker that answered.
    orphaned_jobs: list[HeldJob]
    # Why nobody could be asked (the broker unreachable, a transport without broadcast), or "".
    error: str = ""
    start_command: str = START_COMMAND

    @property
    def stale_seconds(self) -> int:
        return int(stale_after().total_seconds())


def job_url(job: Job) -> str:
    """The page that shows ``job``: its own page where it has one, else the page that lists it."""
    label = job._meta.label
    if label == "evaluator.TrainingJob":
        return reverse("training_job_detail", args=[job.pk])
    if label in ("evaluator.GenerationJob",):
        return reverse("campaign_detail", args=[job.campaign_id])  # type: ignore[attr-defined]
    if label == "evaluator.StatisticsSnapshot":
        return reverse("stats_campaign", args=[job.campaign_id])  # type: ignore[attr-defined]
    if label == "evaluator.DocumentCollection":
        return reverse("collection_detail", args=[job.pk])
    if label == "evaluator.QASet":
        return reverse("qa_set_detail", args=[job.pk])
    if label == "evaluator.ModelExport":
        return reverse("variant_tree")
    if label == "evaluator.DemoPreparation":
        return reverse("demo_preparation")
    return reverse("manage")


def job_models() -> list[type[Job]]:
    """Every concrete job kind."""
    return [model for model in apps.get_app_config("evaluator").get_models() if issubclass(model, Job)]


def running_jobs(*, now: datetime) -> list[HeldJob]:
    """Every running job of every kind with its holder: one query per job kind."""
    held: list[HeldJob] = []
    for model in job_models():
        # Metrics, configs and logs can be large and say nothing of the holder.
        bulky = [f.name for f in model._meta.concrete_fields if isinstance(f, models.JSONField | models.TextField)]
        rows = model._default_manager.filter(status=JobStatus.RUNNING).defer(*bulky).order_by("started_at", "pk")
        held.extend(_held_job(job, now=now) for job in rows)
    return held


def _held_job(job: Job, *, now: datetime) -> HeldJob:
    return HeldJob(
        kind=str(job._meta.verbose_name),
        pk=job.pk,
        title=str(job),
        url=job_url(job),
        holder=job.worker,
        heartbeat_at=job.heartbeat_at,
        started_at=job.started_at,
        attempts=job.attempts,
        stale=job.heartbeat_at is None or now - job.heartbeat_at > stale_after(),
    )


def workers_ask(*, timeout: float = INSPECT_TIMEOUT) -> dict[str, dict[str, Any]]:
    """Each answering worker's `prefloop_worker` reply by node name, after waiting ``timeout`` seconds.

    Raises what the broker connection raises.
    """
    with celery_app.connection_for_write(connect_timeout=timeout) as connection:
        # One try: a broker that is down is said so at once, not after the connection's retries.
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=math.ceil(timeout))
        replies = celery_app.control.broadcast("prefloop_worker", reply=True, timeout=timeout, connection=connection)
    answers: dict[str, dict[str, Any]] = {}
    for reply in replies or []:
        answers.update(reply)
    return answers


def workers_overview(*, timeout: float = INSPECT_TIMEOUT, now: datetime | None = None) -> WorkersOverview:
    """The workers that answer within ``timeout`` seconds with what each runs, the ones seen before that no longer
    answer, and the running jobs no answering worker holds."""
    asked_at = now or timezone.now()
    error = ""
    try:
        answers = workers_ask(timeout=timeout)
    except Exception as failure:  # any broker failure: the page says the workers could not be asked, and why
        logger.warning("the workers could not be asked", exc_info=True)
        answers, error = {}, f"{type(failure).__name__}: {failure}"
    jobs = running_jobs(now=asked_at)
    by_holder = {job.holder: job for job in jobs}
    workers = [worker_from_reply(name, answer, by_holder) for name, answer in sorted(answers.items())]
    claimed = {holder for worker in workers for holder in worker.holders}
    orphaned = [job for job in jobs if job.holder not in claimed]
    silent = _silent_workers(workers, asked_at=asked_at, remember=not error)
    return WorkersOverview(asked_at, timeout, workers, silent, orphaned, error)


def worker_from_reply(name: str, answer: dict[str, Any], by_holder: dict[str, HeldJob]) -> Worker:
    """A worker as its `prefloop_worker` reply describes it, with the running jobs (by holder) its processes hold."""
    if "host" not in answer:
        problem = str(answer.get("error") or answer)
        return Worker(name, name.partition("@")[2], None, [], [], [], None, problem=problem)
    worker = Worker(
        name=name,
        host=str(answer["host"]),
        pid=answer.get("pid"),
        processes=[int(pid) for pid in answer.get("processes") or []],
        queues=list(answer.get("queues") or []),
        gpus=[GPU(**gpu) for gpu in answer.get("gpus") or []],
        uptime_seconds=answer.get("uptime"),
    )
    worker.jobs.extend(job for holder, job in by_holder.items() if holder in worker.holders)
    for task in answer.get("running") or []:
        holder = f"{worker.host}:{task.get('worker_pid')}"
        job = by_holder.get(holder)
        started = task.get("time_start")
        worker.tasks.append(
            RunningTask(
                task_id=str(task.get("id")),
                name=str(task.get("name")),
                worker_pid=task.get("worker_pid"),
                started_at=datetime.fromtimestamp(started, tz=UTC) if started else None,
                job=job,
            )
        )
    return worker


def _silent_workers(workers: list[Worker], *, asked_at: datetime, remember: bool) -> list[Worker]:
    """The workers seen within SEEN_FOR that did not answer now; records the ones that did (unless nobody could be
    asked at all, which says nothing of the workers)."""
    seen: dict[str, dict[str, Any]] = cache.get(SEEN_KEY) or {}
    answering = {worker.name for worker in workers}
    silent = [
        Worker(
            name=name,
            host=str(entry.get("host", "")),
            pid=entry.get("pid"),
            processes=[],
            queues=list(entry.get("queues", [])),
            gpus=[GPU(**gpu) for gpu in entry.get("gpus", [])],
            uptime_seconds=None,
            answered=False,
            last_seen=entry["seen"],
        )
        for name, entry in sorted(seen.items())
        if name not in answering and asked_at - entry["seen"] < SEEN_FOR
    ]
    if remember:
        kept = {worker.name: seen[worker.name] for worker in silent}
        for worker in workers:
            gpus = [gpu.__dict__ for gpu in worker.gpus]
            kept[worker.name] = {"host": worker.host, "pid": worker.pid, "queues": worker.queues, "gpus": gpus}
            kept[worker.name]["seen"] = asked_at
        cache.set(SEEN_KEY, kept, timeout=int(SEEN_FOR.total_seconds()))
    return silent
