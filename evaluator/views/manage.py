"""Admin pages for campaigns and variants: create, edit, archive, import prompts, queue generation."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from evaluator.errors import ServiceError
from evaluator.forms import (
    CampaignForm,
    CampaignMemberForm,
    CampaignStateForm,
    GenerationForm,
    GenerationSettingsForm,
    PromptImportForm,
    VariantArchiveForm,
    VariantForm,
    VariantRenameForm,
    form_errors,
)
from evaluator.models import AWAITING_BROKER_NOTE, Campaign, CampaignState, ModelVariant, any_unfinished
from evaluator.parsing.prompts import PromptFileError
from evaluator.roles import ADMIN, ANNOTATOR, AuthenticatedHttpRequest, role_required
from evaluator.selectors.campaigns import (
    campaign_list_with_counts,
    campaign_members,
    campaign_progress,
    decisive_vote_count,
    generation_jobs_recent,
    training_jobs_recent,
)
from evaluator.selectors.guidelines import guideline_versions
from evaluator.services import campaigns as campaigns_services
from evaluator.services import imports
from evaluator.services import variants as variants_services
from evaluator.services.generation import generation_job_queue

# Admins ----------------------------------------------------------------------------------------------------


@require_GET
@role_required(ADMIN)
def manage(request: HttpRequest) -> HttpResponse:
    context = {
        "campaigns": campaign_list_with_counts(),
        "variants": ModelVariant.objects.filter(archived_at__isnull=True).select_related("parent", "collection"),
        "campaign_form": CampaignForm(),
        "variant_form": VariantForm(),
        "jobs": training_jobs_recent(),
    }
    return render(request, "manage/index.html", context)


@require_POST
@role_required(ADMIN)
def campaign_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = CampaignForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("manage")
    campaign = campaigns_services.campaign_create(**form.cleaned_data, author=request.user)
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
        variant = variants_services.variant_create(
            name=data["name"],
            base_model=data["base_model"],
            adapter_path=data["adapter_path"],
            quantization=data["quantization"],
            generation_settings=form.generation_settings(),
            collection=data["collection"],
            retrieval_top_k=data["retrieval_top_k"] or 3,
            retrieval_template=data["retrieval_template"],
        )
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect("manage")
    messages.success(request, f"Variant “{variant.name}” added.")
    return redirect("manage")


@require_GET
@role_required(ADMIN)
def variant_detail(request: HttpRequest, variant_id: int) -> HttpResponse:
    """One variant: rename it, edit its generation settings while it has no answers, archive or unarchive it."""
    variant = get_object_or_404(ModelVariant.objects.select_related("parent", "collection"), pk=variant_id)
    context = {
        "variant": variant,
        "rename_form": VariantRenameForm(variant=variant),
        "settings_form": GenerationSettingsForm(initial=variant.generation_settings),
        "settings_locked": variants_services.variant_settings_lock_reason(variant=variant),
    }
    return render(request, "manage/variant.html", context)


@require_POST
@role_required(ADMIN)
def variant_rename(request: HttpRequest, variant_id: int) -> HttpResponse:
    variant = get_object_or_404(ModelVariant, pk=variant_id)
    old_name = variant.name
    form = VariantRenameForm(request.POST, variant=variant)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("variant_detail", variant_id=variant.pk)
    try:
        variants_services.variant_rename(variant=variant, name=form.cleaned_data["name"])
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"“{old_name}” is now “{variant.name}”.")
    return redirect("variant_detail", variant_id=variant.pk)


@require_POST
@role_required(ADMIN)
def variant_settings_update(request: HttpRequest, variant_id: int) -> HttpResponse:
    variant = get_object_or_404(ModelVariant, pk=variant_id)
    form = GenerationSettingsForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("variant_detail", variant_id=variant.pk)
    try:
        variants_services.variant_generation_settings_update(
            variant=variant, generation_settings=form.generation_settings()
        )
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Generation settings of “{variant.name}” saved.")
    return redirect("variant_detail", variant_id=variant.pk)


@require_POST
@role_required(ADMIN)
def variant_archive(request: HttpRequest, variant_id: int) -> HttpResponse:
    """Archive or unarchive (the button pressed says which); back to the variants page."""
    variant = get_object_or_404(ModelVariant, pk=variant_id)
    form = VariantArchiveForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("variant_tree")
    archive = form.cleaned_data["action"] == "archive"
    try:
        if archive:
            variants_services.variant_archive(variant=variant)
        else:
            variants_services.variant_unarchive(variant=variant)
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        done = "archived: it is offered nowhere, and keeps its data" if archive else "back in the lists"
        messages.success(request, f"“{variant.name}” {done}.")
    return redirect("variant_tree")


@require_GET
@role_required(ADMIN)
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    context = {
        "campaign": campaign,
        "progress": campaign_progress(campaign=campaign),
        "settings_form": CampaignForm(campaign=campaign),
        "import_form": PromptImportForm(),
        "generation_form": GenerationForm(),
        "generation_jobs": generation_jobs_recent(campaign=campaign),
        "training_jobs": training_jobs_recent(campaign=campaign),
        "decisive_votes": decisive_vote_count(campaign=campaign),
        "state_moves": _state_moves(campaign),
        "members": campaign_members(campaign=campaign),
        "member_form": CampaignMemberForm(),
        "annotator_names": get_user_model()
        .objects.filter(groups__name=ANNOTATOR, is_active=True)
        .order_by("username")
        .values_list("username", flat=True),
        "group_names": Group.objects.order_by("name").values_list("name", flat=True),
        "guideline_versions": guideline_versions(campaign=campaign),
    }
    return render(request, "manage/campaign.html", context)


@require_POST
@role_required(ADMIN)
def campaign_state(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Activate, pause, resume or close the campaign."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = CampaignStateForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    try:
        campaigns_services.campaign_state_change(campaign=campaign, state=form.cleaned_data["state"])
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"“{campaign.name}” is now {campaign.get_state_display().lower()}.")
    return redirect("campaign_detail", campaign_id=campaign.pk)


@require_POST
@role_required(ADMIN)
def campaign_member_add(request: AuthenticatedHttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = CampaignMemberForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    user, group = form.cleaned_data["username"], form.cleaned_data["group"]
    try:
        campaigns_services.campaign_member_add(campaign=campaign, user=user, group=group, added_by=request.user)
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        who = f"“{user.username}”" if user else f"the group “{group.name}”"
        messages.success(request, f"{who} assigned to “{campaign.name}”.")
    return redirect("campaign_detail", campaign_id=campaign.pk)


@require_POST
@role_required(ADMIN)
def campaign_member_remove(request: HttpRequest, campaign_id: int, member_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    try:
        campaigns_services.campaign_member_remove(campaign=campaign, member_id=member_id)
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Unassigned from “{campaign.name}”.")
    return redirect("campaign_detail", campaign_id=campaign.pk)


def _state_moves(campaign: Campaign) -> list[tuple[str, str]]:
    """(target state, button label) for each move the campaign's state allows."""
    labels = {
        CampaignState.ACTIVE: "Resume" if campaign.state == CampaignState.PAUSED else "Activate",
        CampaignState.PAUSED: "Pause",
        CampaignState.CLOSED: "Close for good",
    }
    return [(state, labels[CampaignState(state)]) for state in campaigns_services.TRANSITIONS[campaign.state]]


@require_GET
@role_required(ADMIN)
def generation_jobs_live(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The campaign's generation jobs with their progress, polled by the campaign page; 286 stops the polling."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    jobs = generation_jobs_recent(campaign=campaign)
    running = any_unfinished(jobs)
    return render(request, "manage/_generation_jobs.html", {"generation_jobs": jobs}, status=200 if running else 286)


@require_GET
@role_required(ADMIN)
def campaign_counts_live(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The campaign page's header counts, polled by the page; 286 stops the polling once the campaign is closed."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    context = {"campaign": campaign, "progress": campaign_progress(campaign=campaign)}
    status = 286 if campaign.state == CampaignState.CLOSED else 200
    return render(request, "manage/_campaign_counts.html", context, status=status)


@require_POST
@role_required(ADMIN)
def campaign_update(request: AuthenticatedHttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = CampaignForm(request.POST, campaign=campaign)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    try:
        campaigns_services.campaign_update(campaign=campaign, **form.cleaned_data, author=request.user)
    except ServiceError as error:
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
        count = imports.prompts_import(campaign=campaign, file_name=upload.name, data=upload.read())
    except (PromptFileError, ServiceError) as error:
        messages.error(request, f"{upload.name}: {error}. Nothing was imported.")
    else:
        messages.success(request, f"Imported {count} prompts from {upload.name}.")
    return redirect("campaign_detail", campaign_id=campaign.pk)


@require_POST
@role_required(ADMIN)
def generation_queue(request: AuthenticatedHttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    form = GenerationForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("campaign_detail", campaign_id=campaign.pk)
    try:
        job = generation_job_queue(
            campaign=campaign,
            variants=list(form.cleaned_data["variants"]),
            samples_per_prompt=form.cleaned_data["samples_per_prompt"],
            created_by=request.user,
        )
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        if job.send_failed:
            messages.warning(request, f"Generation job #{job.pk} {AWAITING_BROKER_NOTE}")
        else:
            messages.success(request, f"Generation job #{job.pk} queued for {job.total} answers.")
    return redirect("campaign_detail", campaign_id=campaign.pk)
