"""Thin tasks: take ids, load rows, call one `training` entry point, record the outcome in the database."""

import logging
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from django.conf import settings

from evaluator import dpo_dataset, jobs, retrieval, services
from evaluator.models import (
    DocumentCollection,
    GenerationJob,
    JobStatus,
    ModelExport,
    ModelVariant,
    Prompt,
    TrainingJob,
)
from training.generate import SAMPLES_PER_PROMPT_LIMIT, GenerationSettings

logger = logging.getLogger(__name__)

GENERATION_CHUNK = 32


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=120)
def generate_candidates(self: Task, job_id: int) -> None:
    """Generate the missing candidates of a generation job, then pair them into comparisons.

    Variants that share a base model (and its quantisation) are answered by one loaded base carrying all their
    adapters, with transformers or vLLM (PREFLOOP_GENERATION_BACKEND). Each variant gives as many samples as the
    job or its own settings ask for. Only missing (prompt, variant, sample) answers are generated, so a
    redelivered task fills gaps. A retrieval variant's collection still being indexed puts the task back for a
    while.
    """
    if _collections_pending(job_id):
        raise self.retry(countdown=5)
    job = services.generation_job_start(job_id=job_id)
    if job is None:
        return
    try:
        if settings.PREFLOOP_GENERATION_BACKEND == "vllm":
            from training.vllm_backend import require_vllm

            # Before any answer is written: a worker without vLLM fails the job whole, saying what to install.
            require_vllm(alternative="set PREFLOOP_GENERATION_BACKEND=transformers")
        prompts = services.generation_job_prompts(job=job)
        samples = services.generation_job_samples(job=job)
        for group in _variants_by_base(job.variants.select_related("collection").order_by("pk")):
            _generate_for_group(job, group, prompts, samples)
        services.generation_job_finish(job_id=job_id)
    except Exception as error:
        logger.exception("generation job %s failed", job_id)
        services.job_fail(job=job, error=f"{type(error).__name__}: {error}")
        raise


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
    missing = {variant.pk: _missing_samples(variant, prompts, samples[variant.pk]) for variant in variants}
    variants = [variant for variant in variants if missing[variant.pk]]
    if not variants:
        return
    answer = _answerer(variants)
    for variant in variants:
        # Stored with each answer: how it was decoded, and how many samples this job asked of the variant.
        settings_ = replace(
            GenerationSettings.from_dict(variant.generation_settings), samples_per_prompt=samples[variant.pk]
        )
        todo = missing[variant.pk]
        logger.info("generation job %s: %d answers of variant %s to generate", job.pk, len(todo), variant.pk)
        retriever = _retriever(variant)
        for start in range(0, len(todo), GENERATION_CHUNK):
            chunk = todo[start : start + GENERATION_CHUNK]
            requests, retrieved = _requests(variant, chunk, retriever)
            results = answer(_key(variant), requests, settings_)
            rows = [_candidate_row(result, settings_, retrieved.get(result.key, [])) for result in results]
            services.candidates_store(job=job, variant=variant, generated=rows)


Answerer = Callable[[str, list[Any], Any], list[Any]]


def _answerer(variants: list[ModelVariant]) -> Answerer:
    """Answers for variants that share a base: (variant key, requests, settings) -> one answer per request, from
    one loaded base (transformers) or one vLLM engine carrying every variant's adapter."""
    from training.generate import generate_for_variants, load_base_with_adapters

    first = variants[0]
    adapters = {_key(variant): variant.adapter_path or None for variant in variants}
    # Every request is one (prompt, sample) carrying its own seed (seed=0 goes unused): one answer each, whatever
    # the settings' count.
    if settings.PREFLOOP_GENERATION_BACKEND == "vllm":
        from training.vllm_backend import VLLMBackend

        engine = VLLMBackend(first.base_model, adapters, quantization=first.quantization)
        return lambda key, requests, settings_: engine.generate_for_variants(
            {key: requests}, {key: settings_}, seed=0, samples_per_prompt=1
        )[key]
    loaded = load_base_with_adapters(first.base_model, adapters, first.quantization)
    return lambda key, requests, settings_: generate_for_variants(
        loaded,
        loaded.tokenizer,
        {key: requests},
        {key: settings_},
        seed=0,
        batch_size=settings.PREFLOOP_GENERATION_BATCH_SIZE,
        samples_per_prompt=1,
    )[key]


def _key(variant: ModelVariant) -> str:
    return f"variant-{variant.pk}"


def _retriever(variant: ModelVariant) -> Any:
    """The loaded index of a retrieval variant's collection; None for a variant without retrieval."""
    from training.rag import Retriever

    collection = variant.collection
    if collection is None:
        return None
    if collection.status != JobStatus.SUCCEEDED or not collection.index_dir:
        raise ValueError(f"the collection “{collection.name}” of variant “{variant.name}” is not indexed yet")
    return Retriever.load(Path(collection.index_dir))


def _requests(
    variant: ModelVariant, chunk: list[tuple[Prompt, int]], retriever: Any
) -> tuple[list[Any], dict[str, list[dict[str, Any]]]]:
    """The chats for (prompt, sample) pairs, each with its own seed, and the passages a retrieval variant adds."""
    from training.generate import GenerationRequest
    from training.rag import rag_messages

    passages: list[list[Any]] = [[] for _ in chunk]
    if retriever is not None:
        passages = retriever.search_many([prompt.text for prompt, _ in chunk], variant.retrieval_top_k)
    requests, retrieved = [], {}
    for (prompt, sample), found in zip(chunk, passages, strict=True):
        key = f"{prompt.pk}:{sample}"
        if retriever is not None:
            messages = rag_messages(prompt.text, found, variant.retrieval_template or None)
            retrieved[key] = [passage.to_dict() for passage in found]
        else:
            messages = [{"role": "user", "content": prompt.text}]
        requests.append(GenerationRequest(key=key, messages=messages, seed=candidate_seed(prompt, variant, sample)))
    return requests, retrieved


def candidate_seed(prompt: Prompt, variant: ModelVariant, sample: int) -> int:
    """A candidate's sampling seed, fixed by what it answers: regenerating it gives the same text."""
    # Spaced by the sample limit (64), so that no two samples of a prompt and variant share a seed.
    return (prompt.pk * 1_000_003 + variant.pk * 7_919) * SAMPLES_PER_PROMPT_LIMIT + sample


def _missing_samples(variant: ModelVariant, prompts: list[Prompt], samples: int) -> list[tuple[Prompt, int]]:
    have = set(variant.candidates.filter(prompt__in=prompts).values_list("prompt_id", "sample_index"))
    return [(prompt, sample) for prompt in prompts for sample in range(samples) if (prompt.pk, sample) not in have]


def _candidate_row(result: Any, settings_: Any, retrieved: list[dict[str, Any]]) -> dict[str, Any]:
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
        "retrieved": retrieved,
    }


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_training_job(job_id: int) -> None:
    """Train the job's QLoRA adapter (DPO or SFT), resuming from its newest checkpoint, and register it.

    Delivered again after its worker process died (late ack, reject on worker lost) or re-queued by the reaper,
    it goes on from the checkpoint; `jobs.training_job_start` lets only one delivery run the job.
    """
    job = jobs.training_job_start(job_id=job_id)
    if job is None:
        return
    workdir = Path(settings.ARTIFACTS_DIR) / "training-jobs" / job.workdir_name
    workdir.mkdir(parents=True, exist_ok=True)
    with job_log(workdir / "job.log") as log:
        log.info("attempt %d of %d on %s", job.attempts, job.max_attempts, job.worker)
        try:
            _train(job, workdir, log)
        except Exception as error:
            log.exception("the job failed")
            jobs.training_job_fail(job_id=job_id, error=f"{type(error).__name__}: {error}")
            raise


def _train(job: TrainingJob, workdir: Path, log: logging.Logger) -> None:
    from training.preferences import dataset_fingerprint
    from training.trainer_common import checkpoint_step, latest_checkpoint

    resume_from = latest_checkpoint(workdir)
    dataset = workdir / "dataset.jsonl"
    if resume_from is None or not dataset.exists():
        count = _write_dataset(job, dataset)
        log.info("dataset: %d records", count)
    else:
        count = sum(1 for _ in dataset.open(encoding="utf-8"))
    fingerprint = dataset_fingerprint(dataset)
    jobs.training_job_dataset_record(job=job, size=count, fingerprint=fingerprint)
    base_model = _training_base(job.parent_variant, log)
    config_data = {**job.config["training"], "base_model": base_model, "dataset_path": str(dataset)}
    config_data["output_dir"] = str(workdir)
    if resume_from is not None:
        step = checkpoint_step(resume_from)
        log.info("resuming from %s (step %d)", resume_from.name, step)
        jobs.training_job_resume_point(job=job, step=step)
    job_id = job.pk
    trainer_kwargs: dict[str, Any] = {
        "on_log": lambda entry: jobs.training_job_progress(job_id=job_id, log=entry),
        "should_stop": lambda: jobs.training_job_beat(job_id=job_id),
        "on_checkpoint": lambda path, step: _checkpoint_record(job_id, path, step, log),
        "resume_from_checkpoint": resume_from,
    }
    if job.method == TrainingJob.Method.SFT:
        from training.sft import SFTJobConfig, train_sft

        sft_config = SFTJobConfig.from_dict(config_data)
        result = train_sft(sft_config, **trainer_kwargs)
        config_dict = sft_config.to_dict()
    else:
        from training.dpo import DPOJobConfig, train_dpo

        dpo_config = DPOJobConfig.from_dict(config_data)
        result = train_dpo(dpo_config, **trainer_kwargs)
        config_dict = dpo_config.to_dict()
    if result.stopped_early:
        log.info("cancelled at step %d", result.steps)
        jobs.training_job_cancelled(job_id=job_id)
        return
    variant = jobs.training_job_succeed(
        job_id=job_id,
        adapter_dir=str(result.adapter_dir),
        base_model=base_model,
        lineage=_lineage(config_dict, fingerprint, job),
    )
    log.info("trained %d steps; %s", result.steps, f"registered “{variant.name}”" if variant else "not registered")


def _checkpoint_record(job_id: int, path: Path, step: int, log: logging.Logger) -> None:
    log.info("checkpoint at step %d", step)
    jobs.training_job_checkpoint(job_id=job_id, path=str(path), step=step)


def _write_dataset(job: TrainingJob, path: Path) -> int:
    """The job's training records (DPO preference pairs or SFT conversations) written to `path`."""
    from training.preferences import write_jsonl

    if job.method == TrainingJob.Method.SFT and job.config.get("sft_source") == "qa":
        from training.sft import sft_records_from_qa

        records = sft_records_from_qa(Path(job.config["qa_path"]))
    else:
        rules = dpo_dataset.SelectionRules(
            **job.config.get("selection", {}), held_out_prompts=frozenset(job.config.get("held_out_prompts", []))
        )
        records = [
            record
            for campaign in job.source_campaigns.order_by("pk")
            for record in dpo_dataset.preference_records_select(campaign=campaign, rules=rules)
        ]
        if job.method == TrainingJob.Method.SFT:
            records = [{"messages": [*record["prompt"], *record["chosen"]]} for record in records]
    if not records:
        raise ValueError("the source campaigns have no decisive preferences to train on")
    write_jsonl(records, path)
    return len(records)


def _training_base(parent: ModelVariant, log: logging.Logger) -> str:
    """The model the new adapter trains on: the parent's base, with the parent's adapter merged in if it has
    one (into a bf16 copy, never the 4-bit weights), so that every round improves on its parent."""
    if not parent.adapter_path:
        return parent.base_model
    from training.export import merge_adapter

    merged = Path(settings.ARTIFACTS_DIR) / "merged" / f"variant-{parent.pk}"
    if not (merged / "config.json").exists():
        log.info("merging the parent's adapter into its base: %s", merged)
        merge_adapter(parent.base_model, parent.adapter_path, merged)
    return str(merged)


@contextmanager
def job_log(path: Path) -> Iterator[logging.Logger]:
    """A logger that appends to the job's log file (shown on the job page) for the length of the block."""
    logger_ = logging.getLogger(f"prefloop.job.{path.parent.name}")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger_.addHandler(handler)
    logger_.setLevel(logging.INFO)
    try:
        yield logger_
    finally:
        logger_.removeHandler(handler)
        handler.close()


@shared_task
def reap_training_jobs() -> list[int]:
    """Queue again the running jobs whose worker is gone (run every minute by celery beat)."""
    return jobs.training_jobs_reap()


def _lineage(config: Mapping[str, Any], fingerprint: str, job: TrainingJob) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    return {
        "method": job.method,
        "parent": job.parent_variant.name,
        "job": job.pk,
        "source_campaigns": list(job.source_campaigns.values_list("name", flat=True)),
        "held_out_prompts": job.config.get("held_out_prompts", []),
        "selection": job.config.get("selection", {}),
        "config": dict(config),
        "dataset_sha256": fingerprint,
        "seed": config.get("seed"),
        "versions": {
            "bitsandbytes": _version("bitsandbytes"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
    }


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


@shared_task(acks_late=True, reject_on_worker_lost=True)
def index_collection(collection_id: int) -> None:
    """Chunk, embed and index a document collection into the shared artifacts folder."""
    from training.rag import build_index

    collection = retrieval.collection_index_start(collection_id=collection_id)
    if collection is None:
        return
    try:
        documents = list(collection.documents.order_by("pk").values_list("name", "text"))
        info = build_index(
            documents,
            Path(settings.ARTIFACTS_DIR) / "collections" / str(collection.pk),
            embedding_model=collection.embedding_model,
            chunk_size=collection.chunk_size,
            chunk_overlap=collection.chunk_overlap,
        )
        index_dir = str(info.index_dir)
        retrieval.collection_index_finish(collection_id=collection_id, index_dir=index_dir, chunks=info.chunks)
    except Exception as error:
        logger.exception("indexing collection %s failed", collection_id)
        retrieval.collection_index_fail(collection_id=collection_id, error=f"{type(error).__name__}: {error}")
        raise


@shared_task(acks_late=True, reject_on_worker_lost=True)
def export_model(export_id: int) -> None:
    """Write a variant out: its adapter merged into a bf16 copy of its base, and optionally that as GGUF."""
    from training.export import export_gguf, merge_adapter

    export = services.model_export_start(export_id=export_id)
    if export is None:
        return
    variant = export.variant
    try:
        folder = Path(settings.ARTIFACTS_DIR) / "exports" / f"variant-{variant.pk}"
        merged = folder / "merged-bf16"
        if not (merged / "config.json").exists():
            merge_adapter(variant.base_model, variant.adapter_path, merged)
        path = merged
        if export.kind == ModelExport.Kind.GGUF:
            path = export_gguf(merged, folder / f"variant-{variant.pk}.gguf")
        services.model_export_finish(export_id=export_id, path=str(path))
    except Exception as error:
        logger.exception("export %s failed", export_id)
        services.model_export_fail(export_id=export_id, error=f"{type(error).__name__}: {error}")
        if not isinstance(error, ValueError | OSError):
            raise


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=30 * 60)
def build_statistics_snapshot(snapshot_id: int) -> None:
    """Compute a statistics snapshot with the statistics page's code and store its JSON (evaluator/snapshots.py)."""
    snapshot = services.statistics_snapshot_start(snapshot_id=snapshot_id)
    if snapshot is None:
        return
    try:
        services.statistics_snapshot_build(snapshot=snapshot)
    except Exception as error:
        logger.exception("statistics snapshot %s failed", snapshot_id)
        services.statistics_snapshot_fail(snapshot_id=snapshot_id, error=f"{type(error).__name__}: {error}")
        # Bad stored filters will not heal on a retry; anything else is worth Celery's own report.
        if not isinstance(error, ValueError):
            raise
