"""Short views: permission-checked fetch → form → one service call → redirect or render."""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from evaluator import selectors, services
from evaluator.forms import (
    AnswerFlagForm,
    CampaignForm,
    GenerationForm,
    PromptImportForm,
    RatingForm,
    RetrainForm,
    SkipForm,
    StatisticsFilterForm,
    VariantForm,
)
from evaluator.models import AnswerFlag, Assignment, Campaign, Candidate, ModelVariant, any_unfinished
from evaluator.prompt_files import PromptFileError
from evaluator.reports import statistics_report
from evaluator.roles import ADMIN, ANNOTATOR, RESEARCHER, role_required, user_roles
from evaluator.selectors import VoteFilters


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
def rate(request: HttpRequest) -> HttpResponse:
    return _render_next(request)


def _render_next(request: HttpRequest) -> HttpResponse:
    """The annotator's next pair, or the done page; only the swappable part for an HTMX request."""
    assignment = services.assignment_next(annotator=request.user)
    if assignment is None:
        template = "rating/_done.html" if request.htmx else "rating/done.html"
        return render(request, template, {"progress": selectors.annotator_progress(annotator=request.user)})
    return _render_assignment(request, assignment, RatingForm(campaign=assignment.comparison.campaign))


def _render_assignment(
    request: HttpRequest, assignment: Assignment, form: RatingForm, *, skip_form: SkipForm | None = None
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
        "progress": selectors.annotator_campaign_progress(annotator=request.user, campaign=campaign),
    }
    template = "rating/_pair.html" if request.htmx else "rating/rate.html"
    failed = form.errors or (skip_form is not None and skip_form.errors)
    return render(request, template, context, status=400 if failed else 200)


def _passages(candidate: Candidate) -> list[dict[str, str]]:
    """A retrieval answer's passages as document name and text only (no chunk numbers, scores or ids)."""
    return [
        {"document": passage["document"], "text": passage["text"]}
        for passage in selectors.retrieved_passages(candidate.retrieved)
    ]


def _assignment_of(request: HttpRequest, token: str) -> Assignment:
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
def rate_submit(request: HttpRequest, token: str) -> HttpResponse:
    assignment = _assignment_of(request, token)
    form = RatingForm(request.POST, campaign=assignment.comparison.campaign)
    if not form.is_valid():
        return _render_assignment(request, assignment, form)
    try:
        services.judgement_submit(
            token=token, annotator=request.user, choices=form.choices(), rationale=form.cleaned_data["rationale"]
        )
    except services.ServiceError as error:
        messages.error(request, str(error))
    if request.htmx:
        return _render_next(request)
    return redirect("rate")


@require_POST
@role_required(ANNOTATOR)
def rate_skip(request: HttpRequest, token: str) -> HttpResponse:
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
        services.assignment_skip(token=token, annotator=request.user, reason=form.cleaned_data["reason"])
    except services.ServiceError as error:
        messages.error(request, str(error))
    if request.htmx:
        return _render_next(request)
    return redirect("rate")


@require_POST
@role_required(ANNOTATOR)
def rate_flag(request: HttpRequest, token: str) -> HttpResponse:
    _assignment_of(request, token)
    form = AnswerFlagForm(request.POST)
    error, reason = "", ""
    if form.is_valid():
        data = form.cleaned_data
        try:
            flag = services.answer_flag(
                token=token, annotator=request.user, side=data["side"], reason=data["reason"], note=data["note"]
            )
        except services.ServiceError as failure:
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


# Researchers -----------------------------------------------------------------------------------------------


@require_GET
@role_required(RESEARCHER, ADMIN)
def stats_index(request: HttpRequest) -> HttpResponse:
    return render(request, "stats/index.html", {"campaigns": selectors.campaign_list_with_counts()})


@require_POST
@role_required(RESEARCHER, ADMIN)
def api_token_rotate(request: HttpRequest) -> HttpResponse:
    token = services.api_token_rotate(user=request.user)
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
        "progress": selectors.campaign_progress(campaign=campaign),
        "snapshots": selectors.statistics_snapshots_recent(campaign=campaign),
    }
    return render(request, "stats/campaign.html", context, status=400 if form.errors else 200)


# Admins ----------------------------------------------------------------------------------------------------


@require_GET
@role_required(ADMIN)
def manage(request: HttpRequest) -> HttpResponse:
    context = {
        "campaigns": selectors.campaign_list_with_counts(),
        "variants": ModelVariant.objects.select_related("parent", "collection"),
        "campaign_form": CampaignForm(),
        "variant_form": VariantForm(),
        "jobs": selectors.training_jobs_recent(),
    }
    return render(request, "manage/index.html", context)


@require_POST
@role_required(ADMIN)
def campaign_create(request: HttpRequest) -> HttpResponse:
    form = CampaignForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("manage")
    campaign = services.campaign_create(**form.cleaned_data)
    messages.success(request, f"Campaign “{campaign.name}” created.")
    return redirect("campaign_detail", campaign_id=campaign.pk)


@require_POST
@role_required(ADMIN)
def variant_create(request: HttpRequest) -> HttpResponse:
    form = VariantForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("manage")
    data = form.cleaned_data
    try:
        variant = services.variant_create(
            name=data["name"],
            base_model=data["base_model"],
            adapter_path=data["adapter_path"],
            quantization=data["quantization"],
            generation_settings=form.generation_settings(),
            collection=data["collection"],
            retrieval_top_k=data["retrieval_top_k"] or 3,
            retrieval_template=data["retrieval_template"],
        )
    except services.ServiceError as error:
        messages.error(request, str(error))
        return redirect("manage")
    messages.success(request, f"Variant “{variant.name}” added.")
    return redirect("manage")


@require_GET
@role_required(ADMIN)
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    context = {
        "campaign": campaign,
        "progress": selectors.campaign_progress(campaign=campaign),
        "settings_form": CampaignForm(campaign=campaign),
        "import_form": PromptImportForm(),
        "generation_form": GenerationForm(),
        "retrain_form": RetrainForm(),
        "generation_jobs": selectors.generation_jobs_recent(campaign=campaign),
        "training_jobs": selectors.training_jobs_recent(campaign=campaign),
        "decisive_votes": selectors.decisive_vote_count(campaign=campaign),
    }
    return render(request, "manage/campaign.html", context)


@require_GET
@role_required(ADMIN)
def generation_jobs_live(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The campaign's generation jobs with their progress, polled by the campaign page; 286 stops the polling."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    jobs = selectors.generation_jobs_recent(campaign=campaign)
    running = any_unfinished(jobs)
    return render(request, "manage/_generation_jobs.html", {"generation_jobs": jobs}, status=200 if running else 286)


@require_POST
@role_required(ADMIN)
def campaign_update(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = CampaignForm(request.POST, campaign=campaign)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    try:
        services.campaign_update(campaign=campaign, **form.cleaned_data)
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Settings of “{campaign.name}” saved.")
    return redirect("campaign_detail", campaign_id=campaign.pk)


@require_POST
@role_required(ADMIN)
def prompts_import(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = PromptImportForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    upload = form.cleaned_data["file"]
    try:
        count = services.prompts_import(campaign=campaign, file_name=upload.name, data=upload.read())
    except (PromptFileError, services.ServiceError) as error:
        messages.error(request, f"{upload.name}: {error}. Nothing was imported.")
    else:
        messages.success(request, f"Imported {count} prompts from {upload.name}.")
    return redirect("campaign_detail", campaign_id=campaign.pk)


@require_POST
@role_required(ADMIN)
def generation_queue(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = GenerationForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    try:
        job = services.generation_job_queue(
            campaign=campaign,
            variants=list(form.cleaned_data["variants"]),
            samples_per_prompt=form.cleaned_data["samples_per_prompt"],
            created_by=request.user,
        )
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Generation job #{job.pk} queued for {job.total} answers.")
    return redirect("campaign_detail", campaign_id=campaign.pk)


def form_errors(form: forms.Form) -> str:
    return "; ".join(
        f"{form[name].label if name in form.fields else 'Form'}: {' '.join(errors)}"
        for name, errors in form.errors.items()
    )
