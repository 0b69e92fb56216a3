"""Thin tasks: take ids, load rows, call one `training` entry point, record the outcome in the database."""

import logging
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celery import shared_task
from django.conf import settings

from evaluator import dpo_dataset, services
from evaluator.models import GenerationJob, ModelVariant, Prompt

logger = logging.getLogger(__name__)

GENERATION_CHUNK = 32


@shared_task(acks_late=True, reject_on_worker_lost=True)
def generate_candidates(job_id: int) -> None:
    """Generate the missing candidates of a generation job, then pair them into comparisons."""
    job = services.generation_job_start(job_id=job_id)
    if job is None:
        return
    try:
        for variant in job.variants.order_by("pk"):
            _generate_for_variant(job, variant)
        services.generation_job_finish(job_id=job_id)
    except Exception as error:
        logger.exception("generation job %s failed", job_id)
        services.job_fail(job=job, error=f"{type(error).__name__}: {error}")
        raise


def _generate_for_variant(job: GenerationJob, variant: ModelVariant) -> None:
    from training.generate import GenerationRequest, GenerationSettings, generate, load_for_generation

    missing = _missing_samples(job, variant)
    if not missing:
        return
    settings_ = GenerationSettings.from_dict(variant.generation_settings)
    model, tokenizer = load_for_generation(
        variant.base_model, adapter_path=variant.adapter_path or None, quantization=variant.quantization
    )
    for start in range(0, len(missing), GENERATION_CHUNK):
        chunk = missing[start : start + GENERATION_CHUNK]
        requests = [
            GenerationRequest(key=f"{prompt.pk}:{sample}", messages=[{"role": "user", "content": prompt.text}])
            for prompt, sample in chunk
        ]
        results = generate(
            model,
            tokenizer,
            requests,
            settings_,
            seed=job.pk * 100_003 + variant.pk * 1_009 + start,
            batch_size=settings.PREFLOOP_GENERATION_BATCH_SIZE,
        )
        services.candidates_store(job=job, variant=variant, generated=[_candidate_row(r, settings_) for r in results])


def _missing_samples(job: GenerationJob, variant: ModelVariant) -> list[tuple[Prompt, int]]:
    have = set(variant.candidates.filter(prompt__campaign_id=job.campaign_id).values_list("prompt_id", "sample_index"))
    return [
        (prompt, sample)
        for prompt in job.campaign.prompts.order_by("pk")
        for sample in range(job.samples_per_prompt)
        if (prompt.pk, sample) not in have
    ]


def _candidate_row(result: Any, settings_: Any) -> dict[str, Any]:
    prompt_id, sample = result.key.split(":")
    return {
        "prompt_id": int(prompt_id),
        "sample_index": int(sample),
        "text": result.text,
        "generation_settings": settings_.to_dict(),
        "seed": result.seed,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "latency_ms": result.latency_ms,
    }


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_training_job(job_id: int) -> None:
    """Build the preference dataset, train a QLoRA DPO adapter, register it as a new variant."""
    from training.dpo import DPOJobConfig, train_dpo
    from training.preferences import dataset_fingerprint

    job = services.training_job_start(job_id=job_id)
    if job is None:
        return
    try:
        workdir = Path(settings.ARTIFACTS_DIR) / "training-jobs" / str(job.pk)
        workdir.mkdir(parents=True, exist_ok=True)
        records = dpo_dataset.preference_records_select(campaign=job.campaign, rules=dpo_dataset.SelectionRules())
        if not records:
            raise ValueError("the campaign has no decisive overall preferences to train on")
        dataset = dpo_dataset.dpo_jsonl_write(records, workdir / "preferences.jsonl")
        fingerprint = dataset_fingerprint(dataset)
        services.training_job_dataset_record(job=job, size=len(records), fingerprint=fingerprint)
        config = DPOJobConfig.from_dict(
            {
                **job.config,
                "base_model": job.parent_variant.base_model,
                "dataset_path": str(dataset),
                "output_dir": str(workdir),
            }
        )
        result = train_dpo(
            config,
            on_log=lambda log: services.training_job_progress(job_id=job_id, log=log),
            should_stop=lambda: services.training_job_cancel_requested(job_id=job_id),
        )
        if result.stopped_early:
            return
        services.training_job_succeed(
            job_id=job_id, adapter_dir=str(result.adapter_dir), lineage=_lineage(config.to_dict(), fingerprint)
        )
    except Exception as error:
        logger.exception("training job %s failed", job_id)
        services.job_fail(job=job, error=f"{type(error).__name__}: {error}")
        raise


def _lineage(config: Mapping[str, Any], fingerprint: str) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    return {
        "config": dict(config),
        "dataset_sha256": fingerprint,
        "seed": config.get("seed"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
    }
