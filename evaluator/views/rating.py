"""The annotator's pages: the home redirect, the rating page and its actions."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from evaluator.errors import ServiceError
from evaluator.forms import (
    AnswerFlagForm,
    RatingForm,
    SkipForm,
    form_errors,
)
from evaluator.models import AnswerFlag, Assignment, Candidate
from evaluator.roles import ADMIN, ANNOTATOR, RESEARCHER, AuthenticatedHttpRequest, role_required, user_roles
from evaluator.selectors.campaigns import (
    annotator_campaign_progress,
    annotator_progress,
    retrieved_passages,
)
from evaluator.services.rating import answer_flag, assignment_next, assignment_skip, judgement_submit


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """For load balancers and deployment checks: the app process answers. Touches neither database nor session."""
    return HttpResponse("ok", content_type="text/plain")


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("login")
    roles = user_roles(request.user)
    for role, target in ((ADMIN, "manage"), (RESEARCHER, "stats_index"), (ANNOTATOR, "rate")):
        if role in roles:
            return redirect(target)
    raise PermissionDenied


# Annotators ------------------------------------------------------------------------------------------------


@require_GET
@role_required(ANNOTATOR)
def rate(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _render_next(request)


def _render_next(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The annotator's next pair, or the done page; only the swappable part for an HTMX request."""
    assignment = assignment_next(annotator=request.user)
    if assignment is None:
        template = "rating/_done.html" if request.htmx else "rating/done.html"
        return render(request, template, {"progress": annotator_progress(annotator=request.user)})
    return _render_assignment(request, assignment, RatingForm(campaign=assignment.comparison.campaign))


def _render_assignment(
    request: AuthenticatedHttpRequest, assignment: Assignment, form: RatingForm, *, skip_form: SkipForm | None = None
) -> HttpResponse:
    # Blind: only texts, the opaque token and screen sides reach the template; never a model, variant or row id.
    comparison = assignment.comparison
    campaign = comparison.campaign
    left, right = comparison.candidate_a, comparison.candidate_b
    if not assignment.left_is_a:
        left, right = right, left
    context = {
        "token": assignment.token,
        "guidelines": campaign.guidelines,
        "prompt": comparison.prompt.text,
        "reference": comparison.prompt.reference if campaign.show_reference else "",
        "prompt_context": comparison.prompt.context if campaign.show_reference else "",
        "answers": [
            {"side": side, "text": candidate.text, "passages": _passages(candidate) if campaign.show_retrieved else []}
            for side, candidate in (("left", left), ("right", right))
        ],
        "form": form,
        "skip_form": skip_form or SkipForm(),
        "flag_reasons": AnswerFlag.Reason.choices,
        "progress": annotator_campaign_progress(annotator=request.user, campaign=campaign),
    }
    template = "rating/_pair.html" if request.htmx else "rating/rate.html"
    failed = form.errors or (skip_form is not None and skip_form.errors)
    return render(request, template, context, status=400 if failed else 200)


def _passages(candidate: Candidate) -> list[dict[str, str]]:
    """A retrieval answer's passages as document name and text only (no chunk numbers, scores or ids)."""
    return [
        {"document": passage["document"], "text": passage["text"]}
        for passage in retrieved_passages(candidate.retrieved)
    ]


def _assignment_of(request: AuthenticatedHttpRequest, token: str) -> Assignment:
    """The request user's assignment with everything the pair page shows; 404 unknown, 403 someone else's."""
    assignment = get_object_or_404(
        Assignment.objects.select_related(
            "comparison__campaign", "comparison__prompt", "comparison__candidate_a", "comparison__candidate_b"
        ),
        token=token,
    )
    if assignment.annotator_id != request.user.pk:
        raise PermissionDenied
    return assignment


@require_POST
@role_required(ANNOTATOR)
def rate_submit(request: AuthenticatedHttpRequest, token: str) -> HttpResponse:
    assignment = _assignment_of(request, token)
    form = RatingForm(request.POST, campaign=assignment.comparison.campaign)
    if not form.is_valid():
        return _render_assignment(request, assignment, form)
    try:
        judgement_submit(
            token=token, annotator=request.user, choices=form.choices(), rationale=form.cleaned_data["rationale"]
        )
    except ServiceError as error:
        messages.error(request, str(error))
    if request.htmx:
        return _render_next(request)
    return redirect("rate")


@require_POST
@role_required(ANNOTATOR)
def rate_skip(request: AuthenticatedHttpRequest, token: str) -> HttpResponse:
    assignment = _assignment_of(request, token)
    form = SkipForm(request.POST)
    if not form.is_valid():
        if request.htmx:
            return _render_assignment(
                request, assignment, RatingForm(campaign=assignment.comparison.campaign), skip_form=form
            )
        messages.error(request, form_errors(form))
        return redirect("rate")
    try:
        assignment_skip(token=token, annotator=request.user, reason=form.cleaned_data["reason"])
    except ServiceError as error:
        messages.error(request, str(error))
    if request.htmx:
        return _render_next(request)
    return redirect("rate")


@require_POST
@role_required(ANNOTATOR)
def rate_flag(request: AuthenticatedHttpRequest, token: str) -> HttpResponse:
    _assignment_of(request, token)
    form = AnswerFlagForm(request.POST)
    error, reason = "", ""
    if form.is_valid():
        data = form.cleaned_data
        try:
            flag = answer_flag(
                token=token, annotator=request.user, side=data["side"], reason=data["reason"], note=data["note"]
            )
        except ServiceError as failure:
            error = str(failure)
        else:
            reason = flag.get_reason_display()
    else:
        error = form_errors(form)
    if request.htmx:
        # Only the flag form's status line is replaced: the pair and the choices made so far stay as they are.
        return render(request, "rating/_flagged.html", {"error": error, "reason": reason}, status=400 if error else 200)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Thank you: the answer is flagged ({reason}) for review.")
    return redirect("rate")
