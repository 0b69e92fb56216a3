"""Admin pages for the model side: retrain jobs (queue, watch, cancel, resume), the variants' family tree and
exports, and the document collections of retrieval variants."""

import json
from collections.abc import Mapping
from typing import Any

from django.contrib import messages
from django.db.models import Count
from django.db.models.functions import Length
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evaluator.errors import ServiceError
from evaluator.forms import CollectionForm, DocumentUploadForm, ModelExportForm, RetrainForm, form_errors
from evaluator.models import AWAITING_BROKER_NOTE, Campaign, DocumentCollection, ModelExport, ModelVariant, TrainingJob
from evaluator.roles import ADMIN, AuthenticatedHttpRequest, role_required
from evaluator.selectors.campaigns import decisive_vote_count
from evaluator.selectors.model_exports import model_export_download
from evaluator.selectors.qa_sets import qa_set_sft_jsonl
from evaluator.selectors.training import (
    LOSS_LABEL,
    held_out_prompt_count,
    round_power,
    training_job_live,
    variant_family_tree,
)
from evaluator.services import collections as collections_services
from evaluator.services import training_jobs
from evaluator.services.collections import documents_add
from evaluator.services.model_exports import model_export_queue
from evaluator.services.training_jobs import held_out_prompts_draw, qa_file_store, training_job_queue
from evaluator.stats.plots import line_chart, small_multiples


@require_http_methods(["GET", "POST"])
@role_required(ADMIN)
def training_queue(request: AuthenticatedHttpRequest, campaign_id: int) -> HttpResponse:
    """The retrain page: its form in labelled groups; a refused form comes back with its values and errors."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    if request.method == "GET":
        return _retrain_page(request, campaign, RetrainForm(campaign=campaign))
    form = RetrainForm(request.POST, request.FILES, campaign=campaign)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return _retrain_page(request, campaign, form)
    data = form.cleaned_data
    held_out = data["held_out_ids"] or held_out_prompts_draw(
        campaign=campaign, share=data["held_out_share"], seed=data["seed"]
    )
    try:
        qa_path = ""
        if data["qa_file"]:
            qa_path = qa_file_store(name=data["qa_file"].name, data=data["qa_file"].read())
        elif data["qa_set"]:
            qa_path = qa_file_store(name=str(data["qa_set"]), data=qa_set_sft_jsonl(qa_set=data["qa_set"]))
        job = training_job_queue(
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
    except (ServiceError, ValueError) as error:
        messages.error(request, str(error))
        return _retrain_page(request, campaign, form)
    if job.send_failed:
        messages.warning(request, f"{job} {AWAITING_BROKER_NOTE}")
    else:
        messages.success(request, f"{job.get_method_display()} job #{job.pk} queued.")
    return redirect("training_job_detail", job_id=job.pk)


def _retrain_page(request: HttpRequest, campaign: Campaign, form: RetrainForm) -> HttpResponse:
    context = {
        "campaign": campaign,
        "form": form,
        "decisive_votes": decisive_vote_count(campaign=campaign),
        **_round_power_context(campaign, form.data if form.is_bound else {}),
    }
    return render(request, "manage/retrain.html", context)


@require_GET
@role_required(ADMIN)
def retrain_power(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The retrain page's power estimate for the round it would start, refreshed as the held-out prompts or the
    parent change."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    context = {"campaign": campaign, **_round_power_context(campaign, request.GET)}
    return render(request, "manage/_round_power.html", context)


def _round_power_context(campaign: Campaign, data: Mapping[str, Any]) -> dict[str, Any]:
    """The power of the round the retrain form's values would start; unreadable values count as the defaults
    (the form itself reports them)."""
    ids = {line.strip() for line in str(data.get("held_out_ids") or "").splitlines() if line.strip()}
    try:
        share = float(data.get("held_out_share") or RetrainForm.base_fields["held_out_share"].initial)
    except ValueError:
        share = float(RetrainForm.base_fields["held_out_share"].initial)
    held_out = len(ids) or held_out_prompt_count(total=campaign.prompts.count(), share=share)
    parent_id = str(data.get("parent_variant") or "")
    parent = ModelVariant.objects.filter(pk=parent_id).first() if parent_id.isdigit() else None
    return {"power": round_power(campaign=campaign, held_out=held_out, parent=parent), "held_out": held_out}


@require_GET
@role_required(ADMIN)
def training_job_detail(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    """The job page; an HTMX poll gets only its live part, which stops polling once the job has ended."""
    job = get_object_or_404(
        TrainingJob.objects.select_related("campaign", "parent_variant", "result_variant"), pk=job_id
    )
    live = training_job_live(job=job)
    context = {
        "job": job,
        "live": live,
        **_metric_charts(job, live["series"]),
        "config_json": json.dumps(job.config, indent=2, sort_keys=True),
        "sources": job.source_campaigns.all(),
    }
    if request.htmx:
        # 286 tells htmx to stop polling: an ended job changes no more.
        return render(request, "manage/_training_job_live.html", context, status=200 if live["running"] else 286)
    return render(request, "manage/training_job.html", context)


def _metric_charts(job: TrainingJob, series: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    """The loss on a chart of its own; every other metric (the DPO rewards, margins and accuracy) in a small
    chart with its own y-axis: on one shared axis, accuracy's 0–1 flattened the rewards and the loss."""
    others = {name: points for name, points in series.items() if name != LOSS_LABEL}
    return {
        "loss_chart": line_chart(
            {LOSS_LABEL: series.get(LOSS_LABEL, [])}, title=f"{job}: training loss", x_label="step"
        ),
        "metric_charts": small_multiples(others, title=str(job), x_label="step"),
    }


@require_POST
@role_required(ADMIN)
def training_job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(TrainingJob, pk=job_id)
    try:
        job = training_jobs.training_job_cancel(job=job)
    except ServiceError as error:
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
        job = training_jobs.training_job_resume(job=job)
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        if job.send_failed:
            messages.warning(request, f"{job} {AWAITING_BROKER_NOTE}")
        else:
            messages.success(request, f"Job #{job.pk} queued again; it goes on from its newest checkpoint.")
    return redirect("training_job_detail", job_id=job_id)


@require_GET
@role_required(ADMIN)
def variant_tree(request: HttpRequest) -> HttpResponse:
    """The family tree of the variants in use, then the archived ones (kept with their data, offered nowhere)."""
    rows = variant_family_tree()
    context = {
        "rows": [row for row in rows if row.variant.archived_at is None],
        "archived_rows": [row for row in rows if row.variant.archived_at is not None],
        "archived_ids": {row.variant.pk for row in rows if row.variant.archived_at is not None},
    }
    return render(request, "manage/variants.html", context)


@require_POST
@role_required(ADMIN)
def variant_export(request: HttpRequest, variant_id: int) -> HttpResponse:
    variant = get_object_or_404(ModelVariant, pk=variant_id)
    if variant.archived_at is not None:
        messages.error(request, f"“{variant.name}” is archived: unarchive it to export it.")
        return redirect("variant_tree")
    form = ModelExportForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("variant_tree")
    try:
        export = model_export_queue(
            variant=variant, kind=form.cleaned_data["kind"], outtype=form.cleaned_data["outtype"]
        )
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        kind = " ".join(filter(None, [export.get_kind_display(), export.outtype]))
        if export.send_failed:
            messages.warning(request, f"The {kind} export of “{variant.name}” {AWAITING_BROKER_NOTE}")
        else:
            messages.success(request, f"{kind} export of “{variant.name}” queued.")
    return redirect("variant_tree")


@require_GET
@role_required(ADMIN)
def variant_export_download(request: HttpRequest, export_id: int) -> HttpResponse | StreamingHttpResponse:
    """A finished export as an attachment, streamed: a GGUF file as it is, a merged folder as a zip; with an
    artifact store, a GGUF file comes from the store (a redirect to a presigned URL)."""
    export = get_object_or_404(ModelExport.objects.select_related("variant"), pk=export_id)
    download = model_export_download(export=export)
    if download is None:
        raise Http404("This export has not succeeded, or its file is gone.")
    if download.url:
        return redirect(download.url)
    if download.is_folder:
        response = StreamingHttpResponse(download.zip_stream(), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
        return response
    return FileResponse(download.path.open("rb"), as_attachment=True, filename=download.filename)


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
        collection = collections_services.collection_create(**form.cleaned_data)
    except ServiceError as error:
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
        added = documents_add(collection=collection, files=files)
    except ServiceError as error:
        messages.error(request, f"{error} Nothing was added.")
    else:
        messages.success(
            request,
            f"Stored {added} file{'s' if added != 1 else ''}: a worker reads and indexes them (the status below says "
            "when; a file it cannot read, or one past the reading caps, fails the build with the reason).",
        )
        if added and collection.send_failed:
            messages.warning(request, f"Indexing of “{collection.name}” {AWAITING_BROKER_NOTE}")
    return redirect("collection_detail", collection_id=collection.pk)
