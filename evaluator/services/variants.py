"""Model variants: a base model, optionally an adapter and retrieval from a collection."""

from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.models import (
    FINISHED_STATUSES,
    Candidate,
    DocumentCollection,
    GenerationJob,
    ModelVariant,
)
from training.generation.settings import GenerationSettings


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
    """A model to compare: a base, optionally an adapter, optionally retrieval from a document collection.

    The base and the adapter are checked before anything is stored (a GGUF's header, a folder's config, a Hub id
    in the local cache when offline), so a variant that could never generate is refused with the reason."""
    from training.rag import check_template

    if ModelVariant.objects.filter(name=name).exists():
        raise ServiceError(f"A variant named {name!r} already exists.")
    try:
        settings_ = GenerationSettings.from_dict(generation_settings or {})
    except ValueError as error:
        raise ServiceError(f"Generation settings: {error}.") from None
    model_check(base_model=base_model, adapter_path=adapter_path)
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


def model_check(*, base_model: str, adapter_path: str = "") -> str:
    """What the base (and adapter) will load, or ServiceError naming the file or id and the reason."""
    from training.models import ModelSpecError, check_adapter, check_model

    try:
        described = check_model(base_model)
        if adapter_path:
            described += f"; {check_adapter(adapter_path)}"
    except ModelSpecError as error:
        raise ServiceError(f"Model: {error}.") from None
    return described


def variant_rename(*, variant: ModelVariant, name: str) -> ModelVariant:
    """Give the variant a new name; answers, judgements and statistics follow it (they refer to its id)."""
    name = name.strip()
    if not name:
        raise ServiceError("A variant needs a name.")
    if ModelVariant.objects.filter(name=name).exclude(pk=variant.pk).exists():
        raise ServiceError(f"A variant named {name!r} already exists.")
    try:
        # The unique index decides a race between two renames to the same name.
        with transaction.atomic():
            updated = ModelVariant.objects.filter(pk=variant.pk).update(name=name)
    except IntegrityError:
        raise ServiceError(f"A variant named {name!r} already exists.") from None
    if updated != 1:
        raise ServiceError("This variant no longer exists.")
    variant.name = name
    return variant


def variant_generation_settings_update(
    *, variant: ModelVariant, generation_settings: Mapping[str, Any]
) -> ModelVariant:
    """New generation settings for a variant nothing has been generated with yet.

    Once a variant has answers (or a generation job that will make them is queued or running), its settings are
    what those answers were made with: changing them would leave the answers describing another model. The check
    and the write are one conditional UPDATE, so a generation that starts meanwhile is never mixed up with it."""
    try:
        settings_ = GenerationSettings.from_dict(generation_settings)
    except ValueError as error:
        raise ServiceError(f"Generation settings: {error}.") from None
    has_answers = Exists(Candidate.objects.filter(variant=OuterRef("pk")))
    has_pending_job = Exists(
        GenerationJob.objects.filter(variants=OuterRef("pk")).exclude(status__in=FINISHED_STATUSES)
    )
    updated = (
        ModelVariant.objects.filter(pk=variant.pk)
        .exclude(has_answers)
        .exclude(has_pending_job)
        .update(generation_settings=settings_.to_dict())
    )
    if updated != 1:
        raise ServiceError(variant_settings_lock_reason(variant=variant) or "This variant no longer exists.")
    variant.generation_settings = settings_.to_dict()
    return variant


def variant_settings_lock_reason(*, variant: ModelVariant) -> str:
    """Why the variant's generation settings can no longer change, or "" while they still can."""
    answers = Candidate.objects.filter(variant=variant).count()
    if answers:
        return (
            f"“{variant.name}” already has {answers} generated answer{'s' if answers != 1 else ''}: its generation "
            "settings are what they were made with and cannot change. Add a new variant with the settings you want."
        )
    if GenerationJob.objects.filter(variants=variant).exclude(status__in=FINISHED_STATUSES).exists():
        return (
            f"A generation job with “{variant.name}” is queued or running: its settings cannot change now. "
            "Cancel or wait for the job; a variant with answers keeps its settings for good."
        )
    return ""


def variant_archive(*, variant: ModelVariant) -> ModelVariant:
    """Leave the variant out of every list a variant is chosen from; its answers, judgements and children stay."""
    now = timezone.now()
    if ModelVariant.objects.filter(pk=variant.pk, archived_at__isnull=True).update(archived_at=now) != 1:
        raise ServiceError(f"“{variant.name}” is already archived.")
    variant.archived_at = now
    return variant


def variant_unarchive(*, variant: ModelVariant) -> ModelVariant:
    """Bring an archived variant back into the lists it is chosen from."""
    if ModelVariant.objects.filter(pk=variant.pk, archived_at__isnull=False).update(archived_at=None) != 1:
        raise ServiceError(f"“{variant.name}” is not archived.")
    variant.archived_at = None
    return variant
