"""Model exports: a variant merged into a bf16 copy of its base, or that as GGUF."""

from pathlib import Path

from django.conf import settings
from django.db import transaction

from evaluator.errors import ServiceError
from evaluator.models import (
    ModelExport,
    ModelVariant,
)
from evaluator.services.jobs import job_finish, job_start
from workers.tasks import export_model as export_model_task


def model_export_queue(*, variant: ModelVariant, kind: str) -> ModelExport:
    """Queue writing `variant` out: merged into a bf16 copy of its base, or that as GGUF."""

    if not variant.adapter_path:
        raise ServiceError(f"“{variant.name}” has no adapter: its base model is already the whole model.")
    if kind not in ModelExport.Kind.values:
        raise ServiceError(f"Unknown export kind {kind!r}.")
    with transaction.atomic():
        export = ModelExport.objects.create(variant=variant, kind=kind)
        export_model_task.delay_on_commit(export.pk)
    return export


def model_export_run(*, export_id: int) -> None:
    """Write a variant out: its adapter merged into a bf16 copy of its base, and optionally that as GGUF."""
    from training.export import export_gguf, merge_adapter

    if not job_start(model=ModelExport, job_id=export_id):
        return
    export = ModelExport.objects.select_related("variant").get(pk=export_id)
    variant = export.variant
    folder = Path(settings.ARTIFACTS_DIR) / "exports" / f"variant-{variant.pk}"
    merged = folder / "merged-bf16"
    if not (merged / "config.json").exists():
        merge_adapter(variant.base_model, variant.adapter_path, merged)
    path = merged
    if export.kind == ModelExport.Kind.GGUF:
        path = export_gguf(merged, folder / f"variant-{variant.pk}.gguf")
    job_finish(model=ModelExport, job_id=export_id, path=str(path))
