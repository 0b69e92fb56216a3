"""Review and adjudication pages, for researchers and admins: flagged answers and skipped pairs to resolve or
dismiss, and the queue of comparisons whose judgements disagree, each given a final outcome per criterion."""

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from evaluator.errors import ServiceError
from evaluator.forms import (
    AdjudicationForm,
    AdjudicationQueueForm,
    ReviewDecisionForm,
    ReviewFilterForm,
    form_errors,
)
from evaluator.models import AnswerFlag, Assignment, Campaign
from evaluator.roles import ADMIN, RESEARCHER, AuthenticatedHttpRequest, role_required
from evaluator.selectors.exports import CONTENT_TYPES
from evaluator.selectors.review import (
    ADJUDICATION_RULES,
    REVIEW_FORMATS,
    AdjudicationRule,
    ReviewFilters,
    adjudication_queue_page,
    comparison_adjudications,
    comparison_for_review,
    comparison_judgements,
    review_item_flag,
    review_item_skip,
    review_items_export,
    review_items_page,
    review_open_counts,
)
from evaluator.services.review import answer_flag_resolve, comparison_adjudicate, skipped_pair_resolve


@require_GET
@role_required(RESEARCHER, ADMIN)
def review_index(request: HttpRequest) -> HttpResponse:
    """Flagged answers and skipped pairs with their reasons, filtered, newest first, a page at a time."""
    form = ReviewFilterForm(request.GET or None)
    filters = ReviewFilters()
    if form.is_valid():
        data = form.cleaned_data
        filters = ReviewFilters(
            campaign_id=data["campaign"].pk if data.get("campaign") else None,
            kind=data.get("kind") or None,
            reason=data.get("reason") or None,
            state=data.get("state") or "open",
        )
    context = {
        "form": form,
        "page": review_items_page(filters=filters, page_number=request.GET.get("page")),
        "open_counts": review_open_counts(),
        "campaigns": Campaign.objects.order_by("-created_at"),
        "query": _query_without_page(request),
    }
    return render(request, "review/index.html", context, status=400 if form.errors else 200)


def _query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def _decided(request: AuthenticatedHttpRequest, row: dict[str, object], error: str | None) -> HttpResponse:
    """After a decision: the item's row (an HTMX request swaps it in place), or back to the page it came from."""
    back = request.POST.get("next", "")
    back = back if back.startswith("/review/") and "/decide/" not in back else reverse("review_index")
    if request.htmx:
        context = {"row": row, "error": error, "next": back}
        return render(request, "review/_item.html", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, "Decision recorded.")
    return redirect(back)


def _decision_record(request: HttpRequest, resolve: Callable[[dict[str, Any]], object]) -> str | None:
    """Validate the posted decision and hand it to `resolve`; the message to show when nothing was recorded."""
    form = ReviewDecisionForm(request.POST)
    if not form.is_valid():
        return f"Nothing recorded. {form_errors(form)}"
    try:
        resolve(form.cleaned_data)
    except ServiceError as refused:
        return str(refused)
    return None


@require_POST
@role_required(RESEARCHER, ADMIN)
def review_flag_decide(request: AuthenticatedHttpRequest, flag_id: int) -> HttpResponse:
    flag = get_object_or_404(AnswerFlag, pk=flag_id)
    error = _decision_record(request, lambda decision: answer_flag_resolve(flag=flag, by=request.user, **decision))
    return _decided(request, {"kind": "flag", "item": review_item_flag(flag_id=flag.pk)}, error)


@require_POST
@role_required(RESEARCHER, ADMIN)
def review_skip_decide(request: AuthenticatedHttpRequest, assignment_id: int) -> HttpResponse:
    assignment = get_object_or_404(Assignment, pk=assignment_id, skipped_at__isnull=False)
    error = _decision_record(
        request, lambda decision: skipped_pair_resolve(assignment=assignment, by=request.user, **decision)
    )
    return _decided(request, {"kind": "skip", "item": review_item_skip(assignment_id=assignment.pk)}, error)


@require_GET
@role_required(RESEARCHER, ADMIN)
def review_items_download(request: HttpRequest, campaign_id: int, file_format: str) -> HttpResponseBase:
    """The campaign's flagged answers and skipped pairs with their reasons and decisions (docs/formats.md)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    if file_format not in REVIEW_FORMATS:
        return HttpResponseBadRequest(
            f"Unknown format {file_format!r}: use one of {', '.join(REVIEW_FORMATS)}.",
            content_type="text/plain; charset=utf-8",
        )
    response = StreamingHttpResponse(
        review_items_export(campaign=campaign, file_format=file_format), content_type=CONTENT_TYPES[file_format]
    )
    filename = f"{slugify(campaign.name) or 'campaign'}-review.{file_format}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# Adjudication ------------------------------------------------------------------------------------------------


@require_GET
@role_required(RESEARCHER, ADMIN)
def adjudication_queue(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The campaign's comparisons whose judgements disagree under the chosen rule, awaiting a final outcome."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = AdjudicationQueueForm(request.GET or None, campaign=campaign)
    rule, shown = AdjudicationRule(), "pending"
    if form.is_valid():
        rule, shown = form.adjudication_rule(), form.cleaned_data.get("shown") or "pending"
    context = {
        "campaign": campaign,
        "form": form,
        "rule": rule,
        "rule_label": ADJUDICATION_RULES[rule.rule],
        "page": adjudication_queue_page(campaign=campaign, rule=rule, shown=shown, page_number=request.GET.get("page")),
        "labels": _labels(campaign),
        "query": _query_without_page(request),
    }
    return render(request, "review/adjudication.html", context, status=400 if form.errors else 200)


def _labels(campaign: Campaign) -> dict[str, str]:
    return {c["slug"]: c.get("label") or c["slug"] for c in campaign.criteria} | {"overall": "Overall"}


def _comparison_page(
    request: HttpRequest, campaign: Campaign, comparison_id: int, form: AdjudicationForm | None = None
) -> HttpResponse:
    comparison = comparison_for_review(campaign=campaign, comparison_id=comparison_id)
    if comparison is None:
        raise Http404("No such comparison in this campaign.")
    adjudications = comparison_adjudications(comparison=comparison)
    names = (comparison.variant_a.name, comparison.variant_b.name)
    if form is None:
        form = AdjudicationForm(campaign=campaign, names=names, decided=adjudications)
    context = {
        "campaign": campaign,
        "comparison": comparison,
        "judgements": comparison_judgements(comparison=comparison),
        "adjudications": [adjudications[slug] for slug in campaign.criterion_slugs if slug in adjudications],
        "labels": _labels(campaign),
        "criteria": campaign.criterion_slugs,
        "form": form,
    }
    return render(request, "review/comparison.html", context, status=400 if form.errors else 200)


@require_GET
@role_required(RESEARCHER, ADMIN)
def comparison_review(request: HttpRequest, campaign_id: int, comparison_id: int) -> HttpResponse:
    """One comparison: its answers, every judgement with its choices, flags and rationale, and the adjudication."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    return _comparison_page(request, campaign, comparison_id)


@require_POST
@role_required(RESEARCHER, ADMIN)
def adjudication_record(request: AuthenticatedHttpRequest, campaign_id: int, comparison_id: int) -> HttpResponse:
    """Record the final outcomes chosen on the comparison's page; a refusal comes back on that page."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    comparison = comparison_for_review(campaign=campaign, comparison_id=comparison_id)
    if comparison is None:
        raise Http404("No such comparison in this campaign.")
    names = (comparison.variant_a.name, comparison.variant_b.name)
    # Every criterion is read, those decided since the form was shown too: the service then says who decided.
    form = AdjudicationForm(request.POST, campaign=campaign, names=names)
    page = reverse("comparison_review", args=[campaign.pk, comparison.pk])
    if not form.is_valid():
        messages.error(request, f"Nothing recorded. {form_errors(form)}")
        return redirect(page)
    try:
        recorded = comparison_adjudicate(
            comparison=comparison, outcomes=form.outcomes(), note=form.cleaned_data["note"], by=request.user
        )
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect(page)
    labels = _labels(campaign)
    messages.success(
        request,
        f"Recorded the final outcome of {', '.join(labels.get(row.criterion, row.criterion) for row in recorded)}.",
    )
    return redirect(page)
