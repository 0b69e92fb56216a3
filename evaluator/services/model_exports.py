"""Model exports: a variant merged into a bf16 copy of its base, that as GGUF, or its adapter alone as a GGUF LoRA;
and a finished export as a download."""

from pathlib import Path

from django.conf import settings
from django.db import transaction

from evaluator.artifacts import artifact_publish, model_source
from evaluator.errors import ServiceError
from evaluator.models import ModelExport, ModelVariant
from evaluator.services.jobs import job_finish, job_send_on_commit, job_start
from workers.tasks import export_model as export_model_task

# What each kind may be written as (ModelExport's modelexport_outtype_fits_kind constraint says the same).
OUTTYPES = {
    ModelExport.Kind.MERGED: ("",),
    ModelExport.Kind.GGUF: ("f16", "q8_0", "bf16", "q4_0"),
    ModelExport.Kind.LORA_GGUF: ("f16", "q8_0", "bf16"),
}


def model_export_queue(*, variant: ModelVariant, kind: str, outtype: str = "") -> ModelExport:
    """Queue writing `variant` out: merged into a bf16 copy of its base, that as GGUF of `outtype`, or its adapter
    alone as a GGUF LoRA of `outtype`. A merged export takes no outtype (one given is ignored)."""

    if not variant.adapter_path:
        raise ServiceError(f"“{variant.name}” has no adapter: its base model is already the whole model.")
    if kind not in ModelExport.Kind.values:
        raise ServiceError(f"Unknown export kind {kind!r}.")
    if kind == ModelExport.Kind.MERGED:
        outtype = ""
    elif outtype not in OUTTYPES[ModelExport.Kind(kind)]:
        choices = ", ".join(OUTTYPES[ModelExport.Kind(kind)])
        label = ModelExport.Kind(kind).label
        raise ServiceError(f"A “{label}” export is written as one of {choices}, not {outtype or 'nothing'}.")
    with transaction.atomic():
        export = ModelExport.objects.create(variant=variant, kind=kind, outtype=outtype)
        job_send_on_commit(task=export_model_task, job=export)
    return export


def model_export_run(*, export_id: int) -> None:
    """Write a variant out: its adapter merged into a bf16 copy of its base (reused by later exports of the
    variant), optionally that as GGUF; or the adapter alone as a GGUF LoRA. The export's path names the result."""
    from training.export import export_gguf, export_lora_gguf, merge_adapter

    if not job_start(model=ModelExport, job_id=export_id):
        return
    export = ModelExport.objects.select_related("variant").get(pk=export_id)
    variant = export.variant
    folder = _exports_dir() / f"variant-{variant.pk}"
    # The variant's adapter and base may have been written on another machine: fetched first.
    adapter, base = model_source(variant.adapter_path), model_source(variant.base_model)
    if export.kind == ModelExport.Kind.LORA_GGUF:
        out = folder / f"variant-{variant.pk}-lora-{export.outtype}.gguf"
        path = export_lora_gguf(adapter, base, out, outtype=export.outtype)
    else:
        merged = folder / "merged-bf16"
        if not (merged / "config.json").exists():
            merge_adapter(base, adapter, merged)
        path = merged
        if export.kind == ModelExport.Kind.GGUF:
            path = export_gguf(merged, folder / f"variant-{variant.pk}-{export.outtype}.gguf", outtype=export.outtype)
    # Published before the export is marked finished, for the web process that sends it, on whichever machine.
    job_finish(model=ModelExport, job_id=export_id, path=artifact_publish(path))


def _exports_dir() -> Path:
    return Path(settings.ARTIFACTS_DIR) / "exports"
