"""Every write Prefloop makes. Keyword-only functions named <noun>_<verb>; views and tasks call these."""

import operator
from collections.abc import Iterable, Mapping, Sequence
from functools import reduce
from itertools import combinations
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from evaluator import accounts, assignments, jobs, snapshots
from evaluator.models import (
    FINISHED_STATUSES,
    AnnotatorFlag,
    AnswerFlag,
    Assignment,
    Campaign,
    Candidate,
    Comparison,
    DocumentCollection,
    GenerationJob,
    JobStatus,
    ModelExport,
    ModelVariant,
    Prompt,
    Selection,
    TrainingJob,
    default_criteria,
)
from evaluator.prompt_files import parse_prompt_file
from evaluator.rubric import rubric_problems
from training.generate import SAMPLES_PER_PROMPT_LIMIT, GenerationSettings

SIDES = assignments.SIDES


# Defined with the assignment engine (which services imports) so that both raise one and the same class.
ServiceError = assignments.ServiceError


# Campaigns and prompts -------------------------------------------------------------------------------------


def campaign_create(
    *,
    name: str,
    description: str = "",
    overlap: int = 3,
    quota_per_annotator: int | None = None,
    gold_rate: float = 0.0,
    selection: str = Selection.RANDOM,
    guidelines: str = "",
    allow_both_bad: bool = False,
    show_reference: bool = False,
    show_retrieved: bool = False,
    criteria: Sequence[Mapping[str, str]] | None = None,
) -> Campaign:
    """A new campaign; `criteria` is its rubric ({slug, label, definition} each), the five defaults when None."""
    if Campaign.objects.filter(name=name).exists():
        raise ServiceError(f"A campaign named {name!r} already exists.")
    rubric = default_criteria() if criteria is None else [dict(criterion) for criterion in criteria]
    problems = rubric_problems(rubric)
    if problems:
        raise ServiceError(" ".join(problems))
    return Campaign.objects.create(
        name=name,
        description=description,
        criteria=rubric,
        overlap=overlap,
        quota_per_annotator=quota_per_annotator,
        gold_rate=gold_rate,
        selection=selection,
        guidelines=guidelines,
        allow_both_bad=allow_both_bad,
        show_reference=show_reference,
        show_retrieved=show_retrieved,
    )


# What an admin may change on an existing campaign; criteria stay fixed once judgements refer to them.
CAMPAIGN_SETTINGS = (
    "name",
    "description",
    "overlap",
    "quota_per_annotator",
    "gold_rate",
    "selection",
    "guidelines",
    "allow_both_bad",
    "show_reference",
    "show_retrieved",
)


def campaign_update(*, campaign: Campaign, **changes: Any) -> Campaign:
    """Change a campaign's settings (the names in CAMPAIGN_SETTINGS); saves only the fields that changed."""
    unknown = sorted(set(changes) - set(CAMPAIGN_SETTINGS))
    if unknown:
        raise ServiceError(f"Unknown campaign settings: {', '.join(unknown)}.")
    name = changes.get("name", campaign.name)
    if Campaign.objects.filter(name=name).exclude(pk=campaign.pk).exists():
        raise ServiceError(f"A campaign named {name!r} already exists.")
    changed = [field for field, value in changes.items() if getattr(campaign, field) != value]
    for field in changed:
        setattr(campaign, field, changes[field])
    if changed:
        campaign.save(update_fields=changed)
    return campaign


@transaction.atomic
def prompts_import(*, campaign: Campaign, file_name: str, data: bytes) -> int:
    """Store every prompt of a JSONL/CSV file, or none: the file is validated whole first."""
    rows = parse_prompt_file(file_name, data)
    taken = set(
        Prompt.objects.filter(campaign=campaign, external_id__in=[row.external_id for row in rows]).values_list(
            "external_id", flat=True
        )
    )
    if taken:
        raise ServiceError(f"The campaign already has prompt id(s): {', '.join(sorted(taken)[:10])}.")
    Prompt.objects.bulk_create(
        Prompt(
            campaign=campaign, external_id=row.external_id, text=row.text, reference=row.reference, context=row.context
        )
        for row in rows
    )
    return len(rows)


# Variants, candidates and comparisons ----------------------------------------------------------------------


def variant_create(
    *,
    name: str,
    base_model: str,
    adapter_path: str = "",
    quantization: str = "none",
    generation_settings: Mapping[str, Any] | None = None,
    parent: ModelVariant | None = None,
    collection: DocumentCollection | None = None,
    retrieval_top_k: int = 3,
    retrieval_template: str = "",
) -> ModelVariant:
    """A model to compare: a base, optionally an adapter, optionally retrieval from a document collection."""
    from training.rag import check_template

    if ModelVariant.objects.filter(name=name).exists():
        raise ServiceError(f"A variant named {name!r} already exists.")
    try:
        settings_ = GenerationSettings.from_dict(generation_settings or {})
    except ValueError as error:
        raise ServiceError(f"Generation settings: {error}.") from None
    if retrieval_template:
        try:
            check_template(retrieval_template)
        except ValueError as error:
            raise ServiceError(f"Retrieval: {error}.") from None
    return ModelVariant.objects.create(
        name=name,
        base_model=base_model,
        adapter_path=adapter_path,
        quantization=quantization,
        generation_settings=settings_.to_dict(),
        parent=parent,
        collection=collection,
        retrieval_top_k=retrieval_top_k,
        retrieval_template=retrieval_template if collection else "",
    )


def generation_job_queue(
    *,
    campaign: Campaign,
    variants: Sequence[ModelVariant],
    samples_per_prompt: int | None = None,
    created_by: AbstractBaseUser | None = None,
    training_job: TrainingJob | None = None,
    prompts: Sequence[Prompt] = (),
) -> GenerationJob:
    """Queue candidate generation for `variants` over the campaign's prompts (or just `prompts`); the worker
    pairs them after. Each variant answers every prompt as many times as its generation settings ask, unless
    `samples_per_prompt` sets one count for all of them."""
    from workers.tasks import generate_candidates

    distinct = {variant.pk: variant for variant in variants}
    if len(distinct) < 2:
        raise ServiceError("Choose at least two variants: comparisons need two answers.")
    if samples_per_prompt is not None and not 1 <= samples_per_prompt <= SAMPLES_PER_PROMPT_LIMIT:
        raise ServiceError(f"Samples per prompt must be from 1 to {SAMPLES_PER_PROMPT_LIMIT}.")
    try:
        samples = _samples_by_variant(samples_per_prompt, distinct.values())
    except ValueError as error:
        raise ServiceError(f"Generation settings: {error}.") from None
    if any(prompt.campaign_id != campaign.pk for prompt in prompts):
        raise ServiceError("Every prompt must belong to the campaign.")
    prompt_count = len(prompts) or campaign.prompts.count()
    if prompt_count == 0:
        raise ServiceError("The campaign has no prompts yet: import some first.")
    with transaction.atomic():
        job = GenerationJob.objects.create(
            campaign=campaign,
            samples_per_prompt=samples_per_prompt,
            created_by=created_by,
            training_job=training_job,
            total=prompt_count * sum(samples.values()),
        )
        job.variants.set(distinct.values())
        job.prompts.set(prompts)
        generate_candidates.delay_on_commit(job.pk)
    return job


def generation_job_start(*, job_id: int) -> GenerationJob | None:
    """Mark a queued (or redelivered running) job as running; None when it has already ended."""
    updated = GenerationJob.objects.filter(pk=job_id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).update(
        status=JobStatus.RUNNING, started_at=timezone.now()
    )
    return GenerationJob.objects.get(pk=job_id) if updated else None


def candidates_store(*, job: GenerationJob, variant: ModelVariant, generated: Iterable[Mapping[str, Any]]) -> int:
    """Store generated answers; a (prompt, variant, sample) that already exists is left as it is."""
    rows = [
        Candidate(
            prompt_id=item["prompt_id"],
            variant=variant,
            sample_index=item["sample_index"],
            # PostgreSQL text cannot hold NUL, and a model may emit that byte: shown as U+FFFD instead.
            text=item["text"].replace("\x00", "\ufffd"),
            generation_settings=item["generation_settings"],
            seed=item["seed"],
            prompt_tokens=item["prompt_tokens"],
            completion_tokens=item["completion_tokens"],
            latency_ms=item["latency_ms"],
            retrieved=item.get("retrieved", []),
        )
        for item in generated
    ]
    with transaction.atomic():
        Candidate.objects.bulk_create(rows, ignore_conflicts=True)
        GenerationJob.objects.filter(pk=job.pk).update(done=_candidate_count(job))
    return len(rows)


def generation_job_samples(*, job: GenerationJob) -> dict[int, int]:
    """Answers per prompt by variant id: the job's override, else each variant's own setting."""
    return _samples_by_variant(job.samples_per_prompt, job.variants.all())


def _samples_by_variant(override: int | None, variants: Iterable[ModelVariant]) -> dict[int, int]:
    return {
        variant.pk: override or GenerationSettings.from_dict(variant.generation_settings).samples_per_prompt
        for variant in variants
    }


def _candidate_count(job: GenerationJob) -> int:
    wanted = [Q(variant_id=pk, sample_index__lt=count) for pk, count in generation_job_samples(job=job).items()]
    candidates = Candidate.objects.filter(reduce(operator.or_, wanted), prompt__campaign_id=job.campaign_id)
    if job.prompts.exists():
        candidates = candidates.filter(prompt__in=job.prompts.all())
    return candidates.count()


def generation_job_prompts(*, job: GenerationJob) -> list[Prompt]:
    """The prompts a generation job answers: its own list, or every prompt of its campaign."""
    return list(job.prompts.order_by("pk")) or list(job.campaign.prompts.order_by("pk"))


def comparisons_create(*, campaign: Campaign, samples: Mapping[int, int]) -> int:
    """Pair the candidates of every two variants (`samples`: answers per prompt by variant id) on each prompt;
    idempotent.

    Sample i meets sample i. A variant with fewer samples than the other wraps round (sample i mod its count), so
    that every answer is rated: three sampled answers against one greedy answer make three comparisons.
    """
    by_key = {
        (candidate.prompt_id, candidate.variant_id, candidate.sample_index): candidate
        for candidate in Candidate.objects.filter(prompt__campaign=campaign, variant__in=list(samples))
    }
    prompt_ids = sorted({prompt_id for prompt_id, _, _ in by_key})
    ordered = sorted(samples)
    new = []
    for prompt_id in prompt_ids:
        for variant_a, variant_b in combinations(ordered, 2):
            for sample in range(max(samples[variant_a], samples[variant_b])):
                first = by_key.get((prompt_id, variant_a, sample % samples[variant_a]))
                second = by_key.get((prompt_id, variant_b, sample % samples[variant_b]))
                if not (first and second):
                    continue
                new.append(
                    Comparison(
                        campaign=campaign,
                        prompt_id=prompt_id,
                        candidate_a=first,
                        candidate_b=second,
                        variant_a_id=variant_a,
                        variant_b_id=variant_b,
                    )
                )
    before = Comparison.objects.filter(campaign=campaign).count()
    Comparison.objects.bulk_create(new, ignore_conflicts=True)
    return Comparison.objects.filter(campaign=campaign).count() - before


def generation_job_finish(*, job_id: int) -> GenerationJob:
    job = GenerationJob.objects.get(pk=job_id)
    created = comparisons_create(campaign=job.campaign, samples=generation_job_samples(job=job))
    GenerationJob.objects.filter(pk=job_id).update(
        status=JobStatus.SUCCEEDED,
        comparisons_created=created,
        done=_candidate_count(job),
        finished_at=timezone.now(),
    )
    job.refresh_from_db()
    return job


def job_fail(*, job: GenerationJob | TrainingJob, error: str) -> None:
    type(job).objects.filter(pk=job.pk).exclude(status__in=FINISHED_STATUSES).update(
        status=JobStatus.FAILED, error=error[:5000], finished_at=timezone.now()
    )


# Rating: the assignment engine lives in evaluator/assignments.py; these names are its public face.

assignment_next = assignments.assignment_next
assignment_skip = assignments.assignment_skip
judgement_submit = assignments.judgement_submit
leases_release = assignments.leases_release
side_to_outcome = assignments.side_to_outcome

FLAG_NOTE_MAX = 1000


def answer_flag(*, token: str, annotator: AbstractBaseUser, side: str, reason: str, note: str = "") -> AnswerFlag:
    """Flag the answer shown on `side` (left or right) of the annotator's pair; a repeat returns the stored flag.

    The screen side is turned into the candidate through the assignment's placement, so the flag names the
    answer, never the side it happened to be shown on.
    """
    assignment = Assignment.objects.select_related("comparison").filter(token=token).first()
    if assignment is None or assignment.annotator_id != annotator.pk:
        raise PermissionDenied("This task is not yours.")
    if side not in ("left", "right"):
        raise ServiceError(f"Side must be left or right, not {side!r}.")
    if reason not in AnswerFlag.Reason.values:
        raise ServiceError(f"Reason must be one of {', '.join(AnswerFlag.Reason.values)}, not {reason!r}.")
    note = note.strip()
    if len(note) > FLAG_NOTE_MAX:
        raise ServiceError(f"The note is {len(note)} characters long; at most {FLAG_NOTE_MAX} are allowed.")
    comparison = assignment.comparison
    shown_a = (side == "left") == assignment.left_is_a
    flag, _ = AnswerFlag.objects.get_or_create(
        assignment=assignment,
        candidate_id=comparison.candidate_a_id if shown_a else comparison.candidate_b_id,
        reason=reason,
        defaults={"note": note},
    )
    return flag


# Retraining: the job life cycle lives in evaluator/jobs.py; these names are its public face.

training_job_queue = jobs.training_job_queue
training_job_cancel = jobs.training_job_cancel
training_job_resume = jobs.training_job_resume
training_jobs_reap = jobs.training_jobs_reap


def api_token_rotate(*, user: AbstractBaseUser) -> str:
    """Replace the user's API token with a new one and return it (shown once)."""
    from rest_framework.authtoken.models import Token

    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user).key


# Annotators and accounts: accounts live in evaluator/accounts.py (the create_account command uses them too).

account_create = accounts.account_create
account_roles_set = accounts.account_roles_set
account_deactivate = accounts.account_deactivate
account_reactivate = accounts.account_reactivate
ANNOTATOR_FLAG_REASON_MAX = 1000


def annotator_flag(*, annotator: AbstractBaseUser, reason: str, by: AbstractBaseUser) -> AnnotatorFlag:
    """Flag an annotator (researchers may then leave their judgements out); flagging again replaces the reason."""
    reason = reason.strip()
    if not reason:
        raise ServiceError("Say why you flag this annotator.")
    if len(reason) > ANNOTATOR_FLAG_REASON_MAX:
        raise ServiceError(
            f"The reason is {len(reason)} characters long; at most {ANNOTATOR_FLAG_REASON_MAX} are allowed."
        )
    flag, _ = AnnotatorFlag.objects.update_or_create(annotator=annotator, defaults={"reason": reason, "flagged_by": by})
    return flag


def annotator_unflag(*, annotator: AbstractBaseUser) -> bool:
    """Take the annotator's flag away; False when there was none."""
    deleted, _ = AnnotatorFlag.objects.filter(annotator=annotator).delete()
    return bool(deleted)


# Model exports -------------------------------------------------------------------------------------------------


def model_export_queue(*, variant: ModelVariant, kind: str) -> ModelExport:
    """Queue writing `variant` out: merged into a bf16 copy of its base, or that as GGUF."""
    from workers.tasks import export_model

    if not variant.adapter_path:
        raise ServiceError(f"“{variant.name}” has no adapter: its base model is already the whole model.")
    if kind not in ModelExport.Kind.values:
        raise ServiceError(f"Unknown export kind {kind!r}.")
    with transaction.atomic():
        export = ModelExport.objects.create(variant=variant, kind=kind)
        export_model.delay_on_commit(export.pk)
    return export


def model_export_start(*, export_id: int) -> ModelExport | None:
    updated = ModelExport.objects.filter(pk=export_id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).update(
        status=JobStatus.RUNNING
    )
    return ModelExport.objects.select_related("variant").get(pk=export_id) if updated else None


def model_export_finish(*, export_id: int, path: str) -> None:
    ModelExport.objects.filter(pk=export_id).update(status=JobStatus.SUCCEEDED, path=path, finished_at=timezone.now())


def model_export_fail(*, export_id: int, error: str) -> None:
    ModelExport.objects.filter(pk=export_id).update(
        status=JobStatus.FAILED, error=error[:5000], finished_at=timezone.now()
    )


# Statistics snapshots: their life in the database lives in evaluator/snapshots.py; these names are its public face.

statistics_snapshot_queue = snapshots.statistics_snapshot_queue
statistics_snapshot_start = snapshots.statistics_snapshot_start
statistics_snapshot_build = snapshots.statistics_snapshot_build
statistics_snapshot_fail = snapshots.statistics_snapshot_fail
