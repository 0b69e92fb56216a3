"""Judges: define one, and judge a campaign's pairs with it as a job (training/judging.py asks the model).

Every pair is judged in both orders (candidate a shown first, then b first) on each criterion the job names. The two
verdicts of a (pair, criterion) are stored together, in one transaction with the job's progress, so a pair is never
half judged; a reply that names no side is stored as unparseable, never guessed. A backend that fails (down, too
slow after its retries, an HTTP error, a reply that is no chat completion) fails the job with the reason, keeping
the pairs already judged; resuming judges only the pairs still missing.

Verdicts live in their own table (JudgeVerdict): no human statistic, page for annotators or DPO dataset reads them
unless asked to (evaluator/selectors/dpo_dataset.py, SelectionRules.judge_id).
"""

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count

from evaluator.artifacts import model_source
from evaluator.errors import ServiceError
from evaluator.models import OVERALL, Campaign, Comparison, JobStatus, Judge, JudgeJob, JudgeVerdict
from evaluator.services.jobs import (
    JobLost,
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
from evaluator.services.judge_selection import judge_outcomes_stored
from training.judging import (
    GENERIC,
    JudgeRequest,
    api_key_from_environment,
    default_template,
    judge_prompt,
    template_problems,
    verdict_parse,
)
from workers.tasks import judge_campaign as judge_campaign_task

logger = logging.getLogger(__name__)

# Pairs judged per round trip to the backend (×2 orders × criteria requests): a stored chunk is what a lost or
# cancelled run loses at most.
JUDGE_CHUNK = 16
# What the overall criterion is defined as in a template's {definition}.
OVERALL_DEFINITION = "Which answer is better overall, for the person who asked?"
ORDERS = ("ab", "ba")
# An endpoint's first retry waits this long (seconds), each later one twice the one before.
JUDGE_BACKOFF_SECONDS = 1.0


def judge_template(*, judge: Judge, criterion: str) -> str:
    """The judge's template for a criterion: its own, else its generic one, else the built-in one."""
    templates = judge.templates if isinstance(judge.templates, dict) else {}
    return templates.get(criterion) or templates.get(GENERIC) or default_template(criterion)


def judge_templates_problems(templates: Mapping[str, str]) -> list[str]:
    """What is wrong with a set of templates by criterion, each problem naming its criterion."""
    return [f"{slug}: {problem}" for slug, text in templates.items() for problem in template_problems(text)]


def judge_create(*, created_by: User | None = None, **fields: Any) -> Judge:
    """Store a judge (its fields as the form cleaned them); ServiceError naming what is wrong."""
    _check_judge_fields(fields)
    with transaction.atomic():
        return Judge.objects.create(created_by=created_by, **fields)


def judge_update(*, judge: Judge, **fields: Any) -> Judge:
    """Change a judge's settings or templates; its verdicts so far stay as they were asked."""
    _check_judge_fields({**_judge_fields(judge), **fields})
    for name, value in fields.items():
        setattr(judge, name, value)
    judge.save(update_fields=list(fields))
    return judge


def _judge_fields(judge: Judge) -> dict[str, Any]:
    names = ("kind", "base_model", "base_url", "model_name", "api_key_env", "templates")
    return {name: getattr(judge, name) for name in names}


def _check_judge_fields(fields: Mapping[str, Any]) -> None:
    kind = fields.get("kind")
    if kind == Judge.Kind.LOCAL and not fields.get("base_model"):
        raise ServiceError("A local judge needs a base model (a Hub id, a folder or a GGUF file).")
    if kind == Judge.Kind.ENDPOINT and not (fields.get("base_url") and fields.get("model_name")):
        raise ServiceError("An endpoint judge needs its base URL and model name.")
    problems = judge_templates_problems(fields.get("templates") or {})
    if problems:
        raise ServiceError(" ".join(problems))


def judge_job_queue(
    *, judge: Judge, campaign: Campaign, criteria: Sequence[str], created_by: User | None = None
) -> JudgeJob:
    """Queue a judge over every pair of a campaign on `criteria` (slugs of the campaign's rubric or "overall").

    Refused, saying why, when the campaign has no pairs, a criterion is not the campaign's, or an endpoint's key
    variable is unset here (a worker started from the same environment would miss it too)."""
    known = campaign.criterion_slugs
    unknown = [slug for slug in criteria if slug not in known]
    if not criteria:
        raise ServiceError("Choose at least one criterion to judge.")
    if unknown:
        raise ServiceError(f"“{unknown[0]}” is not a criterion of {campaign.name}.")
    pairs = Comparison.objects.filter(campaign=campaign).count()
    if not pairs:
        raise ServiceError(f"{campaign.name} has no pairs yet: generate answers first.")
    if judge.kind == Judge.Kind.ENDPOINT:
        api_key_from_environment_checked(judge)
    ordered = [slug for slug in known if slug in criteria]
    with transaction.atomic():
        job = JudgeJob.objects.create(
            judge=judge, campaign=campaign, criteria=ordered, total=pairs * len(ordered), created_by=created_by
        )
        job_send_on_commit(task=judge_campaign_task, job=job)
    return job


def api_key_from_environment_checked(judge: Judge) -> str:
    """The endpoint's key from the environment; ServiceError naming the variable (never the value) when unset."""
    from training.judging import JudgeConfigError

    try:
        return api_key_from_environment(judge.api_key_env)
    except JudgeConfigError as error:
        raise ServiceError(str(error)) from None


def judge_job_cancel(*, job: JudgeJob) -> bool:
    """Cancel a queued job at once, or ask a running one to stop after its current chunk; False when it ended."""
    if job_cancel(model=JudgeJob, job_id=job.pk):
        return True
    asked = JudgeJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(cancel_requested=True)
    return asked == 1


def judge_job_resume(*, job: JudgeJob) -> bool:
    """Queue a failed or cancelled job again: it judges the pairs still missing."""
    with transaction.atomic():
        resumed = job_resume(model=JudgeJob, job_id=job.pk, cancel_requested=False)
        if resumed:
            job_send_on_commit(task=judge_campaign_task, job=job)
    return resumed


def judge_job_run(*, job_id: int) -> None:
    """Judge what is missing of a judge job, chunk by chunk, stopping early on a cancel request."""
    if not job_start(model=JudgeJob, job_id=job_id, cancel_requested=False):
        return
    job = JudgeJob.objects.select_related("judge", "campaign").get(pk=job_id)
    todo = judge_job_missing(job=job)
    logger.info("judge job %s: %d pairs × criteria to judge", job.pk, len(todo))
    backend = judge_backend(judge=job.judge) if todo else None
    for start in range(0, len(todo), JUDGE_CHUNK):
        if JudgeJob.objects.filter(pk=job_id, cancel_requested=True).exists():
            job_stop(model=JudgeJob, job_id=job_id)
            return
        chunk = todo[start : start + JUDGE_CHUNK]
        assert backend is not None
        replies = backend.judge([request for unit in chunk for request in unit.requests])
        verdicts_store(job=job, units=chunk, replies={reply.key: reply for reply in replies})
    job_finish(model=JudgeJob, job_id=job_id, **_job_counts(job))


@dataclass(frozen=True)
class _Unit:
    """One pair on one criterion: its two requests (keys "<comparison>:<criterion>:<order>")."""

    comparison_id: int
    criterion: str
    requests: tuple[JudgeRequest, JudgeRequest]


def judge_job_missing(*, job: JudgeJob) -> list["_Unit"]:
    """The (pair, criterion) units of the job whose two verdicts are not both stored, with their rendered prompts."""
    have = set(
        JudgeVerdict.objects.filter(judge=job.judge, comparison__campaign=job.campaign, criterion__in=job.criteria)
        .values("comparison_id", "criterion")
        .annotate(orders=Count("id"))
        .filter(orders=len(ORDERS))
        .values_list("comparison_id", "criterion")
    )
    definitions = {item["slug"]: item for item in job.campaign.criteria}
    rows = Comparison.objects.filter(campaign=job.campaign).order_by("pk")
    units = []
    for pk, prompt, text_a, text_b in rows.values_list("pk", "prompt__text", "candidate_a__text", "candidate_b__text"):
        for criterion in job.criteria:
            if (pk, criterion) in have:
                continue
            label, definition = _criterion_words(criterion, definitions)
            template = judge_template(judge=job.judge, criterion=criterion)
            requests = tuple(
                JudgeRequest(
                    key=f"{pk}:{criterion}:{order}",
                    prompt=judge_prompt(
                        template,
                        prompt=prompt,
                        answer_a=first,
                        answer_b=second,
                        criterion=label,
                        definition=definition,
                    ),
                )
                for order, (first, second) in zip(ORDERS, ((text_a, text_b), (text_b, text_a)), strict=True)
            )
            units.append(_Unit(pk, criterion, requests))  # type: ignore[arg-type]
    return units


def _criterion_words(slug: str, definitions: Mapping[str, Mapping[str, str]]) -> tuple[str, str]:
    if slug == OVERALL:
        return "Overall preference", OVERALL_DEFINITION
    item = definitions.get(slug, {})
    return item.get("label", slug), item.get("definition", "")


def judge_backend(*, judge: Judge) -> Any:
    """The judge's backend (training.judging): an endpoint client with the key read from the environment now, or
    the local model loaded in this process."""
    from django.conf import settings

    from training.judging import EndpointJudge, LocalJudge

    if judge.kind == Judge.Kind.ENDPOINT:
        return EndpointJudge(
            base_url=judge.base_url,
            model=judge.model_name,
            api_key=api_key_from_environment(judge.api_key_env),
            timeout=judge.timeout_seconds,
            retries=judge.max_retries,
            concurrency=judge.concurrency,
            max_tokens=judge.max_new_tokens,
            backoff=JUDGE_BACKOFF_SECONDS,
        )
    return LocalJudge(
        # A trained variant's base or adapter is an artifact: on another machine it is fetched first.
        base_model=model_source(judge.base_model),
        adapter_path=model_source(judge.adapter_path),
        quantization=judge.quantization,
        batch_size=judge.batch_size,
        max_new_tokens=judge.max_new_tokens,
        backend=settings.PREFLOOP_GENERATION_BACKEND,
    )


def verdicts_store(*, job: JudgeJob, units: Iterable["_Unit"], replies: Mapping[str, Any]) -> int:
    """Store both orders' verdicts of each unit whose two replies came back, with the job's progress, in one
    transaction; a unit already stored (a redelivered chunk) is left as it was."""
    rows = []
    for unit in units:
        pair = [replies[request.key] for request in unit.requests if request.key in replies]
        if len(pair) != len(ORDERS):
            continue  # never half a pair
        for order, reply in zip(ORDERS, pair, strict=True):
            verdict = verdict_parse(reply.text)
            rows.append(
                JudgeVerdict(
                    judge_id=job.judge_id,
                    comparison_id=unit.comparison_id,
                    job_id=job.pk,
                    criterion=unit.criterion,
                    order=order,
                    # PostgreSQL text cannot hold NUL, and a model may emit that byte.
                    raw_output=reply.text.replace("\x00", "\ufffd"),
                    choice=verdict.choice,
                    parse_status=verdict.status,
                    prompt_tokens=reply.prompt_tokens,
                    completion_tokens=reply.completion_tokens,
                    latency_ms=max(0, int(reply.latency_ms)),
                )
            )

    stored_pairs = sorted({row.comparison_id for row in rows if row.criterion == OVERALL})

    def store() -> None:
        with transaction.atomic():
            JudgeVerdict.objects.bulk_create(rows, ignore_conflicts=True)
            if stored_pairs:  # campaigns steered by this judge see its new outcomes at once
                judge_outcomes_stored(judge_id=job.judge_id, comparison_ids=stored_pairs)
            progressed = job_progress(model=JudgeJob, job_id=job.pk, **_job_counts(job))
            if not progressed and job_claim(model=JudgeJob, job_id=job.pk) is not None:
                raise JobLost(JudgeJob, job.pk)

    db_retrying(store, what="storing verdicts")
    return len(rows)


def _job_counts(job: JudgeJob) -> dict[str, int]:
    """The job's done units (both orders stored) and unparseable verdicts, counted from the verdicts themselves."""
    verdicts = JudgeVerdict.objects.filter(
        judge_id=job.judge_id, comparison__campaign_id=job.campaign_id, criterion__in=job.criteria
    )
    done = verdicts.values("comparison_id", "criterion").annotate(orders=Count("id")).filter(orders=len(ORDERS)).count()
    unparseable = verdicts.exclude(parse_status=JudgeVerdict.ParseStatus.OK).count()
    return {"done": min(done, job.total), "unparseable": unparseable}
