"""The qualification phase of a campaign, shown in the rating page's place until the annotator passes it."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from evaluator.errors import ServiceError
from evaluator.forms import QualificationAnswerForm
from evaluator.models import Campaign, QualificationAnswer, QualificationAttempt
from evaluator.roles import ANNOTATOR, AuthenticatedHttpRequest, role_required
from evaluator.selectors.qualification import (
    qualification_answer_shown,
    qualification_answered_count,
    qualification_standing_of,
)
from evaluator.services.qualification import (
    qualification_answer_submit,
    qualification_attempt_start,
    qualification_pair_next,
)


def qualification_render(request: AuthenticatedHttpRequest, campaign: Campaign) -> HttpResponse:
    """The campaign's qualification where the rating page would show a pair: the next item of the attempt under
    way (the first attempt starts here), else where the annotator stands (their last result and a retry)."""
    try:
        answer = qualification_pair_next(campaign=campaign, annotator=request.user)
    except ServiceError as error:  # no items picked yet, or the campaign stopped serving meanwhile
        messages.error(request, str(error))
        answer = None
    if answer is None:
        standing = qualification_standing_of(campaign=campaign, annotator=request.user)
        return _render(request, {"campaign": campaign, "standing": standing})
    return _render_item(request, answer, QualificationAnswerForm())


def _render_item(
    request: AuthenticatedHttpRequest, answer: QualificationAnswer, form: QualificationAnswerForm
) -> HttpResponse:
    # Blind as any pair: texts, the opaque token and screen sides only; never the gold outcome nor a model.
    attempt = answer.attempt
    campaign = attempt.campaign
    comparison = answer.comparison
    left, right = comparison.candidate_a, comparison.candidate_b
    if not answer.left_is_a:
        left, right = right, left
    context = {
        "campaign": campaign,
        "token": answer.token,
        "attempt": attempt,
        "item": qualification_answered_count(attempt_id=attempt.pk) + 1,
        "guidelines": campaign.guidelines,
        "guidelines_version": campaign.guidelines_version.number if campaign.guidelines_version else None,
        "prompt": comparison.prompt.text,
        "answers": [{"side": side, "text": candidate.text} for side, candidate in (("left", left), ("right", right))],
        "form": form,
    }
    return _render(request, context, status=400 if form.errors else 200)


def _render(request: AuthenticatedHttpRequest, context: dict[str, object], *, status: int = 200) -> HttpResponse:
    template = "rating/_qualification.html" if request.htmx else "rating/qualification.html"
    return render(request, template, context, status=status)


@require_POST
@role_required(ANNOTATOR)
def rate_qualification_submit(request: AuthenticatedHttpRequest, token: str) -> HttpResponse:
    """Answer one qualification item; at the end of an attempt its result is said at the top of the next page."""
    answer = qualification_answer_shown(token=token)
    if answer is None:
        raise Http404("No such qualification item.")
    if answer.attempt.annotator_id != request.user.pk:
        raise PermissionDenied
    form = QualificationAnswerForm(request.POST)
    if not form.is_valid():
        return _render_item(request, answer, form)
    try:
        attempt = qualification_answer_submit(token=token, annotator=request.user, side=form.cleaned_data["overall"])
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        if attempt.finished_at is not None:
            _say_result(request, attempt)
    return redirect("rate")


def _say_result(request: AuthenticatedHttpRequest, attempt: QualificationAttempt) -> None:
    name = attempt.campaign.name
    percent, needed = round(100 * attempt.score), round(100 * attempt.threshold)
    score = f"{attempt.correct} of {attempt.total} right ({percent}%; {needed}% needed)"
    if attempt.passed:
        messages.success(request, f"You passed the qualification of “{name}”: {score}. Its pairs follow.")
    elif attempt.number >= attempt.campaign.qualification_attempts:
        messages.error(
            request,
            f"You did not pass the qualification of “{name}”: {score}. That was your last attempt, so “{name}” "
            "serves you no pairs.",
        )
    else:
        messages.warning(request, f"You did not pass the qualification of “{name}” this time: {score}.")


@require_POST
@role_required(ANNOTATOR)
def rate_qualification_retry(request: AuthenticatedHttpRequest, campaign_id: int) -> HttpResponse:
    """Start the next attempt at the campaign's qualification (refused with the reason past the last one)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    try:
        qualification_attempt_start(campaign=campaign, annotator=request.user)
    except ServiceError as error:
        messages.error(request, str(error))
    return redirect("rate")
