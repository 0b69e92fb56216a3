"""Short views: permission-checked fetch → form → one service call → redirect or render."""

import json

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from evaluator import selectors, services
from evaluator.forms import (
    CampaignForm,
    GenerationForm,
    PromptImportForm,
    RatingForm,
    RetrainForm,
    StatisticsFilterForm,
    VariantForm,
)
from evaluator.models import Assignment, Campaign, ModelVariant, TrainingJob
from evaluator.prompt_files import PromptFileError
from evaluator.reports import statistics_report
from evaluator.roles import ADMIN, ANNOTATOR, RESEARCHER, role_required, user_roles
from evaluator.selectors import VoteFilters


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


def _render_assignment(request: HttpRequest, assignment: Assignment, form: RatingForm) -> HttpResponse:
    comparison = assignment.comparison
    left, right = comparison.candidate_a, comparison.candidate_b
    if not assignment.left_is_a:
        left, right = right, left
    campaign_counts = selectors.campaign_progress(campaign=comparison.campaign)
    wanted = campaign_counts["wanted"]
    context = {
        "token": assignment.token,
        "prompt": comparison.prompt.text,
        "left": left.text,
        "right": right.text,
        "form": form,
        "progress": selectors.annotator_progress(annotator=request.user),
        "campaign_percent": min(100, round(100 * campaign_counts["judgements"] / wanted)) if wanted else 0,
    }
    template = "rating/_pair.html" if request.htmx else "rating/rate.html"
    return render(request, template, context, status=400 if form.errors else 200)


@require_POST
@role_required(ANNOTATOR)
def rate_submit(request: HttpRequest, token: str) -> HttpResponse:
    assignment = get_object_or_404(
        Assignment.objects.select_related(
            "comparison__campaign", "comparison__prompt", "comparison__candidate_a", "comparison__candidate_b"
        ),
        token=token,
    )
    if assignment.annotator_id != request.user.pk:
        raise PermissionDenied
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
    }
    return render(request, "stats/campaign.html", context, status=400 if form.errors else 200)


# Admins ----------------------------------------------------------------------------------------------------


@require_GET
@role_required(ADMIN)
def manage(request: HttpRequest) -> HttpResponse:
    context = {
        "campaigns": selectors.campaign_list_with_counts(),
        "variants": ModelVariant.objects.select_related("parent"),
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
        messages.error(request, _form_errors(form))
        return redirect("manage")
    campaign = services.campaign_create(**form.cleaned_data)
    messages.success(request, f"Campaign “{campaign.name}” created.")
    return redirect("campaign_detail", campaign_id=campaign.pk)


@require_POST
@role_required(ADMIN)
def variant_create(request: HttpRequest) -> HttpResponse:
    form = VariantForm(request.POST)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("manage")
    data = form.cleaned_data
    variant = services.variant_create(
        name=data["name"],
        base_model=data["base_model"],
        adapter_path=data["adapter_path"],
        quantization=data["quantization"],
        generation_settings=form.generation_settings(),
    )
    messages.success(request, f"Variant “{variant.name}” added.")
    return redirect("manage")


@require_GET
@role_required(ADMIN)
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    context = {
        "campaign": campaign,
        "progress": selectors.campaign_progress(campaign=campaign),
        "import_form": PromptImportForm(),
        "generation_form": GenerationForm(),
        "retrain_form": RetrainForm(),
        "generation_jobs": selectors.generation_jobs_recent(campaign=campaign),
        "training_jobs": selectors.training_jobs_recent(campaign=campaign),
        "decisive_votes": selectors.decisive_vote_count(campaign=campaign),
    }
    return render(request, "manage/campaign.html", context)


@require_POST
@role_required(ADMIN)
def prompts_import(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = PromptImportForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
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
        messages.error(request, _form_errors(form))
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


@require_POST
@role_required(ADMIN)
def training_queue(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = RetrainForm(request.POST)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    if selectors.decisive_vote_count(campaign=campaign) == 0:
        messages.error(request, "The campaign has no decisive overall preferences yet: rate some pairs first.")
        return redirect("campaign_detail", campaign_id=campaign.pk)
    try:
        job = services.training_job_queue(
            campaign=campaign,
            parent_variant=form.cleaned_data["parent_variant"],
            config=form.job_config(),
            created_by=request.user,
        )
    except services.ServiceError as error:
        messages.error(request, str(error))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    messages.success(request, f"DPO job #{job.pk} queued.")
    return redirect("training_job_detail", job_id=job.pk)


@require_GET
@role_required(ADMIN)
def training_job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(
        TrainingJob.objects.select_related("campaign", "parent_variant", "result_variant"), pk=job_id
    )
    losses = [
        {
            "step": log.get("step"),
            "loss": log["loss"],
            "margin": log.get("rewards/margins"),
            "accuracy": log.get("rewards/accuracies"),
        }
        for log in job.metrics
        if "loss" in log
    ]
    context = {"job": job, "losses": losses, "config_json": json.dumps(job.config, indent=2, sort_keys=True)}
    return render(request, "manage/training_job.html", context)


def _form_errors(form: forms.Form) -> str:
    return "; ".join(
        f"{form[name].label if name in form.fields else 'Form'}: {' '.join(errors)}"
        for name, errors in form.errors.items()
    )
