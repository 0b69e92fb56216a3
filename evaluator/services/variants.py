"""Model variants: a base model, optionally an adapter and retrieval from a collection."""

from collections.abc import Mapping
from typing import Any

from evaluator.errors import ServiceError
from evaluator.models import (
    DocumentCollection,
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
