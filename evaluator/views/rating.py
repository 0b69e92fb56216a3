"""The annotator's pages: the home redirect, the rating page and its actions."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from evaluator.errors import QualificationDue, ServiceError
from evaluator.forms import (
    AnswerFlagForm,
    RatingForm,
    SkipForm,
    form_errors,
)
from evaluator.models import AnswerFlag, Assignment, Campaign
from evaluator.roles import ADMIN, ANNOTATOR, RESEARCHER, AuthenticatedHttpRequest, role_required, user_roles
from evaluator.selectors.campaigns import (
    annotator_campaign_progress,
    annotator_campaigns,
    annotator_progress,
    pair_passages,
)
from evaluator.selectors.rating import assignment_with_pair, campaign_is_servable
from evaluator.services.rating import answer_flag, assignment_next, assignment_skip, judgement_submit
from evaluator.views.qualification import qualification_render

# The campaign the annotator picked on the landing page; absent: the next campaign with work, by priority.
PICKED_CAMPAIGN = "prefloop_rating_campaign"


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness, for load balancers and deployment checks: the app process answers. Touches neither database nor
    session nor cache, so it stays up when they are down; readiness is /readyz (views/health.py)."""
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


@require_GET
@role_required(ANNOTATOR)
def rate_campaigns(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The rating landing page: the annotator's active campaigns with their own progress, to pick one from."""
    context = {"campaigns": annotator_campaigns(annotator=request.user), "picked": _picked(request)}
    return render(request, "rating/campaigns.html", context)


@require_POST
@role_required(ANNOTATOR)
def rate_campaign_pick(request: AuthenticatedHttpRequest, campaign_id: int) -> HttpResponse:
    """Rate in one campaign from now on (until it runs out, or "next" is chosen)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    if not campaign_is_servable(campaign_id=campaign.pk, annotator=request.user):
        messages.error(request, f"“{campaign.name}” is not open to you: it is not active or you are not assigned.")
        return redirect("rate_campaigns")
    request.session[PICKED_CAMPAIGN] = campaign.pk
    return redirect("rate")


@require_POST
@role_required(ANNOTATOR)
def rate_next(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Forget the picked campaign: pairs come from the next campaign with work, highest priority first."""
    request.session.pop(PICKED_CAMPAIGN, None)
    return redirect("rate")


def _picked(request: AuthenticatedHttpRequest) -> Campaign | None:
    campaign_id = request.session.get(PICKED_CAMPAIGN)
    return Campaign.objects.filter(pk=campaign_id).first() if isinstance(campaign_id, int) else None


def _render_next(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The annotator's next pair (from the picked campaign, if any), or the done page; only the swappable part
    for an HTMX request."""
    picked = _picked(request)
    try:
        try:
            assignment = assignment_next(annotator=request.user, campaign=picked)
        except QualificationDue:
            raise
        except ServiceError as error:  # the picked campaign was paused, closed or unassigned meanwhile
            messages.info(request, f"{error} Pairs now come from your next campaign with work.")
            request.session.pop(PICKED_CAMPAIGN, None)
            picked = None
            assignment = assignment_next(annotator=request.user)
    except QualificationDue as due:  # the campaign in turn asks for its qualification first: its pairs instead
        return qualification_render(request, due.campaign)
    if assignment is None:
        template = "rating/_done.html" if request.htmx else "rating/done.html"
        context = {
            "progress": annotator_progress(annotator=request.user),
            "picked": picked,
            "campaigns": annotator_campaigns(annotator=request.user),
        }
        return render(request, template, context)
    return _render_assignment(request, assignment, RatingForm(campaign=assignment.comparison.campaign))


def _render_assignment(
    request: AuthenticatedHttpRequest, assignment: Assignment, form: RatingForm, *, skip_form: SkipForm | None = None
) -> HttpResponse:
    # Blind: only texts, the opaque token, screen sides and the campaign's name reach the template; never a model,
    # variant or row id. Whatever is shown beside the answers is shown for the pair, never under one answer: the
    # retrieved passages of either answer, merged, above both (README, "Blind rating").
    comparison = assignment.comparison
    campaign = comparison.campaign
    left, right = comparison.candidate_a, comparison.candidate_b
    if not assignment.left_is_a:
        left, right = right, left
    picked = _picked(request)
    context = {
        "token": assignment.token,
        "campaign_name": campaign.name,
        # The open pair belongs to another campaign than the one picked: say so, it comes first.
        "picked_elsewhere": picked.name if picked is not None and picked.pk != campaign.pk else "",
        "guidelines": campaign.guidelines,
        "guidelines_version": campaign.guidelines_version.number if campaign.guidelines_version else None,
        "prompt": comparison.prompt.text,
        "reference": comparison.prompt.reference if campaign.show_reference else "",
        "prompt_context": comparison.prompt.context if campaign.show_reference else "",
        "passages": pair_passages(left, right) if campaign.show_retrieved else [],
        "answers": [{"side": side, "text": candidate.text} for side, candidate in (("left", left), ("right", right))],
        "form": form,
        "skip_form": skip_form or SkipForm(),
        "flag_reasons": AnswerFlag.Reason.choices,
        "progress": annotator_campaign_progress(
            annotator=request.user, campaign=campaign, done=assignment.rated_in_campaign
        ),
    }
    template = "rating/_pair.html" if request.htmx else "rating/rate.html"
    failed = form.errors or (skip_form is not None and skip_form.errors)
    return render(request, template, context, status=400 if failed else 200)


def _assignment_of(request: AuthenticatedHttpRequest, token: str) -> Assignment:
    """The request user's assignment with everything the pair page shows; 404 unknown, 403 someone else's."""
    assignment = assignment_with_pair(token=token)
    if assignment is None:
        raise Http404("No such pair.")
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
            token=token,
            annotator=request.user,
            choices=form.choices(),
            rationale=form.cleaned_data["rationale"],
            assignment=assignment,
        )
    except ServiceError as error:
        messages.error(request, str(error))
        # The refusal says why already; a picked campaign that no longer serves is quietly let go.
        picked = _picked(request)
        if picked is not None and not campaign_is_servable(campaign_id=picked.pk, annotator=request.user):
            request.session.pop(PICKED_CAMPAIGN, None)
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
