"""Admin pages about people: annotator quality per campaign (with flagging) and account management."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from evaluator.errors import ServiceError
from evaluator.forms import AccountCreateForm, AccountRolesForm, AnnotatorFlagForm, form_errors
from evaluator.models import Campaign
from evaluator.roles import ADMIN, ROLES, AuthenticatedHttpRequest, role_required
from evaluator.selectors.campaigns import annotator_quality_rows, user_list_with_roles
from evaluator.selectors.qualification import qualification_item_ids, qualification_results
from evaluator.services import accounts as accounts_services
from evaluator.services.accounts import account_create, account_deactivate, account_reactivate, account_roles_set
from evaluator.stats.quality import QualityThresholds

# Annotator quality -----------------------------------------------------------------------------------------


@require_GET
@role_required(ADMIN)
def campaign_quality(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    rows = annotator_quality_rows(campaign=campaign)
    context = {
        "campaign": campaign,
        # Scripted accounts get a list of their own: there is nobody to warn or flag.
        "rows": [row for row in rows if not row["scripted"]],
        "scripted": [row for row in rows if row["scripted"]],
        "limits": QualityThresholds(),
        "qualification": qualification_results(campaign=campaign),
        "qualification_items": len(qualification_item_ids(campaign=campaign)),
    }
    return render(request, "manage/quality.html", context)


@require_POST
@role_required(ADMIN)
def annotator_flag(request: AuthenticatedHttpRequest, campaign_id: int, user_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    annotator = get_object_or_404(get_user_model(), pk=user_id)
    form = AnnotatorFlagForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_errors(form))
        return redirect("campaign_quality", campaign_id=campaign.pk)
    try:
        accounts_services.annotator_flag(annotator=annotator, reason=form.cleaned_data["reason"], by=request.user)
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{annotator.get_username()} is flagged.")
    return redirect("campaign_quality", campaign_id=campaign.pk)


@require_POST
@role_required(ADMIN)
def annotator_unflag(request: HttpRequest, campaign_id: int, user_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    annotator = get_object_or_404(get_user_model(), pk=user_id)
    if accounts_services.annotator_unflag(annotator=annotator):
        messages.success(request, f"{annotator.get_username()} is no longer flagged.")
    return redirect("campaign_quality", campaign_id=campaign.pk)


# Accounts --------------------------------------------------------------------------------------------------


@require_GET
@role_required(ADMIN)
def users(request: HttpRequest) -> HttpResponse:
    context = {"users": user_list_with_roles(), "create_form": AccountCreateForm(), "role_names": ROLES}
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
        user, password = account_create(
            username=data["username"], roles=[data["role"]], password=data["password"] or None
        )
    except ServiceError as error:
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
def user_roles_update(request: AuthenticatedHttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    form = AccountRolesForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{user.get_username()}: {form_errors(form)}")
        return redirect("users")
    try:
        account_roles_set(user=user, roles=form.cleaned_data["roles"], by=request.user)
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{user.get_username()}: roles set to {', '.join(form.cleaned_data['roles'])}.")
    return redirect("users")


@require_POST
@role_required(ADMIN)
def user_deactivate(request: AuthenticatedHttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    try:
        account_deactivate(user=user, by=request.user)
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{user.get_username()} is deactivated: they can no longer log in.")
    return redirect("users")


@require_POST
@role_required(ADMIN)
def user_reactivate(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    account_reactivate(user=user)
    messages.success(request, f"{user.get_username()} can log in again.")
    return redirect("users")
