"""Admin pages for the model side: retrain jobs (queue, watch, cancel, resume), the variants' family tree and
exports, and the document collections of retrieval variants."""

import json
import uuid
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.db.models import Count
from django.db.models.functions import Length
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from evaluator import retrieval, services, training_selectors
from evaluator.forms import CollectionForm, DocumentUploadForm, RetrainForm
from evaluator.jobs import held_out_prompts_draw
from evaluator.models import Campaign, DocumentCollection, ModelVariant, TrainingJob
from evaluator.plots import line_chart
from evaluator.roles import ADMIN, role_required
from evaluator.views import form_errors


@require_POST
@role_required(ADMIN)
def training_queue(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = RetrainForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    data = form.cleaned_data
    held_out = data["held_out_ids"] or held_out_prompts_draw(
        campaign=campaign, share=data["held_out_share"], seed=data["seed"]
    )
    try:
        qa_path = _qa_file_store(data["qa_file"].name, data["qa_file"].read()) if data["qa_file"] else ""
        job = services.training_job_queue(
            campaign=campaign,
            parent_variant=data["parent_variant"],
            method=data["method"],
            training=form.training(),
            selection=form.selection(),
            source_campaigns=list(data["source_campaigns"]),
            held_out_prompts=held_out,
            sft_source=data["sft_source"],
            qa_path=qa_path,
            created_by=request.user,
        )
    except (services.ServiceError, ValueError) as error:
        messages.error(request, str(error))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    messages.success(request, f"{job.get_method_display()} job #{job.pk} queued.")
    return redirect("training_job_detail", job_id=job.pk)


def _qa_file_store(name: str, data: bytes) -> str:
    """Check an uploaded Q&A set and keep it in the shared artifacts folder, where every worker can read it."""
    from training.sft import sft_records_from_qa

    folder = Path(settings.ARTIFACTS_DIR) / "qa-uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.jsonl"
    path.write_bytes(data)
    try:
        sft_records_from_qa(path)
    except ValueError as error:
        path.unlink()
        # The message names the stored copy; the admin knows the file by its own name.
        raise ValueError(f"Q&A file {str(error).replace(str(path), name)}") from None
    return str(path)


@require_GET
@role_required(ADMIN)
def training_job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """The job page; an HTMX poll gets only its live part, which stops polling once the job has ended."""
    job = get_object_or_404(
        TrainingJob.objects.select_related("campaign", "parent_variant", "result_variant"), pk=job_id
    )
    live = training_selectors.training_job_live(job=job)
    context = {
        "job": job,
        "live": live,
        "chart": line_chart(live["series"], title=f"{job} metrics", x_label="step"),
        "config_json": json.dumps(job.config, indent=2, sort_keys=True),
        "sources": job.source_campaigns.all(),
    }
    if request.htmx:
        # 286 tells htmx to stop polling: an ended job changes no more.
        return render(request, "manage/_training_job_live.html", context, status=200 if live["running"] else 286)
    return render(request, "manage/training_job.html", context)


@require_POST
@role_required(ADMIN)
def training_job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(TrainingJob, pk=job_id)
    try:
        job = services.training_job_cancel(job=job)
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        done = job.status == "cancelled"
        messages.success(request, f"Job #{job.pk} {'cancelled' if done else 'stops after its current step'}.")
    return redirect("training_job_detail", job_id=job_id)


@require_POST
@role_required(ADMIN)
def training_job_resume(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(TrainingJob, pk=job_id)
    try:
        services.training_job_resume(job=job)
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Job #{job.pk} queued again; it goes on from its newest checkpoint.")
    return redirect("training_job_detail", job_id=job_id)


@require_GET
@role_required(ADMIN)
def variant_tree(request: HttpRequest) -> HttpResponse:
    return render(request, "manage/variants.html", {"rows": training_selectors.variant_family_tree()})


@require_POST
@role_required(ADMIN)
def variant_export(request: HttpRequest, variant_id: int) -> HttpResponse:
    variant = get_object_or_404(ModelVariant, pk=variant_id)
    try:
        export = services.model_export_queue(variant=variant, kind=request.POST.get("kind", ""))
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{export.get_kind_display()} export of “{variant.name}” queued.")
    return redirect("variant_tree")


# Document collections for retrieval variants ---------------------------------------------------------------


@require_GET
@role_required(ADMIN)
def collections(request: HttpRequest) -> HttpResponse:
    context = {
        "collections": DocumentCollection.objects.annotate(document_count=Count("documents")),
        "form": CollectionForm(),
    }
    return render(request, "manage/collections.html", context)


@require_POST
@role_required(ADMIN)
def collection_create(request: HttpRequest) -> HttpResponse:
    form = CollectionForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("collections")
    try:
        collection = retrieval.collection_create(**form.cleaned_data)
    except services.ServiceError as error:
        messages.error(request, str(error))
        return redirect("collections")
    messages.success(request, f"Collection “{collection.name}” created: add its documents.")
    return redirect("collection_detail", collection_id=collection.pk)


@require_GET
@role_required(ADMIN)
def collection_detail(request: HttpRequest, collection_id: int) -> HttpResponse:
    collection = get_object_or_404(DocumentCollection, pk=collection_id)
    context = {
        "collection": collection,
        "documents": collection.documents.annotate(length=Length("text")).defer("text"),
        "form": DocumentUploadForm(),
    }
    return render(request, "manage/collection.html", context)


@require_POST
@role_required(ADMIN)
def collection_upload(request: HttpRequest, collection_id: int) -> HttpResponse:
    collection = get_object_or_404(DocumentCollection, pk=collection_id)
    form = DocumentUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("collection_detail", collection_id=collection.pk)
    files = [(upload.name, upload.read()) for upload in form.cleaned_data["files"]]
    try:
        added = retrieval.documents_add(collection=collection, files=files)
    except services.ServiceError as error:
        messages.error(request, f"{error} Nothing was added.")
    else:
        skipped = len(files) - added
        note = f" ({skipped} already in the collection)" if skipped else ""
        messages.success(request, f"Added {added} document{'s' if added != 1 else ''}{note}; indexing queued.")
    return redirect("collection_detail", collection_id=collection.pk)
