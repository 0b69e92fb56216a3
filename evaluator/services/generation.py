"""Generation jobs: answers of model variants to a campaign's prompts, paired into comparisons."""

import logging
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from functools import reduce
from itertools import combinations
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q

from evaluator.artifacts import artifact_fetch, model_source
from evaluator.batching import WRITE_BATCH, batched
from evaluator.errors import JobNotReady, ServiceError
from evaluator.models import (
    Campaign,
    Candidate,
    Comparison,
    DocumentCollection,
    GenerationJob,
    JobStatus,
    ModelVariant,
    Prompt,
    TrainingJob,
)
from evaluator.selectors.rating import answers_identical
from evaluator.services.jobs import (
    JobLost,
    db_retrying,
    job_claim,
    job_finish,
    job_progress,
    job_send_on_commit,
    job_start,
)
from training.generation.settings import SAMPLES_PER_PROMPT_LIMIT, GenerationSettings
from workers.tasks import generate_candidates as generate_candidates_task

if TYPE_CHECKING:
    from training.generation import Answer, Retrieval

logger = logging.getLogger(__name__)

# Answers asked of the model in one call: a stored batch is what a lost worker loses at most.
GENERATION_CHUNK = 32


def generation_job_queue(
    *,
    campaign: Campaign,
    variants: Sequence[ModelVariant],
    samples_per_prompt: int | None = None,
    created_by: User | None = None,
    training_job: TrainingJob | None = None,
    prompts: Sequence[Prompt] = (),
) -> GenerationJob:
    """Queue candidate generation for `variants` over the campaign's prompts (or just `prompts`); the worker
    pairs them after. Each variant answers every prompt as many times as its generation settings ask, unless
    `samples_per_prompt` sets one count for all of them."""

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
        # A new job has no prompts yet: inserted directly, a batch at a time, because `set` would first look the
        # prompts up in one `IN` list, past the database's parameter limit for a campaign-sized list.
        through = GenerationJob.prompts.through
        through.objects.bulk_create(
            (through(generationjob_id=job.pk, prompt_id=prompt.pk) for prompt in prompts), batch_size=WRITE_BATCH
        )
        job_send_on_commit(task=generate_candidates_task, job=job)
    return job


def generation_job_run(*, job_id: int) -> None:
    """Generate the missing candidates of a generation job, then pair them into comparisons.

    Variants that share a base model (and its quantisation) are answered by one loaded base carrying all their
    adapters (training.generation, with transformers or vLLM: PREFLOOP_GENERATION_BACKEND). Each variant gives as
    many samples as the job or its own settings ask for. Only missing (prompt, variant, sample) answers are
    generated, so a redelivered task fills gaps. Raises JobNotReady while a retrieval variant's collection is
    still being indexed.
    """
    if _collections_pending(job_id):
        raise JobNotReady("a retrieval variant's document collection is still being indexed")
    if not job_start(model=GenerationJob, job_id=job_id):
        return
    if settings.PREFLOOP_GENERATION_BACKEND == "vllm":
        from training.generation.vllm import require_vllm

        # Before any answer is written: a worker without vLLM fails the job whole, saying what to install.
        require_vllm(alternative="set PREFLOOP_GENERATION_BACKEND=transformers")
    job = GenerationJob.objects.select_related("campaign").get(pk=job_id)
    prompts = generation_job_prompts(job=job)
    samples = generation_job_samples(job=job)
    for group in _variants_by_base(job.variants.select_related("collection").order_by("pk")):
        _generate_for_group(job, group, prompts, samples)
    generation_job_finish(job_id=job_id)


def _collections_pending(job_id: int) -> bool:
    return DocumentCollection.objects.filter(
        variants__generation_jobs=job_id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
    ).exists()


def _variants_by_base(variants: Iterable[ModelVariant]) -> list[list[ModelVariant]]:
    groups: dict[tuple[str, str], list[ModelVariant]] = {}
    for variant in variants:
        groups.setdefault((variant.base_model, variant.quantization), []).append(variant)
    return list(groups.values())


def _generate_for_group(
    job: GenerationJob, variants: list[ModelVariant], prompts: list[Prompt], samples: Mapping[int, int]
) -> None:
    """Answer what is missing of variants sharing a base: one loaded base, one call into training a chunk."""
    from training.generation import AnswerRequest, open_generator

    missing = {
        variant.pk: missing_samples(variant=variant, prompts=prompts, samples=samples[variant.pk])
        for variant in variants
    }
    variants = [variant for variant in variants if missing[variant.pk]]
    if not variants:
        return
    first = variants[0]
    # A trained variant's adapter (and merged base) may have been written on another machine: fetched first.
    generator = open_generator(
        model_source(first.base_model),
        {_key(variant): model_source(variant.adapter_path) or None for variant in variants},
        quantization=first.quantization,
        backend=settings.PREFLOOP_GENERATION_BACKEND,
        batch_size=settings.PREFLOOP_GENERATION_BATCH_SIZE,
    )
    for variant in variants:
        # Stored with each answer: how it was decoded, and how many samples this job asked of the variant.
        settings_ = replace(
            GenerationSettings.from_dict(variant.generation_settings), samples_per_prompt=samples[variant.pk]
        )
        retrieval = _retrieval(variant)
        todo = missing[variant.pk]
        logger.info("generation job %s: %d answers of variant %s to generate", job.pk, len(todo), variant.pk)
        for start in range(0, len(todo), GENERATION_CHUNK):
            requests = [
                AnswerRequest(
                    key=f"{prompt.pk}:{sample}", prompt=prompt.text, seed=candidate_seed(prompt, variant, sample)
                )
                for prompt, sample in todo[start : start + GENERATION_CHUNK]
            ]
            answers = generator.answer(_key(variant), requests, settings_, retrieval=retrieval)
            candidates_store(
                job=job, variant=variant, generated=[_candidate_row(answer, settings_) for answer in answers]
            )


def _key(variant: ModelVariant) -> str:
    return f"variant-{variant.pk}"


def _retrieval(variant: ModelVariant) -> "Retrieval | None":
    """What a retrieval variant adds to each prompt: its collection's loaded index; None without retrieval."""
    from training.generation import Retrieval
    from training.rag import Retriever

    collection = variant.collection
    if collection is None:
        return None
    if collection.status != JobStatus.SUCCEEDED or not collection.index_dir:
        raise ValueError(f"the collection “{collection.name}” of variant “{variant.name}” is not indexed yet")
    return Retrieval(
        retriever=Retriever.load(artifact_fetch(collection.index_dir)),
        top_k=variant.retrieval_top_k,
        template=variant.retrieval_template or None,
    )


def candidate_seed(prompt: Prompt, variant: ModelVariant, sample: int) -> int:
    """A candidate's sampling seed, fixed by what it answers: regenerating it gives the same text."""
    # Spaced by the sample limit (64), so that no two samples of a prompt and variant share a seed.
    return (prompt.pk * 1_000_003 + variant.pk * 7_919) * SAMPLES_PER_PROMPT_LIMIT + sample


def missing_samples(*, variant: ModelVariant, prompts: Sequence[Prompt], samples: int) -> list[tuple[Prompt, int]]:
    """The (prompt, sample index) answers of `variant` to `prompts` not stored yet, `samples` a prompt."""
    # A batch of prompts a query: a campaign may hold more prompts than one statement can bind.
    have = {
        key
        for prompt_ids in batched(prompt.pk for prompt in prompts)
        for key in variant.candidates.filter(prompt_id__in=prompt_ids).values_list("prompt_id", "sample_index")
    }
    return [(prompt, sample) for prompt in prompts for sample in range(samples) if (prompt.pk, sample) not in have]


def _candidate_row(answer: "Answer", settings_: GenerationSettings) -> dict[str, Any]:
    prompt_id, sample = answer.key.split(":")
    return {
        "prompt_id": int(prompt_id),
        "sample_index": int(sample),
        "text": answer.text,
        "generation_settings": settings_.to_dict(),
        "seed": answer.seed,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "latency_ms": answer.latency_ms,
        "retrieved": answer.retrieved,
    }


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

    def store() -> None:
        with transaction.atomic():
            Candidate.objects.bulk_create(rows, ignore_conflicts=True)
            progressed = job_progress(model=GenerationJob, job_id=job.pk, done=_candidate_count(job))
            if not progressed and job_claim(model=GenerationJob, job_id=job.pk) is not None:
                # Another run holds the job now (this one was taken for lost): leave the rest to it.
                raise JobLost(GenerationJob, job.pk)

    # A dropped database connection costs the chunk's transaction a retry, not the job.
    db_retrying(store, what="storing answers")
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
    that every answer is rated: three sampled answers against one greedy answer make three comparisons. Two
    answers that read the same (equal after whitespace normalisation) are not paired: there is nothing to prefer,
    and the pair is left out rather than recorded as a tie (README, "Blind rating").
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
                if not (first and second) or answers_identical(first.text, second.text):
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
    Comparison.objects.bulk_create(new, ignore_conflicts=True, batch_size=WRITE_BATCH)
    return Comparison.objects.filter(campaign=campaign).count() - before


def generation_job_finish(*, job_id: int) -> bool:
    """Pair the job's answers into comparisons and mark it succeeded; False when this run no longer held it (its
    count of new comparisons is then never written over the holder's)."""
    if job_claim(model=GenerationJob, job_id=job_id) is not None and not job_progress(
        model=GenerationJob, job_id=job_id
    ):
        return False
    job = GenerationJob.objects.select_related("campaign").get(pk=job_id)
    created = comparisons_create(campaign=job.campaign, samples=generation_job_samples(job=job))
    return job_finish(model=GenerationJob, job_id=job_id, comparisons_created=created, done=_candidate_count(job))
