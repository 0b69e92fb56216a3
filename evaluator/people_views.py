"""Admin pages about people: annotator quality per campaign (with flagging) and account management."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from evaluator import selectors, services
from evaluator.forms import AccountCreateForm, AccountRolesForm, AnnotatorFlagForm
from evaluator.models import Campaign
from evaluator.quality import QualityThresholds
from evaluator.roles import ADMIN, ROLES, role_required
from evaluator.views import form_errors

# Annotator quality -----------------------------------------------------------------------------------------


@require_GET
@role_required(ADMIN)
def campaign_quality(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    rows = selectors.annotator_quality_rows(campaign=campaign)
    context = {
        "campaign": campaign,
        # Scripted accounts get a list of their own: there is nobody to warn or flag.
        "rows": [row for row in rows if not row["scripted"]],
        "scripted": [row for row in rows if row["scripted"]],
        "limits": QualityThresholds(),
    }
    return render(request, "manage/quality.html", context)


@require_POST
@role_required(ADMIN)
def annotator_flag(request: HttpRequest, campaign_id: int, user_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    annotator = get_object_or_404(get_user_model(), pk=user_id)
    form = AnnotatorFlagForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("campaign_quality", campaign_id=campaign.pk)
    try:
        services.annotator_flag(annotator=annotator, reason=form.cleaned_data["reason"], by=request.user)
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{annotator.get_username()} is flagged.")
    return redirect("campaign_quality", campaign_id=campaign.pk)


@require_POST
@role_required(ADMIN)
def annotator_unflag(request: HttpRequest, campaign_id: int, user_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    annotator = get_object_or_404(get_user_model(), pk=user_id)
    if services.annotator_unflag(annotator=annotator):
        messages.success(request, f"{annotator.get_username()} is no longer flagged.")
    return redirect("campaign_quality", campaign_id=campaign.pk)


# Accounts --------------------------------------------------------------------------------------------------


@require_GET
@role_required(ADMIN)
def users(request: HttpRequest) -> HttpResponse:
    context = {"users": selectors.user_list_with_roles(), "create_form": AccountCreateForm(), "role_names": ROLES}
    return render(request, "manage/users.html", context)


@require_POST
@role_required(ADMIN)
def user_create(request: HttpRequest) -> HttpResponse:
    form = AccountCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("users")
    data = form.cleaned_data
    try:
        user, password = services.account_create(
            username=data["username"], roles=[data["role"]], password=data["password"] or None
        )
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request,
            f"Account “{user.get_username()}” ({data['role']}) created. Password: {password} — "
            "copy it now; it is not shown again.",
        )
    return redirect("users")


@require_POST
@role_required(ADMIN)
def user_roles_update(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    form = AccountRolesForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{user.get_username()}: {form_errors(form)}")
        return redirect("users")
    try:
        services.account_roles_set(user=user, roles=form.cleaned_data["roles"], by=request.user)
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{user.get_username()}: roles set to {', '.join(form.cleaned_data['roles'])}.")
    return redirect("users")


@require_POST
@role_required(ADMIN)
def user_deactivate(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    try:
        services.account_deactivate(user=user, by=request.user)
    except services.ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{user.get_username()} is deactivated: they can no longer log in.")
    return redirect("users")


@require_POST
@role_required(ADMIN)
def user_reactivate(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    services.account_reactivate(user=user)
    messages.success(request, f"{user.get_username()} can log in again.")
    return redirect("users")
