"""Admin pages for Q&A sets: start one from a collection and a model, review its pairs beside their chunks, add the
approved ones to a campaign as prompts, download them as SFT data."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from evaluator.errors import ServiceError
from evaluator.forms import QAPairReviewForm, QASetForm, QAToCampaignForm, form_errors
from evaluator.models import FINISHED_STATUSES, QAPair, QASet
from evaluator.roles import ADMIN, AuthenticatedHttpRequest, role_required
from evaluator.selectors.qa_sets import (
    STATUS_FILTERS,
    qa_pairs_page,
    qa_set_sft_jsonl,
    qa_set_status_counts,
    qa_sets_with_counts,
)
from evaluator.services.qa_sets import qa_pair_review, qa_pairs_to_prompts, qa_set_queue


@require_GET
@role_required(ADMIN)
def qa_sets(request: HttpRequest) -> HttpResponse:
    return render(request, "qa/index.html", {"qa_sets": qa_sets_with_counts(), "form": QASetForm()})


@require_POST
@role_required(ADMIN)
def qa_set_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = QASetForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("qa_sets")
    try:
        qa_set = qa_set_queue(**form.cleaned_data, created_by=request.user)
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect("qa_sets")
    messages.success(request, f"{qa_set} queued: {qa_set.pairs_per_chunk} pairs asked of each chunk.")
    return redirect("qa_set_detail", qa_set_id=qa_set.pk)


@require_GET
@role_required(ADMIN)
def qa_set_detail(request: AuthenticatedHttpRequest, qa_set_id: int) -> HttpResponse:
    """The review page; an HTMX poll gets only the job's progress, and 286 (stop polling) once the job has ended."""
    qa_set = get_object_or_404(QASet.objects.select_related("collection", "variant", "created_by"), pk=qa_set_id)
    running = qa_set.status not in FINISHED_STATUSES
    if request.htmx:
        context = {"qa_set": qa_set, "running": running}
        return render(request, "qa/_progress.html", context, status=200 if running else 286)
    status = request.GET.get("status", QAPair.Status.PENDING)
    if status not in STATUS_FILTERS:
        status = QAPair.Status.PENDING
    context = {
        "qa_set": qa_set,
        "running": running,
        "status": status,
        "filters": STATUS_FILTERS,
        "counts": qa_set_status_counts(qa_set=qa_set),
        "page": qa_pairs_page(qa_set=qa_set, status=status, page_number=request.GET.get("page")),
        "campaign_form": QAToCampaignForm(),
    }
    return render(request, "qa/detail.html", context)


@require_POST
@role_required(ADMIN)
def qa_pair_update(request: AuthenticatedHttpRequest, qa_set_id: int, pair_id: int) -> HttpResponse:
    """Save a pair's review; with HTMX the answer is the pair's card as it now stands (its form with the errors
    when refused)."""
    pair = get_object_or_404(QAPair.objects.select_related("reviewed_by"), pk=pair_id, qa_set_id=qa_set_id)
    form = QAPairReviewForm(request.POST)
    error = form_errors(form) if not form.is_valid() else ""
    if not error:
        try:
            pair = qa_pair_review(pair=pair, **form.cleaned_data, by=request.user)
        except ServiceError as refused:
            error = str(refused)
    if request.htmx:
        context = {"pair": pair, "form": form if error else None, "error": error, "status": request.POST.get("filter")}
        return render(request, "qa/_pair.html", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Pair {pair.pk} saved as {pair.get_status_display().lower()}.")
    back = request.POST.get("filter", "")
    query = f"?status={back}" if back in STATUS_FILTERS else ""
    return redirect(reverse("qa_set_detail", args=[qa_set_id]) + query + f"#pair-{pair.pk}")


@require_POST
@role_required(ADMIN)
def qa_set_to_campaign(request: HttpRequest, qa_set_id: int) -> HttpResponse:
    qa_set = get_object_or_404(QASet, pk=qa_set_id)
    form = QAToCampaignForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("qa_set_detail", qa_set_id=qa_set.pk)
    campaign = form.cleaned_data["campaign"]
    try:
        added = qa_pairs_to_prompts(qa_set=qa_set, campaign=campaign)
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect("qa_set_detail", qa_set_id=qa_set.pk)
    messages.success(request, f"Added {added} prompt{'s' if added != 1 else ''} with reference answers.")
    return redirect("campaign_detail", campaign_id=campaign.pk)


@require_GET
@role_required(ADMIN)
def qa_set_download(request: HttpRequest, qa_set_id: int) -> HttpResponse:
    """The approved pairs as the Q&A JSONL that SFT jobs and `python -m training.sft` read."""
    qa_set = get_object_or_404(QASet, pk=qa_set_id)
    data = qa_set_sft_jsonl(qa_set=qa_set)
    if not data:
        message = f"{qa_set} has no approved pairs yet: there is nothing to download."
        return HttpResponse(message, status=409, content_type="text/plain; charset=utf-8")
    response = HttpResponse(data, content_type="application/jsonl; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="qa-set-{qa_set.pk}-approved.jsonl"'
    return response
