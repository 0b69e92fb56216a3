"""Researcher pages beside the statistics page: statistics snapshots and the campaign's answers."""

from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from evaluator.errors import ServiceError
from evaluator.forms import (
    StatisticsFilterForm,
    form_errors,
)
from evaluator.models import (
    Campaign,
    JobStatus,
    StatisticsSnapshot,
    any_unfinished,
)
from evaluator.roles import ADMIN, RESEARCHER, AuthenticatedHttpRequest, role_required
from evaluator.selectors.campaigns import (
    VoteFilters,
    campaign_answers_page,
    campaign_list_with_counts,
    campaign_progress,
    statistics_snapshots_recent,
)
from evaluator.selectors.judges import judges_of_campaign
from evaluator.selectors.reports import statistics_report
from evaluator.services import accounts
from evaluator.services.snapshots import statistics_snapshot_queue


@require_POST
@role_required(RESEARCHER, ADMIN)
def statistics_snapshot_create(request: AuthenticatedHttpRequest, campaign_id: int) -> HttpResponse:
    """Queue a snapshot of the statistics under the filters the page was showing (posted as the filter form)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    page = reverse("stats_campaign", args=[campaign.pk])
    form = StatisticsFilterForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"No snapshot saved. {form_errors(form)}")
        return redirect(page)
    try:
        snapshot = statistics_snapshot_queue(
            campaign=campaign, filters=form.vote_filters(), prompt_level=form.prompt_level(), created_by=request.user
        )
    except ServiceError as error:
        messages.error(request, f"No snapshot saved. {error}")
        return redirect(page)
    messages.success(request, f"Snapshot #{snapshot.pk} queued; it is listed below with its download once built.")
    query = urlencode({name: form.data[name] for name in form.fields if form.data.get(name)})
    return redirect(f"{page}?{query}" if query else page)


@require_GET
@role_required(RESEARCHER, ADMIN)
def statistics_snapshots_live(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The campaign's snapshots, polled by the statistics page while one is being built; 286 stops the polling."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    snapshots = statistics_snapshots_recent(campaign=campaign)
    pending = any_unfinished(snapshots)
    context = {"campaign": campaign, "snapshots": snapshots}
    return render(request, "stats/_snapshots.html", context, status=200 if pending else 286)


@require_GET
@role_required(RESEARCHER, ADMIN)
def statistics_snapshot_download(request: HttpRequest, campaign_id: int, snapshot_id: int) -> HttpResponse:
    """A built snapshot's JSON, byte for byte as stored (its SHA-256 is on the statistics page)."""
    snapshot = get_object_or_404(
        StatisticsSnapshot.objects.select_related("campaign"), pk=snapshot_id, campaign_id=campaign_id
    )
    if snapshot.status != JobStatus.SUCCEEDED:
        return HttpResponse(
            f"Snapshot #{snapshot.pk} is {snapshot.get_status_display().lower()}: it has no JSON to download.",
            status=409,
            content_type="text/plain; charset=utf-8",
        )
    response = HttpResponse(snapshot.payload.encode(), content_type="application/json")
    filename = f"{slugify(snapshot.campaign.name) or 'campaign'}-statistics-snapshot-{snapshot.pk}.json"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_GET
@role_required(RESEARCHER, ADMIN)
def campaign_answers(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Every answer of the campaign with its prompt, variant, sample and retrieved passages, a page at a time."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    page = campaign_answers_page(campaign=campaign, page_number=request.GET.get("page"))
    return render(request, "stats/answers.html", {"campaign": campaign, "page": page})


# Researchers -----------------------------------------------------------------------------------------------


@require_GET
@role_required(RESEARCHER, ADMIN)
def stats_index(request: HttpRequest) -> HttpResponse:
    return render(request, "stats/index.html", {"campaigns": campaign_list_with_counts()})


@require_POST
@role_required(RESEARCHER, ADMIN)
def api_token_rotate(request: AuthenticatedHttpRequest) -> HttpResponse:
    token = accounts.api_token_rotate(user=request.user)
    messages.success(request, f"Your new API token: {token} — copy it now; it replaces the old one.")
    return redirect("stats_index")


@require_GET
@role_required(RESEARCHER, ADMIN)
def stats_campaign(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = StatisticsFilterForm(request.GET or None)
    filters, prompt_level = (form.vote_filters(), form.prompt_level()) if form.is_valid() else (VoteFilters(), False)
    context = {
        "campaign": campaign,
        "form": form,
        "report": statistics_report(campaign=campaign, filters=filters, prompt_level=prompt_level),
        "progress": campaign_progress(campaign=campaign),
        "snapshots": statistics_snapshots_recent(campaign=campaign),
        # The judges a DPO download may ask for (templates/stats/_dpo_judge_export.html).
        "dpo_judges": judges_of_campaign(campaign=campaign),
    }
    return render(request, "stats/campaign.html", context, status=400 if form.errors else 200)
