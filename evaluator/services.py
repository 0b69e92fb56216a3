"""Every write Prefloop makes. Keyword-only functions named <noun>_<verb>; views and tasks call these."""

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from evaluator import assignments
from evaluator.models import (
    FINISHED_STATUSES,
    Campaign,
    Candidate,
    Comparison,
    GenerationJob,
    JobStatus,
    ModelVariant,
    Prompt,
    Selection,
    TrainingJob,
)
from evaluator.prompt_files import parse_prompt_file
from training.generate import GenerationSettings

SIDES = assignments.SIDES
MAX_TRAINING_ATTEMPTS = 3


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
) -> Campaign:
    if Campaign.objects.filter(name=name).exists():
        raise ServiceError(f"A campaign named {name!r} already exists.")
    return Campaign.objects.create(
        name=name,
        description=description,
        overlap=overlap,
        quota_per_annotator=quota_per_annotator,
        gold_rate=gold_rate,
        selection=selection,
    )


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
) -> ModelVariant:
    if ModelVariant.objects.filter(name=name).exists():
        raise ServiceError(f"A variant named {name!r} already exists.")
    try:
        settings_ = GenerationSettings.from_dict(generation_settings or {})
    except ValueError as error:
        raise ServiceError(f"Generation settings: {error}.") from None
    return ModelVariant.objects.create(
        name=name,
        base_model=base_model,
        adapter_path=adapter_path,
        quantization=quantization,
        generation_settings=settings_.to_dict(),
        parent=parent,
    )


def generation_job_queue(
    *,
    campaign: Campaign,
    variants: Sequence[ModelVariant],
    samples_per_prompt: int = 1,
    created_by: AbstractBaseUser | None = None,
    training_job: TrainingJob | None = None,
) -> GenerationJob:
    """Queue candidate generation for `variants` over the campaign's prompts; the worker pairs them after."""
    from workers.tasks import generate_candidates

    distinct = {variant.pk: variant for variant in variants}
    if len(distinct) < 2:
        raise ServiceError("Choose at least two variants: comparisons need two answers.")
    prompt_count = campaign.prompts.count()
    if prompt_count == 0:
        raise ServiceError("The campaign has no prompts yet: import some first.")
    with transaction.atomic():
        job = GenerationJob.objects.create(
            campaign=campaign,
            samples_per_prompt=samples_per_prompt,
            created_by=created_by,
            training_job=training_job,
            total=prompt_count * len(distinct) * samples_per_prompt,
        )
        job.variants.set(distinct.values())
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
            text=item["text"],
            generation_settings=item["generation_settings"],
            seed=item["seed"],
            prompt_tokens=item["prompt_tokens"],
            completion_tokens=item["completion_tokens"],
            latency_ms=item["latency_ms"],
        )
        for item in generated
    ]
    with transaction.atomic():
        Candidate.objects.bulk_create(rows, ignore_conflicts=True)
        GenerationJob.objects.filter(pk=job.pk).update(done=_candidate_count(job))
    return len(rows)


def _candidate_count(job: GenerationJob) -> int:
    return Candidate.objects.filter(
        prompt__campaign_id=job.campaign_id,
        variant__in=job.variants.all(),
        sample_index__lt=job.samples_per_prompt,
    ).count()


def comparisons_create(*, campaign: Campaign, variants: Sequence[ModelVariant]) -> int:
    """Pair the candidates of every two variants on each prompt (sample i with sample i); idempotent."""
    by_key = {
        (candidate.prompt_id, candidate.variant_id, candidate.sample_index): candidate
        for candidate in Candidate.objects.filter(prompt__campaign=campaign, variant__in=variants)
    }
    prompt_samples = {(prompt_id, sample) for prompt_id, _, sample in by_key}
    ordered = sorted({variant.pk for variant in variants})
    new = []
    for prompt_id, sample in sorted(prompt_samples):
        for variant_a, variant_b in combinations(ordered, 2):
            first = by_key.get((prompt_id, variant_a, sample))
            second = by_key.get((prompt_id, variant_b, sample))
            if first and second:
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
    created = comparisons_create(campaign=job.campaign, variants=list(job.variants.all()))
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
judgement_submit = assignments.judgement_submit
leases_release = assignments.leases_release
side_to_outcome = assignments.side_to_outcome


# Retraining ------------------------------------------------------------------------------------------------


def training_job_queue(
    *,
    campaign: Campaign,
    parent_variant: ModelVariant,
    config: Mapping[str, Any],
    created_by: AbstractBaseUser | None = None,
) -> TrainingJob:
    """Queue a DPO/QLoRA retrain of `parent_variant` on the campaign's preferences."""
    from workers.tasks import run_training_job

    if parent_variant.adapter_path:
        raise ServiceError("Retrain from a base variant (one without an adapter).")
    with transaction.atomic():
        job = TrainingJob.objects.create(
            campaign=campaign, parent_variant=parent_variant, config=dict(config), created_by=created_by
        )
        run_training_job.delay_on_commit(job.pk)
    return job


def training_job_start(*, job_id: int) -> TrainingJob | None:
    """Claim a queued job (or a redelivered running one under the attempt cap); None if nothing to do."""
    updated = (
        TrainingJob.objects.filter(pk=job_id, attempts__lt=MAX_TRAINING_ATTEMPTS)
        .filter(Q(status=JobStatus.QUEUED) | Q(status=JobStatus.RUNNING))
        .update(
            status=JobStatus.RUNNING, attempts=F("attempts") + 1, started_at=timezone.now(), heartbeat_at=timezone.now()
        )
    )
    return TrainingJob.objects.select_related("parent_variant", "campaign").get(pk=job_id) if updated else None


def training_job_dataset_record(*, job: TrainingJob, size: int, fingerprint: str) -> None:
    TrainingJob.objects.filter(pk=job.pk).update(dataset_size=size, dataset_hash=fingerprint)


def training_job_progress(*, job_id: int, log: Mapping[str, Any]) -> None:
    """Append one training log line and refresh progress and heartbeat."""
    job = TrainingJob.objects.get(pk=job_id)
    job.metrics = [*job.metrics, dict(log)]
    job.progress_step = int(log.get("step", job.progress_step))
    job.progress_total = int(log.get("max_steps", job.progress_total))
    job.heartbeat_at = timezone.now()
    job.save(update_fields=["metrics", "progress_step", "progress_total", "heartbeat_at"])


def training_job_cancel_requested(*, job_id: int) -> bool:
    return TrainingJob.objects.filter(pk=job_id, status=JobStatus.CANCELLED).exists()


def training_job_succeed(*, job_id: int, adapter_dir: str, lineage: Mapping[str, Any]) -> ModelVariant:
    """Register the trained adapter as a new variant and queue its round against the parent."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().select_related("parent_variant", "campaign").get(pk=job_id)
        parent = job.parent_variant
        variant = ModelVariant.objects.create(
            name=f"{parent.name} · DPO #{job.pk}",
            base_model=parent.base_model,
            adapter_path=adapter_dir,
            quantization=parent.quantization,
            generation_settings=parent.generation_settings,
            parent=parent,
            training_job=job,
            lineage=dict(lineage),
        )
        job.status = JobStatus.SUCCEEDED
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at"])
        generation_job_queue(campaign=job.campaign, variants=[parent, variant], training_job=job)
    return variant


def api_token_rotate(*, user: AbstractBaseUser) -> str:
    """Replace the user's API token with a new one and return it (shown once)."""
    from rest_framework.authtoken.models import Token

    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user).key
